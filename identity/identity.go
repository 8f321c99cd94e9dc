// Package identity proves that a peer is a given Compute Engine instance
// holding a given key, with the instance identity token of GCE's metadata
// server: a JWT signed by Google that names the project, zone, instance id
// and name, for an audience the instance chooses. The instance asks for a
// token whose audience binds the verifier's nonce and the hash of its own
// public key; the verifier checks Google's signature, the instance it
// expects, the nonce and the key, so that neither another instance's token,
// nor a token for another key or nonce, nor an expired one, is taken.
//
// Both sides live here: Token and Audience for the instance, Verifier for
// whoever signs the instance's certificate (a driver's run CA, a fleet CA).
package identity

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// GoogleCertsURL is where Google publishes the keys that sign identity
// tokens, as a JWK set.
const GoogleCertsURL = "https://www.googleapis.com/oauth2/v3/certs"

// CertsPath is the path of the JWK set on Google's host, and on the
// Compute Engine emulator's.
const CertsPath = "/oauth2/v3/certs"

// CertsURL returns where the signing keys of identity tokens are for a
// Compute endpoint: Google's for real Compute Engine (an empty endpoint),
// the endpoint's own CertsPath otherwise (the emulator serves its keys
// there).
func CertsURL(computeEndpoint string) string {
	if computeEndpoint == "" {
		return GoogleCertsURL
	}
	return strings.TrimSuffix(computeEndpoint, "/") + CertsPath
}

// audiencePrefix starts every audience this package makes, so that a
// token for another purpose is never one of ours.
const audiencePrefix = "urn:gcefleet:identity:"

// Audience returns the audience an instance asks its identity token for:
// it binds the verifier's nonce and the SHA-256 of the instance's public
// key (PKIX DER), so that the token proves nothing for another key.
func Audience(nonce string, pub crypto.PublicKey) (string, error) {
	if nonce == "" || strings.Contains(nonce, ":") {
		return "", errors.New("identity: the nonce must be non-empty and hold no colon")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("identity: public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return audiencePrefix + nonce + ":" + base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// Token returns this instance's identity token for aud, in the full
// format (with the google.compute_engine claims), from the metadata
// server (which GCE_METADATA_HOST may name).
func Token(ctx context.Context, aud string) (string, error) {
	tok, err := metadata.GetWithContext(ctx, "instance/service-accounts/default/identity?format=full&audience="+url.QueryEscape(aud))
	if err != nil {
		return "", fmt.Errorf("identity token from the metadata server (does the instance have a service account?): %w", err)
	}
	return strings.TrimSpace(tok), nil
}

// Instance is what a token must say of the instance it proves.
type Instance struct {
	ProjectID, Zone, ID, Name string
}

// ComputeEngine are the google.compute_engine claims of a full token.
type ComputeEngine struct {
	InstanceID    string `json:"instance_id"`
	InstanceName  string `json:"instance_name"`
	ProjectID     string `json:"project_id"`
	ProjectNumber int64  `json:"project_number"`
	Zone          string `json:"zone"`
}

type googleClaims struct {
	Google struct {
		ComputeEngine ComputeEngine `json:"compute_engine"`
	} `json:"google"`
}

// ErrRefused is what every refused proof wraps: the token is forged,
// expired, for another audience (nonce or key) or of another instance.
var ErrRefused = errors.New("identity proof refused")

// A Verifier checks identity tokens against the signing keys published at
// a URL, which it fetches when it meets a key id it does not know (at most
// once a minute) and at least every hour.
type Verifier struct {
	certsURL string
	hc       *http.Client
	// Now is the clock tokens are checked by; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	fetched time.Time
}

// NewVerifier returns a verifier of tokens signed by the keys at certsURL
// (see CertsURL), fetched with hc (nil means http.DefaultClient).
func NewVerifier(certsURL string, hc *http.Client) *Verifier {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Verifier{certsURL: certsURL, hc: hc}
}

// Leeway is the clock skew tolerated on a token's times.
const Leeway = time.Minute

const (
	refetchEvery  = time.Hour
	refetchAtMost = time.Minute
	maxCertsBytes = 1 << 20
)

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// key returns the signing key kid, fetching the keys when it is unknown.
func (v *Verifier) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	if v.keys != nil {
		if ks := v.keys.Key(kid); len(ks) > 0 && now.Sub(v.fetched) < refetchEvery {
			return &ks[0], nil
		}
		if now.Sub(v.fetched) < refetchAtMost {
			return nil, fmt.Errorf("%w: signed by key %q, which %s does not publish", ErrRefused, kid, v.certsURL)
		}
	}
	keys, err := v.fetch(ctx)
	if err != nil {
		return nil, err
	}
	v.keys, v.fetched = keys, now
	if ks := keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	return nil, fmt.Errorf("%w: signed by key %q, which %s does not publish", ErrRefused, kid, v.certsURL)
}

func (v *Verifier) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.certsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("identity: signing keys: %w", err)
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("identity: fetching the signing keys from %s: %w", v.certsURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCertsBytes))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: fetching the signing keys from %s: %w", v.certsURL, err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) == 0 {
		return nil, fmt.Errorf("identity: %s holds no JWK set of signing keys", v.certsURL)
	}
	return &set, nil
}

// Verify checks that token is a valid identity token of instance want,
// for the audience of nonce and pub: signed by a published key, issued by
// Google, unexpired, and naming that project, zone, instance id and name.
// A refusal wraps ErrRefused; a failure to fetch the keys does not.
func (v *Verifier) Verify(ctx context.Context, token string, want Instance, nonce string, pub crypto.PublicKey) (*ComputeEngine, error) {
	aud, err := Audience(nonce, pub)
	if err != nil {
		return nil, err
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, fmt.Errorf("%w: not an RS256 JWT: %v", ErrRefused, err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		return nil, fmt.Errorf("%w: the token names no signing key", ErrRefused)
	}
	key, err := v.key(ctx, tok.Headers[0].KeyID)
	if err != nil {
		return nil, err
	}
	var std jwt.Claims
	var g googleClaims
	if err := tok.Claims(key.Key, &std, &g); err != nil {
		return nil, fmt.Errorf("%w: bad signature: %v", ErrRefused, err)
	}
	if std.Issuer != "https://accounts.google.com" && std.Issuer != "accounts.google.com" {
		return nil, fmt.Errorf("%w: issued by %q, not Google", ErrRefused, std.Issuer)
	}
	if std.Expiry == nil {
		return nil, fmt.Errorf("%w: the token has no expiry", ErrRefused)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{aud}, Time: v.now()}, Leeway); err != nil {
		if errors.Is(err, jwt.ErrInvalidAudience) {
			return nil, fmt.Errorf("%w: the token is for another audience (another nonce or key) than %q", ErrRefused, aud)
		}
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	ce := g.Google.ComputeEngine
	if ce.ProjectID != want.ProjectID || ce.Zone != want.Zone || ce.InstanceID != want.ID || ce.InstanceName != want.Name {
		return nil, fmt.Errorf("%w: the token is of instance %s/%s/%s (id %q), not %s/%s/%s (id %q)", ErrRefused,
			ce.ProjectID, ce.Zone, ce.InstanceName, ce.InstanceID, want.ProjectID, want.Zone, want.Name, want.ID)
	}
	return &ce, nil
}
