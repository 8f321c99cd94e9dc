package identity_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/identity"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

const (
	project = "id-project"
	zone    = "us-central1-a"
)

// vm is an instance of the emulator's, with the address of its metadata
// server, from which tokens are asked as a process on it would.
type vm struct {
	want identity.Instance
	meta string
}

// token asks vm's metadata server for an identity token with query q.
func (v vm) token(t *testing.T, q url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+v.meta+"/computeMetadata/v1/instance/service-accounts/default/identity?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// fullToken returns vm's full identity token for nonce and pub.
func (v vm) fullToken(t *testing.T, nonce string, pub crypto.PublicKey) string {
	t.Helper()
	aud, err := identity.Audience(nonce, pub)
	if err != nil {
		t.Fatal(err)
	}
	code, tok := v.token(t, url.Values{"audience": {aud}, "format": {"full"}})
	if code != http.StatusOK {
		t.Fatalf("identity token: %d %s", code, tok)
	}
	return tok
}

// world starts an emulator with two instances that run a process (so they
// have metadata servers) and returns them with the emulator's endpoint.
func world(t *testing.T) (string, []vm) {
	t.Helper()
	_, endpoint := testutil.Emulator(t, emulator.Options{Images: map[string]string{"gcr.io/id/sleep": "/bin/sleep"}, StopGrace: time.Second})
	ctx := context.Background()
	c, err := computeapi.NewInstancesRESTClient(ctx, option.WithEndpoint(endpoint), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	decl := "spec:\n  containers:\n  - name: s\n    image: gcr.io/id/sleep\n    args: [\"600\"]\n  restartPolicy: Never\n"
	var vms []vm
	hostRE := regexp.MustCompile(`GCE_METADATA_HOST=(\S+)`)
	for _, name := range []string{"vm-a", "vm-b"} {
		op, err := c.Insert(ctx, &computepb.InsertInstanceRequest{Project: project, Zone: zone, InstanceResource: &computepb.Instance{
			Name: new(name), MachineType: new("zones/" + zone + "/machineTypes/e2-small"),
			Disks:             []*computepb.AttachedDisk{{Boot: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{SourceImage: new("projects/cos-cloud/global/images/family/cos-stable")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}},
			Metadata:          &computepb.Metadata{Items: []*computepb.Items{{Key: new("gce-container-declaration"), Value: new(decl)}}},
			ServiceAccounts:   []*computepb.ServiceAccount{{Email: new("default"), Scopes: []string{"https://www.googleapis.com/auth/cloud-platform"}}},
		}})
		if err == nil {
			err = op.Wait(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta string
		testutil.WaitFor(t, name+"'s metadata server", func() bool {
			out, err := c.GetSerialPortOutput(ctx, &computepb.GetSerialPortOutputInstanceRequest{Project: project, Zone: zone, Instance: name})
			if err != nil {
				t.Fatal(err)
			}
			if m := hostRE.FindStringSubmatch(out.GetContents()); m != nil {
				meta = m[1]
				return true
			}
			return false
		})
		in, err := c.Get(ctx, &computepb.GetInstanceRequest{Project: project, Zone: zone, Instance: name})
		if err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm{want: identity.Instance{ProjectID: project, Zone: zone, ID: itoa(in.GetId()), Name: name}, meta: meta})
	}
	return endpoint, vms
}

func itoa(n uint64) string { return new(big.Int).SetUint64(n).String() }

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestVerify checks tokens from the emulator's metadata servers: the
// instance's own, for its nonce and key, passes; a token for another
// nonce or key, of another instance, expired, in the standard format,
// forged or tampered with is refused.
func TestVerify(t *testing.T) {
	endpoint, vms := world(t)
	ctx := context.Background()
	v := identity.NewVerifier(identity.CertsURL(endpoint), nil)
	key, other := newKey(t), newKey(t)
	good := vms[0].fullToken(t, "n1", key.Public())

	ce, err := v.Verify(ctx, good, vms[0].want, "n1", key.Public())
	if err != nil {
		t.Fatalf("the instance's own token: %v", err)
	}
	if ce.InstanceID != vms[0].want.ID || ce.InstanceName != "vm-a" || ce.ProjectID != project || ce.Zone != zone || ce.ProjectNumber == 0 {
		t.Errorf("claims %+v", ce)
	}

	std, code := "", 0
	code, std = vms[0].token(t, url.Values{"audience": {mustAud(t, "n1", key.Public())}})
	if code != http.StatusOK {
		t.Fatalf("standard token: %d %s", code, std)
	}
	parts := strings.Split(good, ".")
	otherParts := strings.Split(vms[1].fullToken(t, "n1", key.Public()), ".")
	tampered := parts[0] + "." + otherParts[1] + "." + parts[2]
	forged := forge(t, good)

	for _, tc := range []struct {
		what  string
		token string
		want  identity.Instance
		nonce string
		pub   crypto.PublicKey
		now   time.Time
	}{
		{"another nonce", good, vms[0].want, "n2", key.Public(), time.Time{}},
		{"another key", good, vms[0].want, "n1", other.Public(), time.Time{}},
		{"another instance's token", vms[1].fullToken(t, "n1", key.Public()), vms[0].want, "n1", key.Public(), time.Time{}},
		{"an expired token", good, vms[0].want, "n1", key.Public(), time.Now().Add(time.Hour + 2*identity.Leeway)},
		{"a token from the future", good, vms[0].want, "n1", key.Public(), time.Now().Add(-time.Hour)},
		{"a standard-format token", std, vms[0].want, "n1", key.Public(), time.Time{}},
		{"another instance's claims under this token's signature", tampered, vms[0].want, "n1", key.Public(), time.Time{}},
		{"a token signed by another key under Google's key id", forged, vms[0].want, "n1", key.Public(), time.Time{}},
		{"not a token", "not.a.token", vms[0].want, "n1", key.Public(), time.Time{}},
	} {
		v.Now = nil
		if !tc.now.IsZero() {
			v.Now = func() time.Time { return tc.now }
		}
		if _, err := v.Verify(ctx, tc.token, tc.want, tc.nonce, tc.pub); !errors.Is(err, identity.ErrRefused) {
			t.Errorf("%s: %v; want it refused", tc.what, err)
		} else {
			t.Logf("%s: %v", tc.what, err)
		}
	}
	v.Now = nil

	// A verifier of Google's keys refuses the emulator's tokens.
	g := identity.NewVerifier(endpoint+"/no-keys-here", nil)
	if _, err := g.Verify(ctx, good, vms[0].want, "n1", key.Public()); err == nil {
		t.Error("a verifier without the emulator's keys took its token")
	}
}

// TestVerifyProof checks proofs as the driver does: the certificate
// request's key must be the one the token's audience binds.
func TestVerifyProof(t *testing.T) {
	endpoint, vms := world(t)
	ctx := context.Background()
	v := identity.NewVerifier(identity.CertsURL(endpoint), nil)
	key, other := newKey(t), newKey(t)
	tok := vms[0].fullToken(t, "n1", key.Public())
	csr := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "vm-a"}}, k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	got, err := v.VerifyProof(ctx, identity.Proof{CSR: csr(key), Token: tok}, vms[0].want, "n1")
	if err != nil {
		t.Fatalf("a good proof: %v", err)
	}
	if !key.PublicKey.Equal(got.PublicKey) {
		t.Error("the request returned is for another key")
	}
	if _, err := v.VerifyProof(ctx, identity.Proof{CSR: csr(other), Token: tok}, vms[0].want, "n1"); !errors.Is(err, identity.ErrRefused) {
		t.Errorf("a request for another key than the token's: %v", err)
	}
	bad := csr(key)
	bad[len(bad)-3] ^= 1
	if _, err := v.VerifyProof(ctx, identity.Proof{CSR: bad, Token: tok}, vms[0].want, "n1"); !errors.Is(err, identity.ErrRefused) {
		t.Errorf("a request with a broken signature: %v", err)
	}
}

// TestMetadataServerErrors: the emulator's metadata server answers as
// GCE's does when the audience is missing or the format unknown.
func TestMetadataServerErrors(t *testing.T) {
	_, vms := world(t)
	if code, body := vms[0].token(t, url.Values{}); code != http.StatusBadRequest || !strings.Contains(body, "non-empty audience parameter required") {
		t.Errorf("no audience: %d %q", code, body)
	}
	if code, body := vms[0].token(t, url.Values{"audience": {"x"}, "format": {"huge"}}); code != http.StatusBadRequest {
		t.Errorf("unknown format: %d %q", code, body)
	}
}

func mustAud(t *testing.T, nonce string, pub crypto.PublicKey) string {
	t.Helper()
	a, err := identity.Audience(nonce, pub)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// forge re-signs tok's claims with a key of its own under tok's key id.
func forge(t *testing.T, tok string) string {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: parsed.Headers[0].KeyID}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
