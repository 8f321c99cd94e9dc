package backend_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// fakeClock is a clock that moves only when told, by a microsecond on
// each reading so that what it stamps keeps its order.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond)
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// providerOnClock is providerFor with the store (at dbURL) on clk, as the
// jobs are.
func providerOnClock(t *testing.T, j *backend.Jobs, clk *fakeClock, dbURL string) (backendAPI, alice *client.Client) {
	t.Helper()
	cfg, err := provider.ParseConfig("p.yaml", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n  - {name: alice, role: client, token: client-token-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.Now = clk.Now
	j.Now = clk.Now
	srv := httptest.NewServer(provider.New(st, cfg, slog.New(slog.DiscardHandler)).Handler())
	t.Cleanup(srv.Close)
	backendAPI = &client.Client{BaseURL: srv.URL, Token: "backend-token-0123456789"}
	j.Provider = backendAPI
	return backendAPI, &client.Client{BaseURL: srv.URL, Token: "client-token-0123456789"}
}

// A manager that keeps 6 on Tuesday mornings (UTC) and 1 otherwise, with
// one idle spare, deleting machines idle for 10 minutes.
const idleFleet = poolTemplate + `managers:
  - template_base_name: pool
    zone: us-central1-a
    minimum_size: 1
    maximum_size: 10
    min_idle: 1
    idle_timeout: 10m
    schedules:
      - {days: [tue], hours: "08:00-10:00", time_zone: UTC, minimum_size: 6}
`

func utcAt(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// idleSetup makes idleFleet's group at 09:00 on a Tuesday, in its window,
// with its six instances cataloged and two of them leased, its provider
// on SQLite in memory.
func idleSetup(t *testing.T) (j *backend.Jobs, clk *fakeClock, api, alice *client.Client, leased []store.Lease) {
	return idleSetupOn(t, ":memory:")
}

// idleSetupOn is idleSetup with the provider's database at dbURL.
func idleSetupOn(t *testing.T, dbURL string) (j *backend.Jobs, clk *fakeClock, api, alice *client.Client, leased []store.Lease) {
	t.Helper()
	ctx := context.Background()
	j, _ = jobs(t, idleFleet)
	clk = &fakeClock{}
	clk.set(utcAt(t, "2026-12-01 09:00"))
	api, alice = providerOnClock(t, j, clk, dbURL)
	for _, job := range []func(context.Context) error{j.CreateInstanceTemplates, j.CreateInstanceGroupManagers, j.ResizeInstanceGroups} {
		if err := job(ctx); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "the window's six instances to be cataloged", func() bool {
		if err := j.CatalogInstances(ctx); err != nil {
			t.Fatal(err)
		}
		return len(machines(t, api)) == 6
	})
	for i := range 2 {
		l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("job-", i), Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: 24 * time.Hour}})
		if err != nil || l.State != store.Fulfilled {
			t.Fatalf("lease %d: %+v, %v", i, l, err)
		}
		leased = append(leased, l)
	}
	return j, clk, api, alice, leased
}

// TestIdleTimeoutDeletesOnlyTheIdleSurplus: while the schedule's window
// keeps six, nothing idle is deleted; once it ends, the machines idle
// past idle_timeout beyond what the group needs (a tenth over what is
// leased, plus min_idle) leave the catalog, oldest first, and are deleted
// by name, the group's target following; leased machines stay, and once
// the group is at what it needs, nothing more goes.
func TestIdleTimeoutDeletesOnlyTheIdleSurplus(t *testing.T) {
	ctx := context.Background()
	j, clk, api, alice, leased := idleSetup(t)
	rev := revision(t, j, j.Config().Templates[0])
	groupSize := func() int32 {
		g, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: rev})
		if err != nil {
			t.Fatal(err)
		}
		return g.GetTargetSize()
	}
	idleOnes := func() []store.Machine {
		var out []store.Machine
		for _, m := range machines(t, api) {
			if m.State == store.Available {
				out = append(out, m)
			}
		}
		slices.SortFunc(out, func(a, b store.Machine) int { return a.Added.Compare(b.Added) })
		return out
	}
	// In the window, 20 minutes on: four idle, none deleted.
	clk.set(utcAt(t, "2026-12-01 09:20"))
	if err := j.DeleteIdleInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(machines(t, api)); n != 6 || len(j.State().Pending) != 0 {
		t.Fatalf("in the window: %d cataloged, %d pending deletion; want 6 and none", n, len(j.State().Pending))
	}
	// After it: two leased need ceil(2.2)+1 = 4; the two oldest idle go.
	idle := idleOnes()
	if p, err := j.PlanIdle(machines(t, api)); err != nil || len(p) != 0 {
		t.Errorf("plan in the window: %v, %v; want nothing to delete", p, err)
	}
	clk.set(utcAt(t, "2026-12-01 10:05"))
	// plan --database says what this pass does.
	p, err := j.PlanIdle(machines(t, api))
	if err != nil {
		t.Fatal(err)
	}
	if want := "2 idle past idle_timeout 10m0s of 6 cataloged (2 leased), the group needing 4: " + idle[0].Hostname + ", " + idle[1].Hostname; len(p) != 1 || p[0].Action != "delete-idle" || p[0].Detail != want {
		t.Errorf("plan after the window: %v; want delete-idle (%s)", p, want)
	}
	if err := j.DeleteIdleInstances(ctx); err != nil {
		t.Fatal(err)
	}
	pending := j.State().Pending
	if len(pending) != 2 || pending[idle[0].Hostname].IsZero() || pending[idle[1].Hostname].IsZero() {
		t.Fatalf("after the window: pending deletion %v, want the two oldest idle %s and %s", keys(pending), idle[0].Hostname, idle[1].Hostname)
	}
	for _, l := range leased {
		if !pending[l.Hostname].IsZero() {
			t.Errorf("leased %s is pending deletion", l.Hostname)
		}
	}
	if n := len(machines(t, api)); n != 4 {
		t.Errorf("%d cataloged after deleting the surplus, want 4", n)
	}
	if err := j.DeleteInstancesPendingDeletion(ctx); err != nil {
		t.Fatal(err)
	}
	if got := groupSize(); got != 4 {
		t.Errorf("group target %d after the deletions, want 4", got)
	}
	// Resize does not grow it back, and a second pass deletes nothing.
	if err := j.ResizeInstanceGroups(ctx); err != nil {
		t.Fatal(err)
	}
	clk.set(utcAt(t, "2026-12-01 11:00"))
	if err := j.DeleteIdleInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if got, n := groupSize(), len(machines(t, api)); got != 4 || n != 4 {
		t.Errorf("a second pass: group %d, cataloged %d; want 4 and 4", got, n)
	}
	// Both leases end: their machines are reclaimed; of the two idle
	// left, one is the spare, the other goes.
	for _, l := range leased {
		if _, err := alice.Release(ctx, l.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.DeleteIdleInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(machines(t, api)); n != 1 {
		t.Errorf("after the leases end: %d cataloged, want 1 (min_idle)", n)
	}
	if got := j.Stats()["my-project/us-central1-a/"+rev].IdleDeleted; got != 3 {
		t.Errorf("IdleDeleted %d, want 3", got)
	}
}

// TestIdleTimeoutNeverDeletesAJustLeasedMachine: leases taken while
// delete-idle-instances runs either get a machine that stays, or find it
// gone from the catalog: no machine is both leased and pending deletion,
// and the group keeps what the leases that won need.
func TestIdleTimeoutNeverDeletesAJustLeasedMachine(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { idleRace(t, ":memory:") })
	t.Run("postgres", func(t *testing.T) { idleRace(t, testutil.PostgresURL(t)) })
}

func idleRace(t *testing.T, dbURL string) {
	ctx := context.Background()
	j, clk, api, alice, _ := idleSetupOn(t, dbURL)
	clk.set(utcAt(t, "2026-12-01 10:05"))
	var wg sync.WaitGroup
	leases := make([]store.Lease, 4)
	for i := range leases {
		wg.Go(func() {
			var err error
			leases[i], err = alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("race-", i), Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Go(func() {
		if err := j.DeleteIdleInstances(ctx); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	pending := j.State().Pending
	cataloged := map[string]store.Machine{}
	for _, m := range machines(t, api) {
		cataloged[m.Hostname] = m
	}
	won := 0
	for _, l := range leases {
		l, err := alice.Lease(ctx, l.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if l.State != store.Fulfilled {
			continue
		}
		won++
		if !pending[l.Hostname].IsZero() {
			t.Errorf("%s is leased by %s and pending deletion", l.Hostname, l.ID)
		}
		if m := cataloged[l.Hostname]; m.State != store.Leased || m.LeaseID != l.ID {
			t.Errorf("%s leased by %s is %q in the catalog", l.Hostname, l.ID, m.State)
		}
	}
	if len(cataloged)+len(pending) != 6 {
		t.Errorf("%d cataloged and %d pending deletion of 6", len(cataloged), len(pending))
	}
	if len(pending) > 2 {
		t.Errorf("%d deleted: more than the surplus of 2 at the start", len(pending))
	}
	t.Logf("%d of 4 leases won, %d machines deleted", won, len(pending))
}

// TestIdleMachineLeasedAtTheLastMoment: the oldest idle machine is
// leased after delete-idle-instances read the catalog and before it
// takes the machine out (a client's request, let through just before
// the backend's call): the provider refuses to remove it, the lease
// keeps it, and it is not deleted; only the next oldest goes, since the
// new lease needs the rest.
func TestIdleMachineLeasedAtTheLastMoment(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { leasedAtTheLastMoment(t, ":memory:") })
	t.Run("postgres", func(t *testing.T) { leasedAtTheLastMoment(t, testutil.PostgresURL(t)) })
}

func leasedAtTheLastMoment(t *testing.T, dbURL string) {
	ctx := context.Background()
	j, clk, api, alice, _ := idleSetupOn(t, dbURL)
	var idle []store.Machine
	for _, m := range machines(t, api) {
		if m.State == store.Available {
			idle = append(idle, m)
		}
	}
	slices.SortFunc(idle, func(a, b store.Machine) int { return a.Added.Compare(b.Added) })
	victim := idle[0]
	target, err := url.Parse(api.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	var late store.Lease
	var once sync.Once
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete && r.URL.Path == "/v1/machines/"+victim.Hostname {
			once.Do(func() {
				var err error
				late, err = alice.RequestLease(r.Context(), store.LeaseRequest{RequestID: "late", Term: store.Term{Duration: time.Hour},
					Dimensions: store.Dimensions{"instance_id": victim.Dimensions["instance_id"]}})
				if err != nil || late.State != store.Fulfilled || late.Hostname != victim.Hostname {
					t.Errorf("the late lease: %+v, %v", late, err)
				}
			})
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	j.Provider = &client.Client{BaseURL: srv.URL, Token: api.Token}

	clk.set(utcAt(t, "2026-12-01 10:05"))
	if err := j.DeleteIdleInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if late.ID == "" {
		t.Fatal("the backend never tried to take the oldest idle machine out")
	}
	pending := j.State().Pending
	if !pending[victim.Hostname].IsZero() {
		t.Errorf("%s, leased at the last moment, is pending deletion", victim.Hostname)
	}
	if len(pending) != 1 || pending[idle[1].Hostname].IsZero() {
		t.Errorf("pending deletion %v, want only the next oldest idle %s", keys(pending), idle[1].Hostname)
	}
	for _, m := range machines(t, api) {
		if m.Hostname == victim.Hostname && (m.State != store.Leased || m.LeaseID != late.ID) {
			t.Errorf("%s is %s by %q, want leased by %s", m.Hostname, m.State, m.LeaseID, late.ID)
		}
	}
}
