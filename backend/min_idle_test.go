package backend_test

import (
	"context"
	"os"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestMinIdleRegrowsAtOnce: a group keeps min_idle machines available
// beyond those leased; when a lease takes one, the provider's leased
// event has the backend grow the group within seconds, though its jobs
// run only every minute otherwise.
func TestMinIdleRegrowsAtOnce(t *testing.T) {
	f := newFleet(t, ":memory:")
	if err := os.WriteFile(f.path, []byte(poolTemplate+`managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 1, maximum_size: 6, min_idle: 2}
settings:
  interval: 1m
`), 0o600); err != nil {
		t.Fatal(err)
	}
	b, stop := f.start("r1", nil)
	defer stop()
	ctx := context.Background()
	// Instances still booting when catalog-instances ran wait for its
	// next run (a minute): the test runs it sooner, as what is measured
	// here is the group's growth.
	idle := func(n int) func() bool {
		return func() bool {
			b.Scheduler().Kick("catalog-instances")
			got := 0
			for _, m := range machines(t, f.api) {
				if m.State == store.Available {
					got++
				}
			}
			return got >= n
		}
	}
	testutil.WaitWithin(t, 20*time.Second, "two idle machines (min_idle 2, minimum 1)", idle(2))
	var rev string
	for _, m := range machines(t, f.api) {
		rev = m.Dimensions["revision"][0]
	}
	target := func(n int32) func() bool {
		return func() bool {
			g, err := f.compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: rev})
			if err != nil {
				t.Fatal(err)
			}
			return g.GetTargetSize() == n
		}
	}
	if !target(2)() {
		t.Fatal("the group is not at 2 before the lease")
	}
	start := time.Now()
	l, err := f.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "job", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	// One leased needs ceil(1.1) = 2, plus two idle: 4.
	testutil.WaitWithin(t, 5*time.Second, "the group to grow to 4 after the lease (its jobs run every minute)", target(4))
	t.Logf("grown %v after the lease", time.Since(start).Round(time.Millisecond))
	testutil.WaitWithin(t, 20*time.Second, "two idle machines again beside the leased one", idle(2))
}
