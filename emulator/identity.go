package emulator

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Instance identity tokens, as GCE's metadata server makes them at
// instance/service-accounts/ACCOUNT/identity?audience=AUD[&format=full]:
// RS256 JWTs issued by https://accounts.google.com, valid for an hour,
// signed by a key of the emulator's own (made on first use). The emulator
// publishes its keys as Google does its own, as a JWK set at
// /oauth2/v3/certs and as PEM certificates by key id at /oauth2/v1/certs,
// on the API's own address, so that a verifier configured for the
// emulator's endpoint finds them there.

// IdentityIssuer is the iss claim of identity tokens, Google's.
const IdentityIssuer = "https://accounts.google.com"

// Paths of the emulator's token signing keys, as on www.googleapis.com.
const (
	IdentityJWKSPath  = "/oauth2/v3/certs"
	IdentityCertsPath = "/oauth2/v1/certs"
)

// identityTokenLifetime is how long a token is valid, as on GCE.
const identityTokenLifetime = time.Hour

// identitySigner is the key the emulator signs identity tokens with.
type identitySigner struct {
	warmOnce sync.Once
	mu       sync.Mutex
	key      *rsa.PrivateKey
	kid      string
	cert     []byte // PEM, self-signed, as Google publishes at oauth2/v1/certs
	signer   jose.Signer
}

// warm makes the key in the background, once: an instance with a
// metadata server may soon ask for a token, and should not wait for the
// key to be made.
func (s *identitySigner) warm() {
	s.warmOnce.Do(func() { go s.get() })
}

// get returns the signer, made on first use: an RSA key takes a while to
// make, and most emulators never sign a token.
func (s *identitySigner) get() (*identitySigner, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		return s, nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	kid := hex.EncodeToString(sum[:20])
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(sum[:8]),
		Subject:      pkix.Name{CommonName: "securetoken.system.gserviceaccount.com"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(14 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	s.key, s.kid, s.signer = key, kid, signer
	s.cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return s, nil
}

// computeEngineClaims are the google.compute_engine claims of a full token.
type computeEngineClaims struct {
	InstanceCreationTimestamp int64  `json:"instance_creation_timestamp"`
	InstanceID                string `json:"instance_id"`
	InstanceName              string `json:"instance_name"`
	ProjectID                 string `json:"project_id"`
	ProjectNumber             int64  `json:"project_number"`
	Zone                      string `json:"zone"`
}

// identityClaims are a token's claims beyond the registered ones.
type identityClaims struct {
	AZP           string `json:"azp"`
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
	Google        *struct {
		ComputeEngine computeEngineClaims `json:"compute_engine"`
	} `json:"google,omitempty"`
}

// serveIdentity answers a metadata server's identity request for in's
// service account (account is "default" or its email).
func (e *Emulator) serveIdentity(w http.ResponseWriter, r *http.Request, in *instance, account string) {
	q := r.URL.Query()
	aud := q.Get("audience")
	if aud == "" {
		http.Error(w, "non-empty audience parameter required", http.StatusBadRequest)
		return
	}
	format := q.Get("format")
	if format != "" && format != "standard" && format != "full" {
		http.Error(w, "format must be one of: standard, full", http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	var email string
	for _, sa := range in.api.ServiceAccounts {
		if account == "default" || account == sa.Email {
			email = sa.Email
			break
		}
	}
	ce := computeEngineClaims{InstanceID: strconv.FormatUint(in.api.Id, 10), InstanceName: in.api.Name, ProjectID: in.project, Zone: in.zone}
	if p := e.projects[in.project]; p != nil {
		ce.ProjectNumber = p.number
	}
	if t, err := time.Parse(time.RFC3339, in.api.CreationTimestamp); err == nil {
		ce.InstanceCreationTimestamp = t.Unix()
	}
	e.mu.Unlock()
	if email == "" {
		http.Error(w, "The instance has no service account "+account+".", http.StatusNotFound)
		return
	}
	s, err := e.identity.get()
	if err != nil {
		http.Error(w, "Could not fetch identity token.", http.StatusInternalServerError)
		return
	}
	now := e.opts.Now()
	// The subject is the account's unique id, a number; the emulator's is
	// derived from its email.
	sum := sha256.Sum256([]byte(email))
	sub := new(big.Int).SetBytes(sum[:8]).String()
	std := jwt.Claims{Issuer: IdentityIssuer, Subject: sub, Audience: jwt.Audience{aud}, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(identityTokenLifetime))}
	extra := identityClaims{AZP: sub, Email: email, EmailVerified: true}
	if format == "full" {
		extra.Google = &struct {
			ComputeEngine computeEngineClaims `json:"compute_engine"`
		}{ce}
	}
	tok, err := jwt.Signed(s.signer).Claims(std).Claims(extra).Serialize()
	if err != nil {
		http.Error(w, "Could not fetch identity token.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, tok)
}

// identityRoutes serves the keys identity tokens are signed with.
func (e *Emulator) identityRoutes() {
	e.mux.HandleFunc("GET "+IdentityJWKSPath, func(w http.ResponseWriter, r *http.Request) {
		s, err := e.identity.get()
		if err != nil {
			errBackend(http.StatusInternalServerError).write(w)
			return
		}
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &s.key.PublicKey, KeyID: s.kid, Algorithm: string(jose.RS256), Use: "sig"}}}
		b, err := json.Marshal(set)
		if err != nil {
			errBackend(http.StatusInternalServerError).write(w)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.Write(b)
	})
	e.mux.HandleFunc("GET "+IdentityCertsPath, func(w http.ResponseWriter, r *http.Request) {
		s, err := e.identity.get()
		if err != nil {
			errBackend(http.StatusInternalServerError).write(w)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		json.NewEncoder(w).Encode(map[string]string{s.kid: string(s.cert)})
	})
}
