package instance

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

// claimedServer is a pool machine's server as it serves a run: claimed
// for lease l1 until expires, its run certificate delivered, guarded by
// an end that records why the run ended.
type claimedServer struct {
	p     *poolServer
	key   ed25519.PrivateKey
	ended chan string
}

func newClaimedServer(t *testing.T, expires time.Time, grace time.Duration) *claimedServer {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := claim.Claim{Lease: "l1", Hostname: "warm-1", Lessee: "alice", Expires: expires, Instance: "101"}
	p := &poolServer{name: "warm-1", id: "101", pub: pub, log: slog.New(slog.DiscardHandler), grace: grace, delivered: true,
		exit: func(code int) { t.Errorf("a claimed machine serving its run exited (%d)", code) }}
	cs := &claimedServer{p: p, key: key, ended: make(chan string, 1)}
	p.mu.Lock()
	p.claimed = &c
	p.arm(c)
	p.mu.Unlock()
	var once sync.Once
	(&Control{p: p}).Guard(func(why string) { once.Do(func() { cs.ended <- why }) })
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.lapse.Stop()
	})
	return cs
}

func (cs *claimedServer) sign(t *testing.T, key ed25519.PrivateKey, c claim.Claim) string {
	t.Helper()
	tok, err := claim.Sign(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// renew posts token to the control server's renewal path.
func (cs *claimedServer) renew(t *testing.T, token string) (int, string) {
	t.Helper()
	body, err := json.Marshal(claim.RenewRequest{Claim: token})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	cs.p.controlHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, claim.RenewPath, bytes.NewReader(body)))
	return rec.Code, rec.Body.String()
}

// TestLeaseExpiryEndsRun: a claimed machine ends its run when the claim
// it holds expires (after the grace), with no word from anyone; a renewal
// with the lease's later claim moves that end.
func TestLeaseExpiryEndsRun(t *testing.T) {
	const grace = 100 * time.Millisecond
	start := time.Now()
	cs := newClaimedServer(t, start.Add(300*time.Millisecond), grace)
	select {
	case why := <-cs.ended:
		if time.Since(start) < 300*time.Millisecond+grace {
			t.Errorf("the run ended %v after the claim, before its expiry and grace", time.Since(start))
		}
		t.Logf("ended: %s", why)
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not end within 10 s of its claim's expiry")
	}
	if code, body := cs.renew(t, cs.sign(t, cs.key, claim.Claim{Lease: "l1", Hostname: "warm-1", Lessee: "alice", Expires: time.Now().Add(time.Hour), Instance: "101"})); code != http.StatusGone {
		t.Errorf("a renewal after the run ended: %d %s, want 410", code, body)
	}

	// Renewed before the expiry: the run outlives the first claim.
	start = time.Now()
	first := start.Add(300 * time.Millisecond)
	cs = newClaimedServer(t, first, grace)
	later := start.Add(2 * time.Second)
	if code, body := cs.renew(t, cs.sign(t, cs.key, claim.Claim{Lease: "l1", Hostname: "warm-1", Lessee: "alice", Expires: later, Instance: "101"})); code != http.StatusNoContent {
		t.Fatalf("renewal: %d %s", code, body)
	}
	testutil.WaitWithin(t, 10*time.Second, "the first claim's expiry and grace to pass", func() bool { return time.Now().After(first.Add(3 * grace)) })
	select {
	case why := <-cs.ended:
		t.Fatalf("the run ended (%s) at its first claim's expiry, though the lease was renewed", why)
	default:
	}
	select {
	case <-cs.ended:
		if time.Now().Before(later.Add(grace)) {
			t.Errorf("the renewed run ended before the renewed claim's expiry and grace")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the renewed run did not end within 10 s of the renewed claim's expiry")
	}
}

// TestRenewRefused: only a claim the provider signed for this machine's
// instance and lease, expiring no earlier than the one it holds, renews
// the lease.
func TestRenewRefused(t *testing.T) {
	expires := time.Now().Add(time.Hour)
	cs := newClaimedServer(t, expires, time.Second)
	_, forger, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := claim.Claim{Lease: "l1", Hostname: "warm-1", Lessee: "alice", Expires: expires.Add(time.Minute), Instance: "101"}
	with := func(f func(*claim.Claim)) claim.Claim {
		c := good
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name  string
		key   ed25519.PrivateKey
		claim claim.Claim
		token string
		want  int
	}{
		{name: "another lease", claim: with(func(c *claim.Claim) { c.Lease = "l2" }), want: http.StatusForbidden},
		{name: "another lessee", claim: with(func(c *claim.Claim) { c.Lessee = "bob" }), want: http.StatusForbidden},
		{name: "another machine", claim: with(func(c *claim.Claim) { c.Hostname = "warm-2" }), want: http.StatusForbidden},
		{name: "another instance of the name", claim: with(func(c *claim.Claim) { c.Instance = "102" }), want: http.StatusForbidden},
		{name: "an earlier expiry", claim: with(func(c *claim.Claim) { c.Expires = expires.Add(-time.Minute) }), want: http.StatusForbidden},
		{name: "an expired claim", claim: with(func(c *claim.Claim) { c.Expires = time.Now().Add(-time.Second) }), want: http.StatusForbidden},
		{name: "a bad signature", key: forger, claim: good, want: http.StatusForbidden},
		{name: "not a token", token: "abc.def", want: http.StatusForbidden},
		{name: "the same claim again", claim: with(func(c *claim.Claim) { c.Expires = expires }), want: http.StatusNoContent},
		{name: "a later claim", claim: good, want: http.StatusNoContent},
	} {
		tok := tc.token
		if tok == "" {
			k := tc.key
			if k == nil {
				k = cs.key
			}
			tok = cs.sign(t, k, tc.claim)
		}
		before := *cs.p.claimed
		code, body := cs.renew(t, tok)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		if after := *cs.p.claimed; tc.want != http.StatusNoContent && after != before {
			t.Errorf("%s: refused, but the machine's claim changed from %+v to %+v", tc.name, before, after)
		}
	}
	if got := cs.p.claimed.Expires; !got.Equal(good.Expires) {
		t.Errorf("after the renewals the machine's claim expires at %v, want %v", got, good.Expires)
	}
	// Not claimed: nothing to renew.
	p := &poolServer{name: "warm-1", id: "101", pub: cs.p.pub, log: slog.New(slog.DiscardHandler)}
	cs2 := &claimedServer{p: p}
	if code, body := cs2.renew(t, cs.sign(t, cs.key, good)); code != http.StatusConflict {
		t.Errorf("a renewal at a machine not claimed: %d %s, want 409", code, body)
	}
}
