package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// TestQueueMatching: a new machine goes to the oldest pending request all
// of whose dimensions it has; one that shares only some of them does not
// match, and a request that asks for nothing takes any machine.
func TestQueueMatching(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		clock := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
		s.Now = func() time.Time { clock = clock.Add(time.Millisecond); return clock }
		ask := func(client, id string, d store.Dimensions) string {
			t.Helper()
			l, _, err := s.RequestLease(ctx, client, request(id, d))
			if err != nil || l.State != store.Pending {
				t.Fatalf("request %s: %+v, %v; want PENDING", id, l, err)
			}
			return l.ID
		}
		add := func(host string, d store.Dimensions) string {
			t.Helper()
			m, err := s.AddMachine(ctx, machine(host, d))
			if err != nil {
				t.Fatalf("adding %s: %v", host, err)
			}
			return m.LeaseID
		}
		overlap := ask("a", "overlap", store.Dimensions{"os": {"linux"}, "pool": {"gpu"}})
		first := ask("b", "first", store.Dimensions{"os": {"linux"}})
		second := ask("a", "second", store.Dimensions{"os": {"linux"}, "zone": {"us-central1-a"}})
		two := ask("c", "two-values", store.Dimensions{"os": {"linux", "windows"}})

		// Shares os=linux with overlap, lacks its pool: first, the oldest
		// that it satisfies, gets it.
		if got := add("m1", linux8); got != first {
			t.Errorf("m1 went to %q, want the oldest matching request %s", got, first)
		}
		if got := add("m2", linux8); got != second {
			t.Errorf("m2 went to %q, want %s", got, second)
		}
		// Nothing left that linux8 satisfies: overlap wants pool=gpu, two
		// wants windows as well.
		if got := add("m3", linux8); got != "" {
			t.Errorf("m3 went to %q, want no lease (no pending request is satisfied by it)", got)
		}
		if got := add("m4", store.Dimensions{"os": {"windows", "linux"}}); got != two {
			t.Errorf("m4 went to %q, want %s", got, two)
		}
		// m3 and m4 taken, nothing is available.
		if l, _, err := s.RequestLease(ctx, "e", request("taker", linux8)); err != nil || l.Hostname != "m3" {
			t.Fatalf("taking m3: %+v, %v", l, err)
		}
		anything := ask("d", "anything", nil)
		if got := add("m5", store.Dimensions{"arch": {"arm64"}}); got != anything {
			t.Errorf("m5 went to %q, want the request with no dimensions %s", got, anything)
		}
		if got := add("m6", store.Dimensions{"os": {"linux"}, "pool": {"gpu", "tpu"}}); got != overlap {
			t.Errorf("m6 went to %q, want %s", got, overlap)
		}
		for _, id := range []string{first, second, two, anything, overlap} {
			if l, err := s.Lease(ctx, id); err != nil || l.State != store.Fulfilled {
				t.Errorf("lease %s: %+v, %v; want FULFILLED", id, l.State, err)
			}
		}

		// A request withdrawn, or past its deadline, is no longer offered
		// machines.
		gone := ask("a", "gone", store.Dimensions{"os": {"plan9"}})
		if _, _, err := s.ReleaseLease(ctx, "a", gone); err != nil {
			t.Fatal(err)
		}
		r := request("late", store.Dimensions{"os": {"plan9"}})
		r.Deadline = clock.Add(time.Second)
		late, _, err := s.RequestLease(ctx, "a", r)
		if err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(time.Minute)
		if got := add("m7", store.Dimensions{"os": {"plan9"}}); got != "" {
			t.Errorf("m7 went to %q; the requests for plan9 were withdrawn (%s) or past their deadline (%s)", got, gone, late.ID)
		}
	})
}

// TestQueueCap: a client's requests queue up to its cap; the next that
// finds no machine is refused with a message that names the cap and how to
// raise it, and nothing is written. Repeats, requests fulfilled at once
// and other clients are not refused.
func TestQueueCap(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		s.MaxPending = 3
		want := store.Dimensions{"os": {"linux"}}
		var ids []string
		for i := range 3 {
			l, _, err := s.RequestLease(ctx, "a", request(fmt.Sprint(i), want))
			if err != nil || l.State != store.Pending {
				t.Fatalf("request %d: %+v, %v", i, l, err)
			}
			ids = append(ids, l.ID)
		}
		_, _, err := s.RequestLease(ctx, "a", request("3", want))
		if !errors.Is(err, store.ErrQueueFull) || !strings.Contains(err.Error(), "3 pending") || !strings.Contains(err.Error(), "max_pending_per_client") {
			t.Fatalf("fourth request: %v; want ErrQueueFull naming the cap of 3 and max_pending_per_client", err)
		}
		if ls, err := s.Leases(ctx, "a", true); err != nil || len(ls) != 3 {
			t.Errorf("a's active leases after the refusal: %d, %v; want 3 (nothing written)", len(ls), err)
		}
		if l, created, err := s.RequestLease(ctx, "a", request("0", want)); err != nil || created || l.ID != ids[0] {
			t.Errorf("repeating request 0: %s, created %v, %v; want the stored lease", l.ID, created, err)
		}
		if l, _, err := s.RequestLease(ctx, "b", request("0", want)); err != nil || l.State != store.Pending {
			t.Errorf("another client's request: %+v, %v; want PENDING", l, err)
		}
		// With a machine available, a request is fulfilled at once even
		// when its client's queue is full.
		if _, err := s.AddMachine(ctx, machine("w1", store.Dimensions{"os": {"windows"}})); err != nil {
			t.Fatal(err)
		}
		if l, _, err := s.RequestLease(ctx, "a", request("win", store.Dimensions{"os": {"windows"}})); err != nil || l.State != store.Fulfilled {
			t.Errorf("request that a machine satisfies: %+v, %v; want FULFILLED", l, err)
		}
		// A withdrawn request makes room.
		if _, _, err := s.ReleaseLease(ctx, "a", ids[1]); err != nil {
			t.Fatal(err)
		}
		if l, _, err := s.RequestLease(ctx, "a", request("4", want)); err != nil || l.State != store.Pending {
			t.Errorf("request after one was withdrawn: %+v, %v; want PENDING", l, err)
		}
	})
}

// TestQueueCapDefault: with no cap set, a client may queue
// store.DefaultMaxPending requests and no more.
func TestQueueCapDefault(t *testing.T) {
	s, err := store.Open(context.Background(), ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range store.DefaultMaxPending {
		if _, _, err := s.RequestLease(ctx, "a", request(fmt.Sprint(i), store.Dimensions{"os": {"linux"}})); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if _, _, err := s.RequestLease(ctx, "a", request("over", store.Dimensions{"os": {"linux"}})); !errors.Is(err, store.ErrQueueFull) {
		t.Fatalf("request %d: %v; want ErrQueueFull", store.DefaultMaxPending+1, err)
	}
}
