package provider_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// claimKey reads a provider's public claim key as a backend does.
func claimKey(t *testing.T, c *client.Client) ed25519.PublicKey {
	t.Helper()
	k, err := c.ClaimKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if k.Algorithm != "ed25519" {
		t.Fatalf("claim key algorithm %q", k.Algorithm)
	}
	pub, err := claim.ParsePublicKey(k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestClaimKeyPersists: the claim key made at the first start is the one
// a restarted provider on the same database signs with.
func TestClaimKeyPersists(t *testing.T) {
	db := filepath.Join(t.TempDir(), "provider.db")
	var keys []ed25519.PublicKey
	for range 2 {
		st, err := store.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		k, err := provider.New(st, provider.Config{}, slog.New(slog.DiscardHandler)).ClaimKey(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.Public().(ed25519.PublicKey))
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !keys[0].Equal(keys[1]) {
		t.Fatal("a restarted provider made a new claim key: the claims it signed before the restart no longer verify")
	}
	// And through the API, on the same file.
	w := startOn(t, db)
	if !claimKey(t, w.gce).Equal(keys[0]) {
		t.Fatal("GET /v1/claim-key answers another key than the one in the database")
	}
}

// TestClaimKeySharedByReplicas: two providers on one PostgreSQL database,
// asked at once, make and publish one key.
func TestClaimKeySharedByReplicas(t *testing.T) {
	url := testutil.PostgresURL(t)
	var servers []*provider.Server
	for range 4 {
		st, err := store.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		servers = append(servers, provider.New(st, provider.Config{}, slog.New(slog.DiscardHandler)))
	}
	keys := make([]ed25519.PrivateKey, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			k, err := s.ClaimKey(context.Background())
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for i := range keys {
		if !keys[i].Equal(keys[0]) {
			t.Fatalf("replica %d made a claim key of its own", i)
		}
	}
	a, b := startOn(t, url), startOn(t, url)
	if !claimKey(t, a.gce).Equal(claimKey(t, b.gce)) || !claimKey(t, a.gce).Equal(keys[0].Public()) {
		t.Fatal("the replicas publish different claim keys")
	}
}

// TestLeaseClaim: a fulfilled lease of a pool machine carries a claim for
// its machine, lessee and expiry, which only its client (and an admin)
// sees; an extension signs the new expiry; a released lease, or a lease
// of a machine that is not a pool machine, has none.
func TestLeaseClaim(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	pub := claimKey(t, w.gce)
	pool := machine("pool-1")
	pool.Dimensions = store.Dimensions{"os": {"linux"}, provider.PoolDimension: {"true"}, "instance_id": {"4242"}}
	if _, err := w.gce.AddMachine(ctx, pool); err != nil {
		t.Fatal(err)
	}
	req := store.LeaseRequest{RequestID: "pool-1", Dimensions: store.Dimensions{provider.PoolDimension: {"true"}}, Term: store.Term{Duration: 2 * time.Minute}}
	l, err := w.alice.RequestLease(ctx, req)
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	check := func(what, tok string, exp time.Time) {
		t.Helper()
		c, err := claim.Verify(pub, tok, "pool-1", time.Now())
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if c.Lease != l.ID || c.Lessee != "alice" || !c.Expires.Equal(exp) || c.Instance != "4242" {
			t.Fatalf("%s: claim %+v, want lease %s of alice until %s", what, c, l.ID, exp)
		}
	}
	check("the lease's answer", l.Claim, l.ExpiresAt)
	got, err := w.alice.Lease(ctx, l.ID, 0)
	if err != nil || got.Claim != l.Claim {
		t.Fatalf("reading the lease again: %+v, %v; want the same claim (signatures are deterministic)", got, err)
	}
	ls, err := w.alice.Leases(ctx, true)
	if err != nil || len(ls) != 1 || ls[0].Claim != l.Claim {
		t.Fatalf("alice's leases: %+v, %v", ls, err)
	}
	if got, err := w.ops.Lease(ctx, l.ID, 0); err != nil || got.Claim != l.Claim {
		t.Fatalf("an admin reading the lease: %+v, %v", got, err)
	}
	// Nobody else sees the lease, so nobody else has its claim.
	if _, err := w.bob.Lease(ctx, l.ID, 0); err == nil {
		t.Fatal("bob read alice's lease")
	}
	if ls, err := w.bob.Leases(ctx, false); err != nil || len(ls) != 0 {
		t.Fatalf("bob's leases: %+v, %v", ls, err)
	}
	for _, tok := range []string{"gce-secret-0123456789"} {
		code, body := getAs(t, w, tok, "/v1/leases/"+l.ID)
		if code != http.StatusForbidden || strings.Contains(body, l.Claim) {
			t.Fatalf("a backend reading the lease: %d %s", code, body)
		}
	}
	code, body := getAs(t, w, "gce-secret-0123456789", "/v1/machines/pool-1")
	if code != http.StatusOK || strings.Contains(body, l.Claim) {
		t.Fatalf("the backend's view of the machine: %d %s", code, body)
	}
	if code, _ := getAs(t, w, "alice-secret-0123456789", "/v1/claim-key"); code != http.StatusForbidden {
		t.Errorf("a client reading the claim key: %d, want 403 (backends give it to their machines)", code)
	}

	ext, err := w.alice.Extend(ctx, l.ID, store.Term{Duration: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !ext.ExpiresAt.After(l.ExpiresAt) || ext.Claim == l.Claim {
		t.Fatalf("extended: %+v", ext)
	}
	check("the extended lease", ext.Claim, ext.ExpiresAt)

	// Once serve pins its backend's own fleet CA, a machine cataloged
	// with another (as anyone with the backend's token could, before the
	// pin) gets no claim, and no more such machines are cataloged.
	ownCA, err := testutil.SelfSigned("the backend's own fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	ownPEM, _ := testutil.CertPEM(ownCA)
	if err := w.server.PinFleetCA(ctx, "gce", ownPEM); err != nil {
		t.Fatal(err)
	}
	if got, err := w.alice.Lease(ctx, l.ID, 0); err != nil || got.Claim != "" {
		t.Fatalf("the lease of a machine of an unpinned CA: %+v, %v; want no claim", got, err)
	}
	var ce *client.Error
	second := machine("pool-2")
	second.Dimensions = store.Dimensions{provider.PoolDimension: {"true"}, "instance_id": {"4243"}}
	if _, err := w.gce.AddMachine(ctx, second); !errors.As(err, &ce) || ce.Fields["connection.ca_cert"] == "" {
		t.Fatalf("cataloging a pool machine of a CA other than the pinned one: %v, want a 400 naming connection.ca_cert", err)
	}
	if err := w.server.PinFleetCA(ctx, "gce", []byte(pool.Connection.CACert)); err != nil {
		t.Fatal(err)
	}
	if got, err := w.alice.Lease(ctx, l.ID, 0); err != nil || got.Claim == "" {
		t.Fatalf("the lease once its machine's CA is pinned again: %+v, %v; want its claim", got, err)
	}
	if err := w.server.PinFleetCA(ctx, "gce", []byte("not a certificate")); err == nil {
		t.Error("PinFleetCA took a non-certificate")
	}

	rel, err := w.alice.Release(ctx, l.ID)
	if err != nil || rel.Claim != "" {
		t.Fatalf("released: %+v, %v; want no claim", rel, err)
	}
	if got, err := w.alice.Lease(ctx, l.ID, 0); err != nil || got.Claim != "" {
		t.Fatalf("a released lease read again: %+v, %v; want no claim", got, err)
	}

	// A backend not trusted with pool machines catalogs none: drivers
	// would hand it their runs.
	fake := machine("fake-pool")
	fake.Dimensions = store.Dimensions{provider.PoolDimension: {"true"}}
	if _, err := w.other.AddMachine(ctx, fake); !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "may not catalog pool machines") {
		t.Fatalf("an untrusted backend cataloging a pool machine: %v", err)
	}
	if _, errs, err := w.other.AddMachines(ctx, []store.Machine{fake}); err == nil && (len(errs) == 0 || errs[0] == nil) {
		t.Fatal("an untrusted backend cataloged a pool machine in a batch")
	}

	// A trusted backend's pool machine names its instance and the
	// backend's fleet CA, pinned at its first pool machine: a holder of
	// the backend's token cannot have drivers trust a CA of its own.
	other, err := testutil.SelfSigned("another fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := testutil.CertPEM(other)
	for _, tc := range []struct {
		name, field string
		edit        func(m *store.Machine)
	}{
		{"no instance id", "dimensions.instance_id", func(m *store.Machine) { delete(m.Dimensions, "instance_id") }},
		{"another CA than the backend's pinned one", "connection.ca_cert", func(m *store.Machine) { m.Connection.CACert = string(otherPEM) }},
		{"no CA", "connection.ca_cert", func(m *store.Machine) { m.Connection.CACert = "" }},
	} {
		m := machine("pool-bad")
		m.Dimensions = store.Dimensions{provider.PoolDimension: {"true"}, "instance_id": {"4343"}}
		tc.edit(&m)
		if _, err := w.gce.AddMachine(ctx, m); !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Fields[tc.field] == "" {
			t.Errorf("a pool machine with %s: %v, want a 400 naming %s", tc.name, err, tc.field)
		}
		if _, errs, err := w.gce.AddMachines(ctx, []store.Machine{m}); err == nil && (len(errs) == 0 || errs[0] == nil) {
			t.Errorf("a pool machine with %s was cataloged in a batch", tc.name)
		}
	}

	// A pool machine is leased for a term: its claim names the expiry.
	if _, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "forever", Dimensions: store.Dimensions{provider.PoolDimension: {"true"}}, Term: store.Term{Indefinite: true}}); !errors.As(err, &ce) || ce.Fields["term"] == "" {
		t.Fatalf("an indefinite lease of a pool machine: %v, want a 400 naming term", err)
	}

	// A machine that is not a pool machine: no claim.
	if _, err := w.gce.AddMachine(ctx, machine("vm-1")); err != nil {
		t.Fatal(err)
	}
	plain, err := w.alice.RequestLease(ctx, lease("plain"))
	if err != nil || plain.State != store.Fulfilled || plain.Claim != "" {
		t.Fatalf("a lease of a machine that is not a pool machine: %+v, %v", plain, err)
	}
}
