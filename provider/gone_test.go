package provider_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestMachineGone: a backend reports its leased machine's instance gone;
// the machine leaves the catalog and its lease ends RECLAIMED, with no
// reclaimed event, so that the name can be cataloged again for a new
// instance. Another backend's machine, an unknown one and a client are
// refused. On both stores.
func TestMachineGone(t *testing.T) {
	for _, db := range []string{":memory:", testutil.PostgresURL(t)} {
		w := startOn(t, db)
		ctx := context.Background()
		for _, h := range []string{"vm-1", "vm-2"} {
			if _, err := w.gce.AddMachine(ctx, machine(h)); err != nil {
				t.Fatal(err)
			}
		}
		l, err := w.alice.RequestLease(ctx, lease("r1"))
		if err != nil || l.State != store.Fulfilled {
			t.Fatalf("lease %+v, %v", l, err)
		}
		if err := w.gce.DeleteMachine(ctx, l.Hostname); !errors.Is(err, store.ErrLeased) {
			t.Fatalf("deleting a leased machine: %v; want refused", err)
		}
		if _, err := w.other.MachineGone(ctx, l.Hostname); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("another backend's machine reported gone: %v; want not found", err)
		}
		if _, err := w.alice.MachineGone(ctx, l.Hostname); err == nil {
			t.Error("a client reported a machine gone")
		}
		if _, err := w.gce.MachineGone(ctx, "vm-9"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("an unknown machine: %v", err)
		}
		id, err := w.gce.MachineGone(ctx, l.Hostname)
		if err != nil || id != l.ID {
			t.Fatalf("gone: %q, %v; want lease %s ended", id, err, l.ID)
		}
		if got, err := w.alice.Lease(ctx, l.ID, 0); err != nil || got.State != store.Reclaimed {
			t.Errorf("lease %+v, %v; want RECLAIMED", got, err)
		}
		evs, err := w.gce.Events(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Kind != "leased" {
				t.Errorf("event %+v; want none but the lease's", e)
			}
		}
		if _, err := w.gce.AddMachine(ctx, machine(l.Hostname)); err != nil {
			t.Errorf("cataloging a new instance under the name: %v", err)
		}
		other := "vm-1"
		if l.Hostname == other {
			other = "vm-2"
		}
		if id, err := w.gce.MachineGone(ctx, other); err != nil || id != "" {
			t.Errorf("an idle machine gone: %q, %v", id, err)
		}
		ms, err := w.gce.Machines(ctx)
		if err != nil || len(ms) != 1 || ms[0].Hostname != l.Hostname || ms[0].State != store.Available {
			t.Errorf("catalog %v, %v; want the new %s only", ms, err, l.Hostname)
		}
	}
}
