package backend_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestTwoDatabasesOneDeploymentName: two deployments with separate
// databases but the same settings.deployment on one project. The second
// refuses the first's template, groups and instances, saying that another
// database uses the deployment's name and what to do, through passes past
// the audit's grace; it catalogs and deletes nothing, and the first's
// leased machine stays leased.
func TestTwoDatabasesOneDeploymentName(t *testing.T) {
	ctx := context.Background()
	_, url := testutil.Emulator(t, emulator.Options{})
	fleet := tenantFleet("pool") + "  deployment: ci-fleet\n"
	a := newTenant(t, "a", url, "sqlite:"+filepath.Join(t.TempDir(), "a.db"), fleet)
	now := time.Now()
	a.j.Now = func() time.Time { return now }
	testutil.WaitWithin(t, 30*time.Second, "a to catalog its group's two instances", func() bool {
		a.pass(t)
		return len(a.hosts(t)) == 2
	})
	l, err := a.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "held", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Indefinite: true}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease %+v, %v", l, err)
	}
	before := zoneInstances(t, a.j.Compute)

	b := newTenant(t, "b", url, "sqlite:"+filepath.Join(t.TempDir(), "b.db"), fleet)
	b.j.Now = func() time.Time { return now }
	var errs []error
	for range 4 {
		now = now.Add(time.Hour) // past the audit's grace
		for _, job := range []func(context.Context) error{
			b.j.CreateInstanceTemplates, b.j.CreateInstanceGroupManagers, b.j.ResizeInstanceGroups, b.j.CatalogInstances,
			b.j.DeleteInstancesPendingDeletion, b.j.RemoveCatalogedInstances, b.j.DeleteInstanceGroupManagers, b.j.DeleteInstanceTemplates, b.j.AuditInstances,
		} {
			errs = append(errs, job(ctx))
		}
		a.pass(t)
	}
	err = errors.Join(errs...)
	if err == nil || !strings.Contains(err.Error(), `another database uses the deployment name "ci-fleet"`) || !strings.Contains(err.Error(), "give each deployment its own settings.deployment") {
		t.Errorf("b's errors: %v; want that another database uses the name", err)
	}
	if st := b.j.State(); len(st.Templates)+len(st.Groups)+len(st.Pending) != 0 {
		t.Errorf("b adopted %v %v %v", st.Templates, st.Groups, st.Pending)
	}
	if hb := b.hosts(t); len(hb) != 0 {
		t.Errorf("b cataloged %v", keys(hb))
	}
	after := zoneInstances(t, a.j.Compute)
	for name, in := range before {
		if got, ok := after[name]; !ok || got.GetId() != in.GetId() {
			t.Errorf("a's instance %s was deleted", name)
		}
	}
	if got, err := a.alice.Lease(ctx, l.ID, 0); err != nil || got.State != store.Fulfilled || a.hosts(t)[l.Hostname].State != store.Leased {
		t.Errorf("a's lease %+v, %v; want it fulfilled, its machine leased", got, err)
	}
}

// TestResourcesWithoutDatabaseStayManaged: a template and group made
// before databases had identities (no database label or description)
// are still the deployment's, once its database has an identity.
func TestResourcesWithoutDatabaseStayManaged(t *testing.T) {
	ctx := context.Background()
	_, url := testutil.Emulator(t, emulator.Options{})
	fleet := tenantFleet("pool") + "  deployment: ci-fleet\n"
	compute, err := gcecompute.NewClient(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer compute.Close()
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(fleet))
	if err != nil {
		t.Fatal(err)
	}
	old := backend.NewJobs(compute, nil, cfg, slog.New(slog.DiscardHandler)) // no database: as before
	if err := old.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.CreateInstanceGroupManagers(ctx); err != nil {
		t.Fatal(err)
	}
	rev := revision(t, old, cfg.Templates[0])
	if l := templateNames(t, old)[rev].GetProperties().GetLabels(); l[backend.DatabaseLabel] != "" {
		t.Fatalf("a template made without a database carries %v", l)
	}
	a := newTenant(t, "a", url, "sqlite:"+filepath.Join(t.TempDir(), "a.db"), fleet)
	testutil.WaitWithin(t, 30*time.Second, "a to catalog the old group's two instances", func() bool {
		a.pass(t)
		return len(a.hosts(t)) == 2
	})
	if st := a.j.State(); len(st.Templates) != 1 || len(st.Groups) != 1 {
		t.Errorf("state %v %v; want the old template and group", st.Templates, st.Groups)
	}
}
