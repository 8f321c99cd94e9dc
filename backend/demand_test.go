package backend_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// demandYAML is one template in three zones, none kept idle, and a
// minute between passes: only demand grows a group before the next.
const demandYAML = `templates:
  - base_name: linux
    project: my-project
    dimensions: {os: linux}
    machine_type: e2-standard-2
    image: projects/debian-cloud/global/images/family/debian-12
managers:
  - {template_base_name: linux, zone: us-central1-a, minimum_size: 0, maximum_size: 10}
  - {template_base_name: linux, zone: us-central1-b, minimum_size: 0, maximum_size: 10}
  - {template_base_name: linux, zone: us-central1-c, minimum_size: 0, maximum_size: 10}
settings:
  interval: 1m
`

var demandZones = []string{"us-central1-a", "us-central1-b", "us-central1-c"}

// demandFleet starts a backend on demandYAML and waits for its three
// groups to be made and its offers published.
func demandFleet(t *testing.T) (*fleet, *backend.Backend, *prometheus.Registry, func(zone string) int) {
	t.Helper()
	f := newFleet(t, "sqlite:"+filepath.Join(t.TempDir(), "provider.db"))
	if err := os.WriteFile(f.path, []byte(demandYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	b, reg, _ := f.startWithMetrics("one", nil)
	var rev string
	testutil.WaitWithin(t, 30*time.Second, "the three groups to be made", func() bool {
		rev = revisionIn(t, b.Jobs().Config().Templates[0], b.Jobs().Deployment())
		for _, z := range demandZones {
			if !f.groupExists(z, rev) {
				return false
			}
		}
		return true
	})
	size := func(zone string) int {
		mig, err := f.compute.Groups.Get(context.Background(), &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: zone, InstanceGroupManager: rev})
		if err != nil {
			t.Fatal(err)
		}
		return int(mig.GetTargetSize())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("status page:\n%s", b.StatusHTML())
		}
	})
	return f, b, reg, size
}

// request asks for n machines with os=linux as alice and returns the
// leases' ids.
func requestLinux(t *testing.T, f *fleet, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		l, err := f.alice.RequestLease(context.Background(), store.LeaseRequest{RequestID: fmt.Sprint(prefix, i),
			Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
	}
	return ids
}

// fulfilled says whether every lease of ids is, and returns their
// machines' zones.
func fulfilled(t *testing.T, f *fleet, ids []string) (bool, []string) {
	t.Helper()
	var zones []string
	for _, id := range ids {
		l, err := f.alice.Lease(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if l.State != store.Fulfilled {
			return false, nil
		}
		zones = append(zones, l.Machine.Dimensions["zone"][0])
	}
	return true, zones
}

// TestQueuedRequestGrowsOneGroupAtOnce: with a minute between passes, a
// request no machine can take grows exactly one of the three groups
// that could make it, and is fulfilled within seconds.
func TestQueuedRequestGrowsOneGroupAtOnce(t *testing.T) {
	f, b, reg, size := demandFleet(t)
	ids := requestLinux(t, f, "one-", 1)
	testutil.WaitWithin(t, 15*time.Second, "the queued request to be fulfilled, well before the next pass", func() bool {
		ok, _ := fulfilled(t, f, ids)
		return ok
	})
	grown := 0
	for _, z := range demandZones {
		if size(z) > 0 {
			grown++
		}
	}
	if grown != 1 {
		t.Errorf("%d groups grew for one request; want exactly one", grown)
	}
	// The backend offers what each group makes, with the machine type's
	// size, and how many more it may make.
	offers, err := f.api.Offers(context.Background())
	if err != nil || len(offers) != 3 {
		t.Fatalf("offers: %+v, %v", offers, err)
	}
	for _, o := range offers {
		if o.Backend != "gce" || o.Dimensions["cpus"][0] != "2" || o.Dimensions["os"][0] != "linux" || o.Dimensions["machine_type"][0] != "e2-standard-2" || o.Room < 8 {
			t.Errorf("offer %+v", o)
		}
	}
	if m := testutil.Metrics(t, reg); !strings.Contains(m, `gcefleet_backend_group_demand{group="`) {
		t.Errorf("metrics lack the demand assigned per group:\n%s", m)
	}
	if page := string(b.StatusHTML()); !strings.Contains(page, "<th>demand</th>") {
		t.Errorf("the status page lacks the demand column:\n%s", page)
	}
}

// TestStockoutSendsDemandElsewhere: requests assigned to a zone that has
// no capacity go to the zones that have, at once.
func TestStockoutSendsDemandElsewhere(t *testing.T) {
	f, _, _, _ := demandFleet(t)
	if err := f.emu.AddStockout(emulator.Stockout{Zone: "us-central1-a"}); err != nil {
		t.Fatal(err)
	}
	ids := requestLinux(t, f, "stock-", 3)
	var zones []string
	testutil.WaitWithin(t, 20*time.Second, "the requests to be fulfilled in the zones with capacity", func() bool {
		var ok bool
		ok, zones = fulfilled(t, f, ids)
		return ok
	})
	for _, z := range zones {
		if z == "us-central1-a" {
			t.Errorf("a machine of the stocked-out zone: %v", zones)
		}
	}
	if !strings.Contains(f.logs.String(), "ZONE_RESOURCE_POOL_EXHAUSTED") {
		t.Logf("the stockout was not met (demand never went to us-central1-a): %v", zones)
	}
}

// TestRequestQueuedBeforeTheGroupsExist: a request that waits when the
// backend starts grows a group as soon as the groups are made, not at
// the next pass.
func TestRequestQueuedBeforeTheGroupsExist(t *testing.T) {
	f := newFleet(t, "sqlite:"+filepath.Join(t.TempDir(), "provider.db"))
	if err := os.WriteFile(f.path, []byte(demandYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := requestLinux(t, f, "early-", 2)
	f.start("one", nil)
	testutil.WaitWithin(t, 15*time.Second, "the early requests to be fulfilled, well before the next pass", func() bool {
		ok, _ := fulfilled(t, f, ids)
		return ok
	})
}
