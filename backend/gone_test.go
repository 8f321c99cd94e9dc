package backend_test

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestLeasedInstanceReplacedBehindTheBackendsBack: a leased machine's
// instance is deleted by someone outside the backend, or preempted, and
// its group recreates it under the same name with a new id. The backend
// notices the new id: the lease ends RECLAIMED (its client learns the
// machine is gone), and the new instance is cataloged as a new machine,
// with its own instance_id, available.
func TestLeasedInstanceReplacedBehindTheBackendsBack(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{
		{"deleted", tenantFleet("pool")},
		{"preempted", strings.Replace(tenantFleet("pool"), "family/debian-12\n", "family/debian-12\n    spot: true\n", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			emu, url := testutil.Emulator(t, emulator.Options{})
			a := newTenant(t, "a", url, "sqlite:"+filepath.Join(t.TempDir(), "a.db"), tc.yaml)
			testutil.WaitWithin(t, 30*time.Second, "the group's two instances to be cataloged", func() bool {
				a.pass(t)
				return len(a.hosts(t)) == 2
			})
			l, err := a.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "held", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Indefinite: true}})
			if err != nil || l.State != store.Fulfilled {
				t.Fatalf("lease %+v, %v", l, err)
			}
			old := a.hosts(t)[l.Hostname].Dimensions["instance_id"]
			if tc.name == "deleted" {
				op, err := a.j.Compute.Instances.Delete(ctx, &computepb.DeleteInstanceRequest{Project: "my-project", Zone: "us-central1-a", Instance: l.Hostname})
				if err != nil {
					t.Fatal(err)
				}
				if err := op.Wait(ctx); err != nil {
					t.Fatal(err)
				}
			} else if err := emu.Preempt("my-project", "us-central1-a", l.Hostname); err != nil {
				t.Fatal(err)
			}
			rev := revision(t, a.j, a.j.Config().Templates[0])
			var fresh string
			testutil.WaitWithin(t, 30*time.Second, "the group to recreate the instance under its name", func() bool {
				for _, mi := range running(t, a.j.Compute, rev) {
					if id := strconv.FormatUint(mi.GetId(), 10); strings.HasSuffix(mi.GetInstance(), "/"+l.Hostname) && !slices.Contains(old, id) {
						fresh = id
						return true
					}
				}
				return false
			})
			testutil.WaitWithin(t, 30*time.Second, "the new instance to be cataloged", func() bool {
				a.pass(t)
				m, ok := a.hosts(t)[l.Hostname]
				return ok && slices.Equal(m.Dimensions["instance_id"], []string{fresh})
			})
			got, err := a.alice.Lease(ctx, l.ID, 0)
			if err != nil || got.State != store.Reclaimed {
				t.Errorf("lease of the gone machine: %+v, %v; want RECLAIMED", got, err)
			}
			if m := a.hosts(t)[l.Hostname]; m.State != store.Available || m.LeaseID != "" {
				t.Errorf("the new instance is cataloged %+v; want it available, a new machine", m)
			}
			if hosts := a.hosts(t); len(hosts) != 2 {
				t.Errorf("catalog %v; want the group's 2", keys(hosts))
			}
		})
	}
}
