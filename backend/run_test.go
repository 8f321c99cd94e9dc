package backend_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestFleetConverges is the backend end to end, against the emulator and
// the real provider: a fleet of two templates in three zones converges
// through faults; a lease's expiry deletes its instance and the group
// replaces it; a changed template rolls out to a new revision while the
// old one drains (its leased machine kept until released) and is deleted;
// a restart in the middle loses nothing.
func TestFleetConverges(t *testing.T) {
	f := newFleet(t, "sqlite:"+filepath.Join(t.TempDir(), "provider.db"))
	ctx := context.Background()
	linux, win := revisions(t, f.path, f.st)

	// Faults while it converges: Compute rate limits and server errors,
	// no capacity in one zone, a quota that holds the windows groups back.
	for _, fault := range []emulator.Fault{
		{Method: "compute.instanceGroupManagers.*", RateLimit: 20},
		{Method: "compute.instanceTemplates.insert", ErrorCode: 503, Count: 2},
		{Method: "compute.instanceGroupManagers.insert", ErrorCode: 500, Count: 2},
	} {
		if err := f.emu.AddFault(fault); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.emu.AddStockout(emulator.Stockout{Zone: "us-central1-c"}); err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{}, 1)
	first, reg, stop := f.startWithMetrics("one", reload)
	testutil.WaitWithin(t, time.Minute, "the zones with capacity to converge", f.converged(map[string]int{linux: 4, win: 2}, 0))
	if got, _ := f.catalog(); got[linux] != 4 {
		t.Fatalf("catalog with us-central1-c stocked out: %v", got)
	}
	stocked := "my-project/us-central1-c/" + linux
	testutil.WaitWithin(t, time.Minute, "the stocked-out group to be reported", func() bool {
		return strings.Contains(first.Jobs().Stats()[stocked].Failing, "ZONE_RESOURCE_POOL_EXHAUSTED")
	})
	if page := string(first.StatusHTML()); !strings.Contains(page, "ZONE_RESOURCE_POOL_EXHAUSTED") || !strings.Contains(page, "create-instance-templates") {
		t.Errorf("the status page does not show the stockout or the jobs:\n%s", page)
	}
	metrics := testutil.Metrics(t, reg)
	for _, want := range []string{
		`gcefleet_backend_group_failing{group="` + linux + `",zone="us-central1-c"} 1`,
		`gcefleet_backend_instances{group="` + linux + `",state="idle",zone="us-central1-a"} 2`,
		`gcefleet_compute_calls_total{code="200",method="instanceGroupManagers.listManagedInstances"}`,
		`gcefleet_compute_calls_total{code="503",method="instanceTemplates.insert"} 2`,
		`gcefleet_backend_job_seconds_count{job="catalog-instances",result="ok"}`,
		`gcefleet_backend_leader 1`,
		`gcefleet_backend_converged 0`, // us-central1-c is stocked out
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	f.emu.ClearFaults()
	testutil.WaitWithin(t, time.Minute, "us-central1-c to converge once it has capacity", f.converged(map[string]int{linux: 6, win: 2}, 0))
	testutil.WaitWithin(t, time.Minute, "the converged metric", func() bool {
		m := testutil.Metrics(t, reg)
		return strings.Contains(m, "gcefleet_backend_converged 1") && !strings.Contains(m, "gcefleet_backend_converge_seconds 0\n")
	})

	// A preempted idle instance (Spot, deleted on preemption) leaves the
	// catalog, and the group's replacement enters it.
	ms := machines(t, f.api)
	var victim store.Machine
	for _, m := range ms {
		if m.Dimensions["zone"][0] == "us-central1-b" && m.Dimensions["os"][0] == "windows" {
			victim = m
		}
	}
	if err := f.emu.Preempt("my-project", "us-central1-b", victim.Hostname); err != nil {
		t.Fatal(err)
	}
	// The group recreates it under its name, as GCE does; the catalog
	// gets the new instance's entry.
	testutil.WaitWithin(t, time.Minute, "the preempted instance's entry to be replaced by its successor's", func() bool {
		ms := machines(t, f.api)
		for _, m := range ms {
			if m.Hostname == victim.Hostname && m.Dimensions["instance_id"][0] == victim.Dimensions["instance_id"][0] {
				return false
			}
		}
		return f.converged(map[string]int{linux: 6, win: 2}, 0)()
	})
	ms = machines(t, f.api)
	for _, m := range ms {
		if m.Dimensions["os"][0] == "linux" {
			victim = m
		}
	}
	if d := victim.Dimensions; d["cpus"][0] != "2" || d["memory_gb"][0] != "8" || d["template"][0] != "linux" || d["machine_type"][0] != "e2-standard-2" {
		t.Errorf("dimensions of a cataloged machine: %v", d)
	}

	// A quota that leaves no room for a replacement: the group says so,
	// and catches up once the quota is raised.
	if err := f.emu.SetQuota("my-project", "us-central1", "INSTANCES", 7); err != nil {
		t.Fatal(err)
	}
	gone, err := f.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "quota", Dimensions: store.Dimensions{"os": {"windows"}, "zone": {"us-central1-a"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || gone.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", gone, err)
	}
	if _, err := f.alice.Release(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitWithin(t, time.Minute, "the group out of quota to be reported", func() bool {
		return strings.Contains(first.Jobs().Stats()["my-project/us-central1-a/"+win].Failing, "QUOTA_EXCEEDED")
	})
	if err := f.emu.SetQuota("my-project", "us-central1", "INSTANCES", 1000); err != nil {
		t.Fatal(err)
	}
	testutil.WaitWithin(t, time.Minute, "the group to catch up once the quota is raised", f.converged(map[string]int{linux: 6, win: 2}, 0))

	// A lease that expires: its instance is deleted and replaced.
	l, err := f.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "short", Dimensions: store.Dimensions{"os": {"windows"}}, Term: store.Term{Duration: time.Second}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	zone := l.Machine.Dimensions["zone"][0]
	testutil.WaitWithin(t, time.Minute, "the expired lease's instance to be deleted and replaced", func() bool {
		return !f.instanceExists(zone, l.Hostname) && f.converged(map[string]int{linux: 6, win: 2}, 0)()
	})

	// Demand: leasing every linux machine of us-central1-a, and asking
	// for one more, grows its group (a tenth above what is leased) until
	// the queued request is fulfilled, and no further than the maximum.
	var held store.Lease
	var demand []store.Lease
	for i := range 3 {
		l, err := f.alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("demand", i), Dimensions: store.Dimensions{"os": {"linux"}, "zone": {"us-central1-a"}}, Term: store.Term{Duration: time.Hour}})
		if err != nil {
			t.Fatal(err)
		}
		demand = append(demand, l)
	}
	if demand[2].State != store.Pending {
		t.Fatalf("third lease in a group of two: %s", demand[2].State)
	}
	testutil.WaitWithin(t, time.Minute, "the queued request to be fulfilled by a grown group", func() bool {
		l, err := f.alice.Lease(ctx, demand[2].ID, 0)
		return err == nil && l.State == store.Fulfilled
	})
	testutil.WaitWithin(t, time.Minute, "us-central1-a's linux group to grow to its maximum", func() bool {
		g, err := f.compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: linux})
		return err == nil && g.GetTargetSize() == 4
	})
	held = demand[0]
	if held.Hostname == "" {
		t.Fatalf("lease %+v", held)
	}

	// A template change, with one machine of the old revision leased, and
	// a restart of the backend in the middle of the rollout.
	f.write("e2-standard-4")
	newLinux, _ := revisions(t, f.path, f.st)
	reload <- struct{}{}
	testutil.WaitWithin(t, time.Minute, "the new revision's groups", func() bool {
		got, _ := f.catalog()
		return got[newLinux] > 0
	})
	if !first.Leader() {
		t.Fatal("the only replica does not lead")
	}
	stop()
	b, stop := f.start("two", reload)
	defer stop()
	testutil.WaitWithin(t, time.Minute, "the restarted backend to lead", b.Leader)
	if st := b.Jobs().State(); len(st.Groups) == 0 || st.Cursor == 0 {
		t.Fatalf("the restarted backend lost its state: %+v", st)
	}
	ls, err := f.alice.Leases(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.ID != held.ID {
			if _, err := f.alice.Release(ctx, l.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.WaitWithin(t, time.Minute, "the old revision to drain but for its leased machine", func() bool {
		got, leased := f.catalog()
		return leased == 1 && got[linux] == 0 && got[newLinux] == 6 && !f.groupExists("us-central1-b", linux) && !f.groupExists("us-central1-c", linux)
	})
	if !f.groupExists("us-central1-a", linux) || !f.templateExists(linux) || !f.instanceExists("us-central1-a", held.Hostname) {
		t.Fatal("the group, template or instance of a leased machine were deleted while it is leased")
	}
	if _, err := f.alice.Release(ctx, held.ID); err != nil {
		t.Fatal(err)
	}
	// The backend records a deletion once GCE has done it, so its state is
	// waited for too.
	testutil.WaitWithin(t, time.Minute, "the old revision to be deleted once its last lease ended, and the backend's state to hold 5 groups, 2 templates and nothing pending", func() bool {
		st := b.Jobs().State()
		return !f.groupExists("us-central1-a", linux) && !f.templateExists(linux) && !f.instanceExists("us-central1-a", held.Hostname) &&
			f.converged(map[string]int{newLinux: 6, win: 2}, 0)() &&
			len(st.Groups) == 5 && len(st.Templates) == 2 && len(st.Pending) == 0
	})

	// A bad file leaves the fleet alone and says why.
	testutil.WriteFile(t, f.path, []byte("templates:\n  - base_name: Bad_Name\n"))
	b.Reload(true)
	if err := b.ConfigError(); err == nil || !strings.Contains(err.Error(), "fleet.yaml:2") {
		t.Fatalf("config error %v; want one at fleet.yaml:2", err)
	}
	if len(b.Jobs().Config().Templates) != 2 || !strings.Contains(string(b.StatusHTML()), "last good one stays in force") {
		t.Fatal("a bad file replaced the configuration in force, or the status page does not say so")
	}
}

// TestReplicasElectOneLeader: two replicas on one PostgreSQL database; one
// runs the jobs, and when it stops the other takes over with its state.
func TestReplicasElectOneLeader(t *testing.T) {
	f := newFleet(t, testutil.PostgresURL(t))
	linux, win := revisions(t, f.path, f.st)
	a, stopA := f.start("a", nil)
	b, stopB := f.start("b", nil)
	defer stopB()
	testutil.WaitWithin(t, time.Minute, "the fleet to converge under one leader", f.converged(map[string]int{linux: 6, win: 2}, 0))
	if a.Leader() == b.Leader() {
		t.Fatalf("leaders: a %v, b %v; want exactly one", a.Leader(), b.Leader())
	}
	standby, stop := b, stopA
	if b.Leader() {
		standby, stop = a, stopB
	}
	if st := standby.Jobs().State(); len(st.Groups) != 0 {
		t.Errorf("the standby replica made groups: %+v", st.Groups)
	}
	calls := f.compute.Calls()
	stop()
	testutil.WaitWithin(t, time.Minute, "the standby to take over", standby.Leader)
	if st := standby.Jobs().State(); len(st.Groups) != 5 || len(st.Templates) != 2 {
		t.Errorf("the new leader's state: %d groups, %d templates; want the old leader's 5 and 2", len(st.Groups), len(st.Templates))
	}
	// It carries on: a reclaimed machine is replaced.
	l, err := f.alice.RequestLease(context.Background(), store.LeaseRequest{RequestID: "x", Dimensions: store.Dimensions{"os": {"windows"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	if _, err := f.alice.Release(context.Background(), l.ID); err != nil {
		t.Fatal(err)
	}
	zone := l.Machine.Dimensions["zone"][0]
	testutil.WaitWithin(t, time.Minute, "the new leader to replace the released machine", func() bool {
		return !f.instanceExists(zone, l.Hostname) && f.converged(map[string]int{linux: 6, win: 2}, 0)()
	})
	if f.compute.Calls() == calls {
		t.Error("the new leader made no Compute call")
	}
}
