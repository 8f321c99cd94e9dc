package backend_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestDatabaseFromBeforeIdentitiesKeepsItsFleet: a provider database whose
// backend ran before deployments had identities (its state recorded a
// template and a group of the old names, its catalog their instances, one
// of them leased) is managed by the new backend: its fleet moves to this
// deployment's names as a changed template would (the idle old instance
// deleted, the leased one kept until its lease ends), and then the old
// group and template are deleted. Nothing of anyone else's in the zone is
// touched: another deployment's with the same fleet file, a group an old
// backend of another database made, and a person's instance with the
// template label.
func TestDatabaseFromBeforeIdentitiesKeepsItsFleet(t *testing.T) {
	ctx := context.Background()
	_, url := testutil.Emulator(t, emulator.Options{})
	fleet := tenantFleet("pool")
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(fleet))
	if err != nil {
		t.Fatal(err)
	}
	// The name f0dae50 gave this template: legacy names are unchanged.
	legacy := revisionIn(t, cfg.Templates[0], "")
	if legacy != "pool-6542a1f1" {
		t.Fatalf("the legacy revision name is %s; f0dae50 named it pool-6542a1f1", legacy)
	}

	// The old backend's world: its group, and another old backend's.
	db := "sqlite:" + filepath.Join(t.TempDir(), "old.db")
	other := newTenant(t, "other", url, testutil.PostgresURL(t), fleet)
	compute := other.j.Compute
	oldGroup(t, compute, "pool", legacy, 2)
	oldGroup(t, compute, "web", "web-0badc0de", 1)
	createInstance(t, compute, "pool-handmade", map[string]string{backend.TemplateLabel: "pool"})
	testutil.WaitWithin(t, 30*time.Second, "the old groups' instances to run", func() bool {
		return len(running(t, compute, legacy)) == 2 && len(running(t, compute, "web-0badc0de")) == 1
	})
	old, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	state, err := json.Marshal(map[string]any{
		"cursor":    0,
		"templates": map[string]any{"my-project/" + legacy: map[string]string{"project": "my-project", "name": legacy, "base_name": "pool"}},
		"groups": map[string]any{"my-project/us-central1-a/" + legacy: map[string]string{
			"project": "my-project", "zone": "us-central1-a", "name": legacy, "template": legacy, "base_name": "pool"}},
		"pending": map[string]any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Put(ctx, "gce-backend/state", string(state), store.Fence{}); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	// The new backend starts on that database.
	tn := newTenant(t, "upgraded", url, db, fleet)
	st := tn.j.State()
	if st.Deployment != tn.j.Deployment() || !st.Groups["my-project/us-central1-a/"+legacy].Legacy || !st.Templates["my-project/"+legacy].Legacy {
		t.Fatalf("state after the upgrade: %+v; want the old records legacy, of deployment %s", st, tn.j.Deployment())
	}
	// Its catalog, as the old backend made it.
	var batch []store.Machine
	for _, mi := range running(t, compute, legacy) {
		batch = append(batch, store.Machine{Hostname: mi.GetName(), Policies: store.Policies{OnReclaim: "DELETE"}, Dimensions: store.Dimensions{
			"os": {"linux"}, "project": {"my-project"}, "zone": {"us-central1-a"}, "template": {"pool"}, "revision": {legacy},
			"machine_type": {"e2-standard-2"}, "instance_id": {strconv.FormatUint(mi.GetId(), 10)}}})
	}
	if _, errs, err := tn.api.AddMachines(ctx, batch); err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("cataloging the old instances: %v, %v", errs, err)
	}
	held, err := tn.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "held", Dimensions: store.Dimensions{"revision": {legacy}}, Term: store.Term{Indefinite: true}})
	if err != nil || held.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", held, err)
	}

	now := time.Now()
	tn.j.Now = func() time.Time { return now }
	other.j.Now = func() time.Time { return now }
	round := func() {
		t.Helper()
		now = now.Add(time.Hour) // past the audits' grace
		tn.pass(t)
		other.pass(t)
	}
	rev := revision(t, tn.j, cfg.Templates[0])
	testutil.WaitWithin(t, 30*time.Second, "the other deployment to catalog its own two", func() bool {
		round()
		return len(other.hosts(t)) == 2
	})
	others := zoneInstances(t, compute)
	for name, in := range others {
		if in.GetLabels()[backend.DeploymentLabel] != other.j.Deployment() && name != "pool-handmade" && in.GetLabels()[backend.TemplateLabel] != "web" {
			delete(others, name) // the upgraded deployment's, old and new
		}
	}
	if len(others) != 4 {
		t.Fatalf("instances of others: %v; want the other deployment's 2, web's and the person's", keys(others))
	}
	testutil.WaitWithin(t, 30*time.Second, "the upgraded fleet to move to its new names, keeping the leased old machine", func() bool {
		round()
		hosts := tn.hosts(t)
		n := 0
		for _, m := range hosts {
			if m.Dimensions["revision"][0] == rev && m.State == store.Available {
				n++
			}
		}
		return n == 2 && len(hosts) == 3 && hosts[held.Hostname].State == store.Leased && len(running(t, compute, legacy)) == 1
	})
	if _, err := tn.alice.Release(ctx, held.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitWithin(t, 30*time.Second, "the old group and template to be deleted once the leased machine is released", func() bool {
		round()
		_, gerr := compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: legacy})
		_, terr := compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: "my-project", InstanceTemplate: legacy})
		st := tn.j.State()
		return gcecompute.Classify(gerr) == gcecompute.NotFound && gcecompute.Classify(terr) == gcecompute.NotFound && len(st.Groups) == 1 && len(st.Templates) == 1 && len(st.Pending) == 0
	})
	for range 3 {
		round()
	}
	after := zoneInstances(t, compute)
	for name, in := range others {
		if got, ok := after[name]; !ok || got.GetId() != in.GetId() {
			t.Errorf("instance %s (labels %v), not the upgraded deployment's, was deleted", name, in.GetLabels())
		}
	}
	if _, err := compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: "web-0badc0de"}); err != nil {
		t.Errorf("another old backend's group: %v", err)
	}
	if hosts := tn.hosts(t); len(hosts) != 2 {
		t.Errorf("the upgraded deployment catalogs %v; want its new group's 2", keys(hosts))
	}
	for _, tn := range []*tenant{tn, other} {
		if plan, err := tn.j.Plan(ctx); err != nil || len(plan) != 0 {
			t.Errorf("%s's plan: %v, %v; want nothing", tn.name, plan, err)
		}
	}
}
