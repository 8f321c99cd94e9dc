package backend_test

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestReclaimedMachineIsReplaced runs the loop the backend exists for: a
// group's instances are cataloged, a client leases one and releases it,
// and the backend deletes the reclaimed instance and has the group make a
// fresh one, which is cataloged in turn.
func TestReclaimedMachineIsReplaced(t *testing.T) {
	j, _ := jobs(t, poolTemplate+`managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 2, maximum_size: 5}
`)
	ctx := context.Background()
	backendAPI, alice := providerFor(t, j)

	if err := j.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.CreateInstanceGroupManagers(ctx); err != nil {
		t.Fatal(err)
	}
	rev := revision(t, j, j.Config().Templates[0])
	cataloged := func(n int) func() bool {
		return func() bool {
			if err := j.CatalogInstances(ctx); err != nil {
				t.Fatal(err)
			}
			ms, err := backendAPI.Machines(ctx)
			return err == nil && len(ms) == n
		}
	}
	testutil.WaitFor(t, "the group's two instances to be cataloged", cataloged(2))
	ms := machines(t, backendAPI)
	if d := ms[0].Dimensions; d["os"][0] != "linux" || d["zone"][0] != "us-central1-a" || d["template"][0] != "pool" || ms[0].Connection.Address == "" {
		t.Errorf("cataloged machine %+v", ms[0])
	}

	l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: "job", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	if _, err := alice.Release(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	evs, err := backendAPI.Events(ctx, 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.UpdateCatalogedInstances(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteInstancesPendingDeletion(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.ResizeInstanceGroups(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: rev})
	if err != nil || g.GetTargetSize() != 2 {
		t.Fatalf("group after resize: %v, %v", g.GetTargetSize(), err)
	}
	testutil.WaitFor(t, "a fresh instance to be cataloged", cataloged(2))
	ms = machines(t, backendAPI)
	for _, m := range ms {
		if m.Hostname == l.Hostname {
			t.Errorf("the reclaimed machine %s is back in the catalog", l.Hostname)
		}
		if m.State != store.Available {
			t.Errorf("%s is %s", m.Hostname, m.State)
		}
	}
	if _, err := j.Compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: "my-project", Zone: "us-central1-a", Instance: l.Hostname}); err == nil {
		t.Errorf("the reclaimed instance %s still exists", l.Hostname)
	}
}

// TestRemovedManagerIsDrained: a manager that leaves the configuration has
// its group drained (a leased machine kept until its lease ends) and then
// deleted; its template, still used by another manager, stays.
func TestRemovedManagerIsDrained(t *testing.T) {
	j, _ := jobs(t, poolTemplate+`managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 1, maximum_size: 2}
  - {template_base_name: pool, zone: us-central1-b, minimum_size: 2, maximum_size: 2}
`)
	ctx := context.Background()
	api, alice := providerFor(t, j)
	pass := func(steps ...func(context.Context) error) {
		t.Helper()
		for _, step := range steps {
			if err := step(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	pass(j.CreateInstanceTemplates, j.CreateInstanceGroupManagers)
	testutil.WaitFor(t, "three machines cataloged", func() bool {
		pass(j.CatalogInstances)
		ms := machines(t, api)
		return len(ms) == 3
	})
	l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: "r", Dimensions: store.Dimensions{"zone": {"us-central1-b"}}, Term: store.Term{Indefinite: true}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	cfg := j.Config()
	cfg.Managers = cfg.Managers[:1]
	j.SetConfig(cfg)
	rev := revision(t, j, cfg.Templates[0])
	group := func() (*computepb.InstanceGroupManager, error) {
		return j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-b", InstanceGroupManager: rev})
	}
	drain := func() {
		pass(j.RemoveCatalogedInstances, j.DeleteInstancesPendingDeletion, j.DeleteInstanceGroupManagers, j.DeleteInstanceTemplates)
	}
	testutil.WaitFor(t, "the idle machine of the removed manager to be deleted", func() bool {
		drain()
		g, err := group()
		return err == nil && g.GetTargetSize() == 1
	})
	if m, err := api.Machines(ctx); err != nil || len(m) != 2 {
		t.Fatalf("catalog while draining: %d machines, %v; want the other group's and the leased one", len(m), err)
	}
	if _, err := alice.Release(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	evs, err := api.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.UpdateCatalogedInstances(ctx, evs); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the removed manager's group to be deleted", func() bool {
		drain()
		_, err := group()
		return err != nil
	})
	if _, err := j.Compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: "my-project", InstanceTemplate: rev}); err != nil {
		t.Errorf("the template, still used in us-central1-a, was deleted: %v", err)
	}
	if st := j.State(); len(st.Groups) != 1 || len(st.Pending) != 0 {
		t.Errorf("state: %d groups, %d pending; want 1 and 0", len(st.Groups), len(st.Pending))
	}
}
