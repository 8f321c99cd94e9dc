package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// stores runs test against each store: SQLite in memory and in a file (WAL,
// with its checkpointer) and a fresh PostgreSQL database. It is the
// conformance suite: all must pass alike.
func stores(t *testing.T, test func(t *testing.T, s *store.Store)) {
	for _, c := range []struct{ name, url string }{
		{"sqlite", ":memory:"},
		{"sqlite-file", "sqlite:" + filepath.Join(t.TempDir(), "provider.db")},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := store.Open(context.Background(), c.url)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			test(t, s)
		})
	}
	t.Run("postgres", func(t *testing.T) {
		s, err := store.Open(context.Background(), testutil.PostgresURL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		test(t, s)
	})
}

func machine(host string, dims store.Dimensions) store.Machine {
	return store.Machine{Hostname: host, Backend: "gce", Dimensions: dims, Connection: store.Connection{Address: "10.0.0.1", Port: 8443}}
}

func request(id string, dims store.Dimensions) store.LeaseRequest {
	return store.LeaseRequest{RequestID: id, Dimensions: dims, Term: store.Term{Duration: time.Hour}}
}

var linux8 = store.Dimensions{"os": {"linux"}, "cpus": {"8"}, "zone": {"us-central1-a"}}

func TestCatalog(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		m, err := s.AddMachine(ctx, machine("m1", linux8))
		if err != nil || m.State != store.Available || m.Policies.OnReclaim != "DELETE" {
			t.Fatalf("add: %+v, %v", m, err)
		}
		// The same body again is a no-op, dimensions in any order.
		again := machine("m1", store.Dimensions{"zone": {"us-central1-a"}, "cpus": {"8", "8"}, "os": {"linux"}})
		if _, err := s.AddMachine(ctx, again); err != nil {
			t.Errorf("adding the same machine again: %v", err)
		}
		other := machine("m1", store.Dimensions{"os": {"windows"}})
		if _, err := s.AddMachine(ctx, other); !errors.Is(err, store.ErrConflict) {
			t.Errorf("adding m1 with another body: %v, want ErrConflict", err)
		}
		if _, err := s.AddMachine(ctx, store.Machine{Hostname: "b1", Backend: "other", Dimensions: linux8}); err != nil {
			t.Fatal(err)
		}
		if ms, err := s.Machines(ctx, "gce"); err != nil || len(ms) != 1 || ms[0].Hostname != "m1" {
			t.Errorf("machines of gce: %v, %v", ms, err)
		}
		if ms, _ := s.Machines(ctx, ""); len(ms) != 2 {
			t.Errorf("all machines: %d", len(ms))
		}
		if err := s.DeleteMachine(ctx, "gce", "b1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a backend deleting another's machine: %v", err)
		}
		if err := s.DeleteMachine(ctx, "other", "b1"); err != nil {
			t.Error(err)
		}
		if _, err := s.Machine(ctx, "b1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted machine: %v", err)
		}
	})
}

func TestLeaseLifecycle(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
		s.Now = func() time.Time { return clock }

		// Nothing matches yet: the request waits.
		l, _, err := s.RequestLease(ctx, "alice", request("r1", store.Dimensions{"os": {"linux"}, "cpus": {"8"}}))
		if err != nil || l.State != store.Pending {
			t.Fatalf("request: %+v, %v", l, err)
		}
		if _, err := s.AddMachine(ctx, machine("small", store.Dimensions{"os": {"linux"}, "cpus": {"2"}})); err != nil {
			t.Fatal(err)
		}
		if l, _ = s.Lease(ctx, l.ID); l.State != store.Pending {
			t.Errorf("a machine without every dimension fulfilled the request")
		}
		// A matching machine goes to the waiting request as it arrives.
		if _, err := s.AddMachine(ctx, machine("big", linux8)); err != nil {
			t.Fatal(err)
		}
		l, _ = s.Lease(ctx, l.ID)
		if l.State != store.Fulfilled || l.Hostname != "big" || l.Machine == nil || l.Machine.Connection.Port != 8443 || !l.ExpiresAt.Equal(clock.Add(time.Hour)) {
			t.Fatalf("after the machine came: %+v", l)
		}
		if m, _ := s.Machine(ctx, "big"); m.State != store.Leased || m.LeaseID != l.ID {
			t.Errorf("leased machine: %+v", m)
		}

		// Idempotency: the same request returns the same lease, as read
		// back; another body under the same id is refused.
		same, _, err := s.RequestLease(ctx, "alice", request("r1", store.Dimensions{"cpus": {"8"}, "os": {"linux"}}))
		if err != nil || !reflect.DeepEqual(same, l) {
			t.Errorf("repeated request: %+v, %v; want %+v", same, err, l)
		}

		if _, _, err := s.RequestLease(ctx, "alice", request("r1", store.Dimensions{"os": {"mac"}})); !errors.Is(err, store.ErrRequestIDReuse) {
			t.Errorf("reused id: %v", err)
		}
		if other, _, err := s.RequestLease(ctx, "bob", request("r1", store.Dimensions{"os": {"mac"}})); err != nil || other.ID == l.ID {
			t.Errorf("another client's r1: %v, %v", other, err)
		}

		// Only the lessee sees and ends its lease.
		if _, _, err := s.ReleaseLease(ctx, "bob", l.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("bob releasing alice's lease: %v", err)
		}
		if ls, _ := s.Leases(ctx, "alice", true); len(ls) != 1 || ls[0].ID != l.ID {
			t.Errorf("alice's active leases: %v", ls)
		}

		clock = clock.Add(30 * time.Minute)
		l, err = s.ExtendLease(ctx, "alice", l.ID, store.Term{Duration: 2 * time.Hour})
		if err != nil || !l.ExpiresAt.Equal(clock.Add(2*time.Hour)) {
			t.Errorf("extend: %v, %v", l.ExpiresAt, err)
		}
		l, ended, err := s.ReleaseLease(ctx, "alice", l.ID)
		if err != nil || !ended || l.State != store.Released || !l.Ended.Equal(clock) {
			t.Fatalf("release: %+v, %v, %v", l, ended, err)
		}
		if again, ended, err := s.ReleaseLease(ctx, "alice", l.ID); err != nil || ended || again.State != store.Released {
			t.Errorf("releasing again: %s, %v, %v", again.State, ended, err)
		}
		// The machine is reclaimed: out of the catalog, its backend told.
		if _, err := s.Machine(ctx, "big"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("released machine still cataloged: %v", err)
		}
		evs, err := s.Events(ctx, "gce", 0, 10)
		if err != nil || len(evs) != 2 || evs[0].Kind != "leased" || evs[1].Kind != "reclaimed" || evs[1].Hostname != "big" || evs[1].OnReclaim != "DELETE" {
			t.Errorf("events: %+v, %v", evs, err)
		}
		// A reclaimed machine is never cataloged again.
		if _, err := s.AddMachine(ctx, machine("big", linux8)); !errors.Is(err, store.ErrReclaimed) {
			t.Errorf("cataloging a reclaimed machine again: %v", err)
		}
		if more, _ := s.Events(ctx, "gce", evs[1].ID, 10); len(more) != 0 {
			t.Errorf("events after the cursor: %v", more)
		}
		if _, err := s.ExtendLease(ctx, "alice", l.ID, store.Term{Duration: time.Hour}); !errors.Is(err, store.ErrNotActive) {
			t.Errorf("extending a released lease: %v", err)
		}
	})
}

// TestRequestAnswersAsStored: a request answers with its lease as a later
// read finds it, fulfilled at once or waiting, and so does a release.
func TestRequestAnswersAsStored(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.AddMachine(ctx, machine("m1", linux8)); err != nil {
			t.Fatal(err)
		}
		for _, r := range []store.LeaseRequest{
			request("at-once", linux8),
			request("waits", store.Dimensions{"os": {"plan9"}}),
			{RequestID: "until", Dimensions: store.Dimensions{"os": {"plan9"}}, Term: store.Term{ExpiresAt: time.Now().Add(time.Hour)}, Deadline: time.Now().Add(time.Minute)},
		} {
			got, _, err := s.RequestLease(ctx, "carol", r)
			if err != nil {
				t.Fatal(err)
			}
			if stored, err := s.Lease(ctx, got.ID); err != nil || !reflect.DeepEqual(got, stored) {
				t.Errorf("request %s answered\n%+v\nstored:\n%+v, %v", r.RequestID, got, stored, err)
			}
			ended, _, err := s.ReleaseLease(ctx, "carol", got.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored, err := s.Lease(ctx, got.ID); err != nil || !reflect.DeepEqual(ended, stored) {
				t.Errorf("release of %s answered\n%+v\nstored:\n%+v, %v", r.RequestID, ended, stored, err)
			}
		}
	})
}

// TestPruneEvents: events written before the cutoff go, oldest first and
// at most the limit a call; a feed read from a pruned cursor goes on from
// the first event kept; a hostname is refused again only while its
// reclamation is kept.
func TestPruneEvents(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		clock := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
		s.Now = func() time.Time { return clock }
		leaseAndRelease := func(host string) {
			t.Helper()
			if _, err := s.AddMachine(ctx, machine(host, linux8)); err != nil {
				t.Fatal(err)
			}
			l, _, err := s.RequestLease(ctx, "alice", request("for-"+host, linux8))
			if err != nil || l.Machine.Hostname != host {
				t.Fatalf("lease of %s: %+v, %v", host, l, err)
			}
			if _, _, err := s.ReleaseLease(ctx, "alice", l.ID); err != nil {
				t.Fatal(err)
			}
		}
		leaseAndRelease("old-1")
		leaseAndRelease("old-2") // four events: leased and reclaimed, twice
		clock = clock.Add(48 * time.Hour)
		leaseAndRelease("new")
		all, err := s.Events(ctx, "", 0, 100)
		if err != nil || len(all) != 6 {
			t.Fatalf("events before pruning: %d, %v; want 6", len(all), err)
		}

		cutoff := clock.Add(-24 * time.Hour)
		for i, want := range []int{3, 1, 0} { // the limit, then the last old one, then none
			if n, err := s.PruneEvents(ctx, cutoff, 3); err != nil || n != want {
				t.Fatalf("prune %d: %d, %v; want %d", i+1, n, err, want)
			}
		}
		kept, err := s.Events(ctx, "", all[1].ID, 100) // a cursor among the pruned
		if err != nil || len(kept) != 2 || kept[0] != all[4] || kept[1] != all[5] {
			t.Fatalf("events after a pruned cursor: %+v, %v; want the two of %q", kept, err, "new")
		}

		if _, err := s.AddMachine(ctx, machine("new", linux8)); !errors.Is(err, store.ErrReclaimed) {
			t.Errorf("adding the recently reclaimed machine again: %v, want ErrReclaimed", err)
		}
		if _, err := s.AddMachine(ctx, machine("old-1", linux8)); err != nil {
			t.Errorf("adding a machine whose reclamation was pruned: %v, want it cataloged", err)
		}
	})
}

// TestPruneLeases: leases that ended before the cutoff go, oldest first
// and at most the limit a call; active leases and recently ended ones
// stay, however old.
func TestPruneLeases(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		clock := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
		s.Now = func() time.Time { return clock }
		for i := range 4 {
			if _, err := s.AddMachine(ctx, machine(fmt.Sprint("m", i), linux8)); err != nil {
				t.Fatal(err)
			}
		}
		lease := func(id string, term store.Term) store.Lease {
			l, _, err := s.RequestLease(ctx, "alice", store.LeaseRequest{RequestID: id, Dimensions: linux8, Term: term})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		old1, old2 := lease("old1", store.Term{Duration: time.Hour}), lease("old2", store.Term{Duration: time.Hour})
		kept := lease("kept", store.Term{Indefinite: true}) // old but active
		early := lease("early", store.Term{Duration: time.Hour})
		s.ReleaseLease(ctx, "alice", early.ID) // ended first
		clock = clock.Add(time.Hour)
		s.ReleaseLease(ctx, "alice", old1.ID)
		s.ReleaseLease(ctx, "alice", old2.ID)
		clock = clock.Add(30 * 24 * time.Hour)
		recent := lease("recent", store.Term{Duration: time.Hour})
		s.ReleaseLease(ctx, "alice", recent.ID)

		cutoff := clock.Add(-24 * time.Hour)
		if n, err := s.PruneLeases(ctx, cutoff, 2); err != nil || n != 2 {
			t.Fatalf("first prune: %d, %v; want 2 (the limit)", n, err)
		}
		if n, err := s.PruneLeases(ctx, cutoff, 2); err != nil || n != 1 {
			t.Fatalf("second prune: %d, %v; want the last old one", n, err)
		}
		if n, err := s.PruneLeases(ctx, cutoff, 2); err != nil || n != 0 {
			t.Fatalf("third prune: %d, %v; want none left", n, err)
		}
		for _, l := range []store.Lease{old1, old2, early} {
			if _, err := s.Lease(ctx, l.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("lease %s after pruning: %v, want not found", l.Request.RequestID, err)
			}
		}
		for _, l := range []store.Lease{kept, recent} {
			if _, err := s.Lease(ctx, l.ID); err != nil {
				t.Errorf("lease %s was pruned: %v", l.Request.RequestID, err)
			}
		}
		// A pruned request's id makes a new request.
		again, created, err := s.RequestLease(ctx, "alice", store.LeaseRequest{RequestID: "old1", Dimensions: linux8, Term: store.Term{Duration: time.Hour}})
		if err != nil || !created || again.ID == old1.ID {
			t.Errorf("old1 again after pruning: %+v, new %v, %v", again, created, err)
		}
	})
}

func TestExpiry(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
		s.Now = func() time.Time { return clock }
		s.AddMachine(ctx, machine("m1", linux8))
		short, _, _ := s.RequestLease(ctx, "c", store.LeaseRequest{RequestID: "short", Dimensions: linux8, Term: store.Term{Duration: 10 * time.Minute}})
		forever, _, _ := s.RequestLease(ctx, "c", store.LeaseRequest{RequestID: "forever", Dimensions: linux8, Term: store.Term{Indefinite: true},
			Deadline: clock.Add(5 * time.Minute)})
		if short.State != store.Fulfilled || forever.State != store.Pending {
			t.Fatalf("short %s, forever %s", short.State, forever.State)
		}
		_, next, err := s.Expire(ctx)
		if err != nil || !next.Equal(clock.Add(5*time.Minute)) {
			t.Errorf("next due %v, %v; want the pending request's deadline", next, err)
		}
		clock = clock.Add(6 * time.Minute)
		ended, next, _ := s.Expire(ctx)
		if l, _ := s.Lease(ctx, forever.ID); l.State != store.Denied || len(ended) != 1 || ended[0] != forever.ID {
			t.Errorf("request past its deadline: %s", l.State)
		}
		if !next.Equal(clock.Add(4 * time.Minute)) {
			t.Errorf("next due %v", next)
		}
		clock = clock.Add(4 * time.Minute)
		if _, next, _ = s.Expire(ctx); !next.IsZero() {
			t.Errorf("nothing left, yet next due %v", next)
		}
		if l, _ := s.Lease(ctx, short.ID); l.State != store.Expired {
			t.Errorf("lease past its term: %s", l.State)
		}
		if ms, _ := s.Machines(ctx, ""); len(ms) != 0 {
			t.Errorf("expired lease's machine still cataloged: %v", ms)
		}
	})
}

func TestFirstComeFirstServed(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
		s.Now = func() time.Time { clock = clock.Add(time.Millisecond); return clock }
		var ids []string
		for i := range 3 {
			l, _, err := s.RequestLease(ctx, fmt.Sprint("client", i), request("r", linux8))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, l.ID)
		}
		for i := range 3 {
			s.AddMachine(ctx, machine(fmt.Sprint("m", i), linux8))
			for j, id := range ids {
				l, _ := s.Lease(ctx, id)
				if want := j <= i; (l.State == store.Fulfilled) != want {
					t.Errorf("after %d machines, request %d is %s", i+1, j, l.State)
				}
			}
		}
	})
}

// TestNeverLeasedTwice races clients for fewer machines than requests and
// checks that each machine went to exactly one lease.
func TestNeverLeasedTwice(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		const machines, clients = 20, 40
		var wg sync.WaitGroup
		for i := range machines {
			wg.Go(func() {
				if _, err := s.AddMachine(ctx, machine(fmt.Sprintf("m%02d", i), linux8)); err != nil {
					t.Error(err)
				}
			})
		}
		leases := make([]store.Lease, clients)
		for i := range clients {
			wg.Go(func() {
				var err error
				leases[i], _, err = s.RequestLease(ctx, fmt.Sprint("c", i), request("r", linux8))
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		byHost := map[string]string{}
		fulfilled := 0
		for i := range leases {
			l, err := s.Lease(ctx, leases[i].ID)
			if err != nil {
				t.Fatal(err)
			}
			if l.State != store.Fulfilled {
				continue
			}
			fulfilled++
			if prev, dup := byHost[l.Hostname]; dup {
				t.Errorf("machine %s leased twice: %s and %s", l.Hostname, prev, l.ID)
			}
			byHost[l.Hostname] = l.ID
			if m, _ := s.Machine(ctx, l.Hostname); m.State != store.Leased || m.LeaseID != l.ID {
				t.Errorf("machine %s: %s by %s, but lease %s holds it", l.Hostname, m.State, m.LeaseID, l.ID)
			}
		}
		// Whatever the interleaving, no machine is left idle while a
		// request waits.
		if fulfilled != machines {
			t.Errorf("%d leases fulfilled with %d machines and %d requests", fulfilled, machines, clients)
		}
	})
}

// TestFailureStaysAlone: concurrent callers may share a transaction (SQLite
// commits them together); one caller's failure must not undo another's
// work, nor the other way round.
func TestFailureStaysAlone(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.AddMachine(ctx, machine("taken", linux8)); err != nil {
			t.Fatal(err)
		}
		const n = 50
		errs := make([]error, 2*n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[2*i] = s.AddMachine(ctx, machine(fmt.Sprintf("new%02d", i), linux8))
			})
			wg.Go(func() {
				_, errs[2*i+1] = s.AddMachine(ctx, machine("taken", store.Dimensions{"os": {fmt.Sprint("os", i)}}))
			})
		}
		wg.Wait()
		for i := range n {
			if errs[2*i] != nil {
				t.Errorf("adding new%02d beside failing callers: %v", i, errs[2*i])
			}
			if !errors.Is(errs[2*i+1], store.ErrConflict) {
				t.Errorf("adding taken with another body: %v, want ErrConflict", errs[2*i+1])
			}
		}
		ms, err := s.Machines(ctx, "")
		if err != nil || len(ms) != n+1 {
			t.Fatalf("catalog has %d machines (%v), want %d", len(ms), err, n+1)
		}
		if m, _ := s.Machine(ctx, "taken"); !slices.Equal(m.Dimensions["os"], []string{"linux"}) {
			t.Errorf("taken changed by a refused add: %+v", m)
		}
	})
}

// TestPostgresRefusalStaysAlone: calls share a transaction on PostgreSQL
// too; one that the server refuses (a NUL byte in text) rolls it back, and
// the others must still land.
func TestPostgresRefusalStaysAlone(t *testing.T) {
	s, err := store.Open(context.Background(), testutil.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const n = 50
	errs := make([]error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[2*i] = s.AddMachine(ctx, machine(fmt.Sprintf("good%02d", i), linux8))
		})
		wg.Go(func() {
			_, errs[2*i+1] = s.AddMachine(ctx, machine(fmt.Sprintf("bad%02d\x00", i), linux8))
		})
	}
	wg.Wait()
	for i := range n {
		if errs[2*i] != nil {
			t.Errorf("adding good%02d beside refused callers: %v", i, errs[2*i])
		}
		if errs[2*i+1] == nil {
			t.Errorf("adding bad%02d with a NUL byte: no error", i)
		}
	}
	ms, err := s.Machines(ctx, "")
	if err != nil || len(ms) != n {
		t.Fatalf("catalog has %d machines (%v), want %d", len(ms), err, n)
	}
}

func TestSQLiteFileKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provider.db")
	ctx := context.Background()
	s, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	s.AddMachine(ctx, machine("m1", linux8))
	l, _, _ := s.RequestLease(ctx, "c", request("r", linux8))
	s.Close()
	s, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Lease(ctx, l.ID); err != nil || got.State != store.Fulfilled || got.Hostname != "m1" {
		t.Errorf("after reopening: %+v, %v", got, err)
	}
}

func TestTermValidation(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		term store.Term
		ok   bool
	}{
		{store.Term{Duration: time.Hour}, true},
		{store.Term{Indefinite: true}, true},
		{store.Term{ExpiresAt: now.Add(time.Hour)}, true},
		{store.Term{}, false},
		{store.Term{Duration: time.Hour, Indefinite: true}, false},
		{store.Term{Duration: 22 * 24 * time.Hour}, false},
		{store.Term{ExpiresAt: now.Add(-time.Hour)}, false},
	} {
		if err := tc.term.Validate(now); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.term, err)
		}
	}
}

func TestKeyValue(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.Get(ctx, "cursor"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("get of a missing key: %v, want ErrNotFound", err)
		}
		for _, v := range []string{"1", "2"} {
			if err := s.Put(ctx, "cursor", v, store.Fence{}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, "cursor"); err != nil || got != v {
				t.Fatalf("get: %q, %v; want %q", got, err, v)
			}
		}
	})
}

// TestLeadership: one replica leads at a time; the others take over when
// it stops renewing, and a deposed leader's fenced writes are refused.
func TestLeadership(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		now := time.Unix(1_800_000_000, 0)
		s.Now = func() time.Time { return now }
		const ttl = 10 * time.Second
		lead := func(who string) bool {
			t.Helper()
			ok, err := s.Lead(ctx, "backend", who, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if !lead("a") || lead("b") {
			t.Fatal("a should lead alone")
		}
		now = now.Add(ttl / 2)
		if !lead("a") || lead("b") {
			t.Fatal("a renews; b still may not lead")
		}
		if err := s.Put(ctx, "state", "from a", store.Fence{Name: "backend", Holder: "a"}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(ttl) // a stopped renewing: it died
		if !lead("b") || lead("a") {
			t.Fatal("b should take over from a lapsed a")
		}
		if err := s.Put(ctx, "state", "from a", store.Fence{Name: "backend", Holder: "a"}); !errors.Is(err, store.ErrNotLeader) {
			t.Fatalf("deposed a wrote: %v, want ErrNotLeader", err)
		}
		if v, _ := s.Get(ctx, "state"); v != "from a" {
			t.Fatalf("state = %q", v)
		}
		if err := s.Resign(ctx, "backend", "b"); err != nil {
			t.Fatal(err)
		}
		if !lead("c") {
			t.Fatal("c should lead at once after b resigned")
		}
		// Concurrent candidates: exactly one wins.
		now = now.Add(2 * ttl)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 8 {
			wg.Go(func() {
				ok, err := s.Lead(ctx, "backend", fmt.Sprint("r", i), ttl)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d replicas lead at once", won)
		}
	})
}

// TestCancelledCallers: a caller that gives up (its context ends) while
// its transaction waits or runs neither races with it nor loses another's
// work; what it was told succeeded is there.
func TestCancelledCallers(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		var wg sync.WaitGroup
		errs := make([]error, 100)
		for i := range errs {
			wg.Go(func() {
				ctx, cancel := context.WithCancel(context.Background())
				if i%2 == 0 {
					go cancel()
				} else {
					defer cancel()
				}
				_, errs[i] = s.AddMachine(ctx, machine(fmt.Sprintf("m%03d", i), linux8))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("m%03d: %v", i, err)
			}
			if _, gerr := s.Machine(context.Background(), fmt.Sprintf("m%03d", i)); err == nil && gerr != nil {
				t.Errorf("m%03d was added, but: %v", i, gerr)
			}
		}
	})
}

// BenchmarkLeaseRelease measures the store alone (no HTTP) doing what the
// provider does for a client's lease and release and its backend's
// replacement of the reclaimed machine, with 32 callers on a SQLite file
// holding 10,000 machines: one op is one such triple.
//
//	go test ./store -run '^$' -bench LeaseRelease -benchtime 20000x
func BenchmarkLeaseRelease(b *testing.B) {
	ctx := context.Background()
	s, err := store.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const machines = 10000
	ms := make([]store.Machine, machines)
	for i := range ms {
		ms[i] = machine(fmt.Sprintf("vm-%07d", i), linux8)
	}
	if _, errs := s.AddMachines(ctx, ms); errors.Join(errs...) != nil {
		b.Fatal(errors.Join(errs...))
	}
	var mu sync.Mutex
	n := machines
	// 32 callers whatever GOMAXPROCS is.
	b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			id := n
			mu.Unlock()
			l, _, err := s.RequestLease(ctx, "bench", request(fmt.Sprint(id), store.Dimensions{"os": {"linux"}}))
			if err == nil && l.State != store.Fulfilled {
				err = fmt.Errorf("lease %s is %s, want FULFILLED (the catalog ran dry)", l.ID, l.State)
			}
			if err == nil {
				_, _, err = s.ReleaseLease(ctx, "bench", l.ID)
			}
			if err == nil {
				_, err = s.AddMachine(ctx, machine(fmt.Sprintf("vm-%07d", id), linux8))
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestDeleteRacesLease: a backend taking an idle machine out of the
// catalog while a client leases it: exactly one wins. Either the lease
// holds the machine and the delete is refused (ErrLeased), or the
// machine is gone and the request waits; never both, never neither.
func TestDeleteRacesLease(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		const n = 40
		for i := range n {
			if _, err := s.AddMachine(ctx, machine(fmt.Sprintf("idle-%02d", i), store.Dimensions{"host": {fmt.Sprint(i)}})); err != nil {
				t.Fatal(err)
			}
		}
		leases := make([]store.Lease, n)
		deleted := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var err error
				leases[i], _, err = s.RequestLease(ctx, "alice", request(fmt.Sprint("r", i), store.Dimensions{"host": {fmt.Sprint(i)}}))
				if err != nil {
					t.Error(err)
				}
			})
			wg.Go(func() { deleted[i] = s.DeleteMachine(ctx, "gce", fmt.Sprintf("idle-%02d", i)) })
		}
		wg.Wait()
		wins := map[string]int{}
		for i := range n {
			host := fmt.Sprintf("idle-%02d", i)
			l, err := s.Lease(ctx, leases[i].ID)
			if err != nil {
				t.Fatal(err)
			}
			m, merr := s.Machine(ctx, host)
			switch {
			case deleted[i] == nil && l.State == store.Pending && errors.Is(merr, store.ErrNotFound):
				wins["delete"]++
			case errors.Is(deleted[i], store.ErrLeased) && l.State == store.Fulfilled && l.Hostname == host && m.State == store.Leased && m.LeaseID == l.ID:
				wins["lease"]++
			default:
				t.Errorf("%s: delete %v, lease %s of %q, machine %+v (%v): not exactly one winner", host, deleted[i], l.State, l.Hostname, m, merr)
			}
		}
		t.Logf("of %d races, %v", n, wins)
	})
}

// TestConcurrentExtends: extends of one lease at once all succeed; none
// finds the lease missing because another holds its row.
func TestConcurrentExtends(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.AddMachine(ctx, machine("m1", linux8)); err != nil {
			t.Fatal(err)
		}
		l, _, err := s.RequestLease(ctx, "alice", request("r", linux8))
		if err != nil || l.State != store.Fulfilled {
			t.Fatalf("lease: %+v, %v", l, err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 16)
		for i := range errs {
			wg.Go(func() { _, errs[i] = s.ExtendLease(ctx, "alice", l.ID, store.Term{Duration: 2 * time.Hour}) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("extend %d: %v", i, err)
			}
		}
	})
}
