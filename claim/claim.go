// Package claim is the provider's word that a lease holds a warm pool
// machine: a token the provider signs with its claim key (ed25519) when it
// hands a fulfilled lease of a gceboot machine to the lease's client, and
// that the machine's gceboot checks before it serves anyone. The machine
// knows only the provider's public key (from its instance metadata), so a
// claim cannot be forged by the backend, the lessee or anyone else who
// reads the metadata.
//
// A token is two base64url (unpadded) parts joined by a dot: the JSON
// payload (version, type, lease, hostname, lessee, expiry) and the ed25519
// signature of the string "gcefleet-claim-v1." followed by the first part.
// Tokens and their fields are bounded in size.
//
// Present is the driver's side of the claim: it claims a machine for a
// run and hands it the run's certificate; package instance (ServePool)
// is the machine's side.
package claim

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A Claim is the provider's word that a lease holds a machine until
// Expires: signed by the provider, checked by the machine's gceboot.
type Claim struct {
	Lease    string    // the lease id
	Hostname string    // the machine
	Lessee   string    // the client who holds the lease
	Expires  time.Time // the lease's expiry
	// Instance is the machine's instance id, when its catalog entry
	// names one (dimension instance_id): a pool machine takes only a
	// claim of its own instance, so that a claim of an instance that was
	// deleted or preempted is no claim of the one made under its name.
	Instance string
}

// ErrRefused is what every refusal of Verify wraps: the token is
// malformed, too big, signed by another key, for another machine or
// expired.
var ErrRefused = errors.New("claim refused")

// Bounds of a token and of its fields.
const (
	// MaxToken is the longest token Verify reads.
	MaxToken = 2048
	// MaxField is the longest lease id, hostname or lessee.
	MaxField = 253
)

const (
	version = 1
	typ     = "gcefleet/claim"
	// sigContext is signed before the payload, so that a signature made by
	// the same key for anything else is never a claim's.
	sigContext = "gcefleet-claim-v1."
)

type payload struct {
	V        int       `json:"v"`
	Type     string    `json:"typ"`
	Lease    string    `json:"lease"`
	Hostname string    `json:"host"`
	Lessee   string    `json:"lessee"`
	Expires  time.Time `json:"exp"`
	Instance string    `json:"inst,omitempty"`
}

func (c Claim) check() error {
	for _, f := range []struct{ name, v string }{{"lease", c.Lease}, {"hostname", c.Hostname}, {"lessee", c.Lessee}} {
		if f.v == "" {
			return fmt.Errorf("the claim has no %s", f.name)
		}
		if len(f.v) > MaxField {
			return fmt.Errorf("the claim's %s is longer than %d bytes", f.name, MaxField)
		}
	}
	if len(c.Instance) > MaxField {
		return fmt.Errorf("the claim's instance is longer than %d bytes", MaxField)
	}
	if c.Expires.IsZero() {
		return errors.New("the claim has no expiry (a claim is only for a lease with an expiry)")
	}
	return nil
}

// Sign returns the token of c signed with key.
func Sign(key ed25519.PrivateKey, c Claim) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("claim: not an ed25519 private key")
	}
	if err := c.check(); err != nil {
		return "", fmt.Errorf("claim: %w", err)
	}
	b, err := json.Marshal(payload{V: version, Type: typ, Lease: c.Lease, Hostname: c.Hostname, Lessee: c.Lessee, Expires: c.Expires.UTC(), Instance: c.Instance})
	if err != nil {
		return "", fmt.Errorf("claim: %w", err)
	}
	p := base64.RawURLEncoding.EncodeToString(b)
	sig := ed25519.Sign(key, []byte(sigContext+p))
	tok := p + "." + base64.RawURLEncoding.EncodeToString(sig)
	if len(tok) > MaxToken {
		return "", fmt.Errorf("claim: the token of %d bytes exceeds %d", len(tok), MaxToken)
	}
	return tok, nil
}

// Verify checks that token is a claim signed by pub for the machine
// hostname that has not expired at now, and returns it. Every refusal
// wraps ErrRefused.
func Verify(pub ed25519.PublicKey, token, hostname string, now time.Time) (Claim, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Claim{}, fmt.Errorf("%w: no ed25519 public key of the provider to check it by", ErrRefused)
	}
	if len(token) > MaxToken {
		return Claim{}, fmt.Errorf("%w: the token of %d bytes exceeds %d", ErrRefused, len(token), MaxToken)
	}
	p, s, ok := strings.Cut(token, ".")
	if !ok || strings.Contains(s, ".") {
		return Claim{}, fmt.Errorf("%w: not a claim token (two base64url parts joined by a dot)", ErrRefused)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Claim{}, fmt.Errorf("%w: bad signature encoding", ErrRefused)
	}
	if !ed25519.Verify(pub, []byte(sigContext+p), sig) {
		return Claim{}, fmt.Errorf("%w: not signed by the provider's claim key", ErrRefused)
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return Claim{}, fmt.Errorf("%w: bad payload encoding", ErrRefused)
	}
	var pl payload
	if err := json.Unmarshal(b, &pl); err != nil {
		return Claim{}, fmt.Errorf("%w: bad payload: %v", ErrRefused, err)
	}
	if pl.V != version || pl.Type != typ {
		return Claim{}, fmt.Errorf("%w: a token of version %d and type %q, not a version %d %s", ErrRefused, pl.V, pl.Type, version, typ)
	}
	c := Claim{Lease: pl.Lease, Hostname: pl.Hostname, Lessee: pl.Lessee, Expires: pl.Expires, Instance: pl.Instance}
	if err := c.check(); err != nil {
		return Claim{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if c.Hostname != hostname {
		return Claim{}, fmt.Errorf("%w: the claim is for machine %q, not %q", ErrRefused, c.Hostname, hostname)
	}
	if !now.Before(c.Expires) {
		return Claim{}, fmt.Errorf("%w: the claim of lease %s expired at %s", ErrRefused, c.Lease, c.Expires.Format(time.RFC3339))
	}
	return c, nil
}

// ParsePublicKey decodes an ed25519 public key from base64 (standard or
// URL, padded or not), as the provider publishes it and instance metadata
// holds it.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
			return ed25519.PublicKey(b), nil
		}
	}
	return nil, errors.New("claim: not a base64 ed25519 public key of 32 bytes")
}

// EncodePublicKey returns pub as ParsePublicKey reads it.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.RawStdEncoding.EncodeToString(pub)
}
