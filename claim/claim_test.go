package claim

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignVerify(t *testing.T) {
	key, other := newKey(t), newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	good := Claim{Lease: "l-1", Hostname: "m-1", Lessee: "alice", Expires: now.Add(2 * time.Minute), Instance: "42"}
	tok, err := Sign(key, good)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(pub, tok, "m-1", now)
	if err != nil {
		t.Fatalf("a good claim: %v", err)
	}
	if c != (Claim{Lease: "l-1", Hostname: "m-1", Lessee: "alice", Expires: good.Expires, Instance: "42"}) || !c.Expires.Equal(good.Expires) {
		t.Fatalf("Verify returned %+v, want %+v", c, good)
	}
	otherTok, err := Sign(other, good)
	if err != nil {
		t.Fatal(err)
	}
	p, s, _ := strings.Cut(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(p)
	tampered := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), `"alice"`, `"mallory"`, 1))) + "." + s
	sig, _ := base64.RawURLEncoding.DecodeString(s)
	sig[0] ^= 1
	flipped := p + "." + base64.RawURLEncoding.EncodeToString(sig)
	for _, tc := range []struct {
		name, token, host string
		now               time.Time
		pub               ed25519.PublicKey
	}{
		{"wrong key", otherTok, "m-1", now, pub},
		{"other hostname", tok, "m-2", now, pub},
		{"expired", tok, "m-1", good.Expires, pub},
		{"long expired", tok, "m-1", now.Add(time.Hour), pub},
		{"tampered payload", tampered, "m-1", now, pub},
		{"tampered signature", flipped, "m-1", now, pub},
		{"oversized", tok + strings.Repeat("A", MaxToken), "m-1", now, pub},
		{"empty", "", "m-1", now, pub},
		{"no signature", p, "m-1", now, pub},
		{"three parts", tok + ".x", "m-1", now, pub},
		{"no public key", tok, "m-1", now, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Verify(tc.pub, tc.token, tc.host, tc.now); !errors.Is(err, ErrRefused) {
				t.Fatalf("Verify = %v, want a refusal", err)
			}
		})
	}
}

func TestSignRefusesBadClaims(t *testing.T) {
	key := newKey(t)
	exp := time.Now().Add(time.Minute)
	for name, c := range map[string]Claim{
		"no lease":     {Hostname: "m", Lessee: "a", Expires: exp},
		"no hostname":  {Lease: "l", Lessee: "a", Expires: exp},
		"no lessee":    {Lease: "l", Hostname: "m", Expires: exp},
		"no expiry":    {Lease: "l", Hostname: "m", Lessee: "a"},
		"long lessee":  {Lease: "l", Hostname: "m", Lessee: strings.Repeat("a", MaxField+1), Expires: exp},
		"long lease":   {Lease: strings.Repeat("l", MaxField+1), Hostname: "m", Lessee: "a", Expires: exp},
		"long machine": {Lease: "l", Hostname: strings.Repeat("m", MaxField+1), Lessee: "a", Expires: exp},
	} {
		if _, err := Sign(key, c); err == nil {
			t.Errorf("%s: Sign took %+v", name, c)
		}
	}
	if _, err := Sign(nil, Claim{Lease: "l", Hostname: "m", Lessee: "a", Expires: exp}); err == nil {
		t.Error("Sign took no key")
	}
	// The longest fields still make a token Verify reads.
	long := Claim{Lease: strings.Repeat("l", MaxField), Hostname: strings.Repeat("m", MaxField), Lessee: strings.Repeat("a", MaxField), Expires: exp}
	tok, err := Sign(key, long)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(key.Public().(ed25519.PublicKey), tok, long.Hostname, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestPublicKeyEncoding(t *testing.T) {
	pub := newKey(t).Public().(ed25519.PublicKey)
	for _, s := range []string{EncodePublicKey(pub), base64.StdEncoding.EncodeToString(pub), base64.URLEncoding.EncodeToString(pub) + "\n"} {
		got, err := ParsePublicKey(s)
		if err != nil || !got.Equal(pub) {
			t.Fatalf("ParsePublicKey(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "abc", base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := ParsePublicKey(s); err == nil {
			t.Errorf("ParsePublicKey(%q) took it", s)
		}
	}
}

// FuzzVerify checks that no input makes Verify panic or take a token
// that Sign did not make for that host.
func FuzzVerify(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tok, _ := Sign(key, Claim{Lease: "l", Hostname: "m", Lessee: "a", Expires: exp})
	f.Add(tok, "m")
	f.Add(tok+"x", "m")
	f.Add("e30.AAAA", "m")
	f.Add("..", "")
	now := exp.Add(-time.Hour)
	f.Fuzz(func(t *testing.T, token, host string) {
		c, err := Verify(pub, token, host, now)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("a refusal that does not wrap ErrRefused: %v", err)
			}
			return
		}
		if c.Hostname != host || !now.Before(c.Expires) {
			t.Fatalf("took %+v for host %q", c, host)
		}
		again, err := Sign(key, c)
		if err != nil {
			t.Fatalf("Verify took a claim Sign refuses: %v", err)
		}
		if _, err := Verify(pub, again, host, now); err != nil {
			t.Fatal(err)
		}
	})
}
