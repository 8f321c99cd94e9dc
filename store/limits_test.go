package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gcefleet/gcefleet/store"
)

// wide is as many dimensions as the API takes of a machine: 64 keys of
// 64 values.
func wide() store.Dimensions {
	d := store.Dimensions{}
	for k := range 64 {
		for v := range 64 {
			key := fmt.Sprintf("key%02d", k)
			d[key] = append(d[key], fmt.Sprintf("value-%02d", v))
		}
	}
	return d
}

// asked is as many dimensions as the API takes of a request, 64 values in
// all (16 keys of 4), all of them wide's.
func asked() store.Dimensions {
	d := store.Dimensions{}
	for k, vs := range wide() {
		if len(d) < 16 {
			d[k] = vs[:4]
		}
	}
	return d
}

// TestWideDimensions: a machine of 64 keys of 64 values each and a request
// of 64 values, the API's limits, are matched in either order, on both
// stores (SQLite's expressions are at most 1,000 deep).
func TestWideDimensions(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		// The machine first: the request finds it.
		if _, err := s.AddMachine(ctx, machine("wide-1", wide())); err != nil {
			t.Fatalf("adding a machine of 64x64 dimensions: %v", err)
		}
		l, _, err := s.RequestLease(ctx, "alice", request("wide-a", asked()))
		if err != nil {
			t.Fatalf("requesting 64 dimension values with a machine available: %v", err)
		}
		if l.State != store.Fulfilled || l.Hostname != "wide-1" {
			t.Errorf("a request for 64 dimension values with such a machine available: %s on %q, want FULFILLED on wide-1", l.State, l.Hostname)
		}
		// The request first: the machine is offered to it.
		l, _, err = s.RequestLease(ctx, "alice", request("wide-b", asked()))
		if err != nil {
			t.Fatalf("requesting 64 dimension values: %v", err)
		}
		if _, err := s.AddMachine(ctx, machine("wide-2", wide())); err != nil {
			t.Fatalf("adding a machine of 64x64 dimensions with a request waiting: %v", err)
		}
		if l, err = s.Lease(ctx, l.ID); err != nil || l.State != store.Fulfilled || l.Hostname != "wide-2" {
			t.Errorf("a waiting request for 64 dimension values after such a machine was added: %s on %q (%v), want FULFILLED on wide-2", l.State, l.Hostname, err)
		}
	})
}
