package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gcefleet/gcefleet/identity"
)

// FuzzVerifyProof: whatever certificate request and token an instance
// sends, the driver's check refuses it (wrapping ErrRefused) unless it is
// a real proof; it never panics. The seeds include a token signed by the
// published key for another instance, so the fuzzer starts from a
// well-formed JWT but cannot make a valid signature for the instance
// the check wants.
func FuzzVerifyProof(f *testing.F) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaKey.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jwks)
	}))
	f.Cleanup(srv.Close)
	v := identity.NewVerifier(srv.URL, srv.Client())

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "vm-a"}}, key)
	if err != nil {
		f.Fatal(err)
	}
	want := identity.Instance{ProjectID: "p-fuzz", Zone: "us-central1-a", ID: "1", Name: "vm-a"}
	aud, err := identity.Audience("n1", key.Public())
	if err != nil {
		f.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: rsaKey}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		f.Fatal(err)
	}
	claims := map[string]any{
		"iss": "https://accounts.google.com", "aud": aud, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
		"google": map[string]any{"compute_engine": map[string]any{"project_id": "p-fuzz", "zone": "us-central1-a", "instance_id": "2", "instance_name": "vm-b"}},
	}
	other, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr, other)
	f.Add(csr, "")
	f.Add([]byte{}, "a.b.c")
	f.Add(csr[:len(csr)/2], other[:len(other)/2])
	f.Add([]byte("\x30\x82\xff\xff"), "eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, csr []byte, token string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := v.VerifyProof(ctx, identity.Proof{CSR: csr, Token: token}, want, "n1")
		if err == nil {
			t.Fatalf("a fuzzed proof was accepted: %v", got.Subject)
		}
		if !errors.Is(err, identity.ErrRefused) {
			t.Fatalf("a bad proof's error does not wrap ErrRefused: %v", err)
		}
	})
}
