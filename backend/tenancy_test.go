package backend_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestTwoDeploymentsShareAProject: two deployments (two databases, one
// SQLite and one PostgreSQL, two providers, two backends) in one project
// and zone, with identical fleet files and with fleets of different
// base_names, through many reconcile passes and audits each past its
// grace: each makes, catalogs and leases only its own instances, no
// machine is in both catalogs, none of the other's (leased ones included)
// is deleted, nor a person's instance that carries the backend's template
// label, and each plan shows nothing of the other's. A released lease
// still has its instance deleted and replaced, and only that one.
func TestTwoDeploymentsShareAProject(t *testing.T) {
	for _, tc := range []struct{ name, a, b string }{
		{"identical fleet files", tenantFleet("pool"), tenantFleet("pool")},
		{"different base_names", tenantFleet("pool-a"), tenantFleet("pool-b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, url := testutil.Emulator(t, emulator.Options{})
			a := newTenant(t, "a", url, "sqlite:"+filepath.Join(t.TempDir(), "a.db"), tc.a)
			b := newTenant(t, "b", url, testutil.PostgresURL(t), tc.b)
			if a.j.Deployment() == b.j.Deployment() {
				t.Fatalf("both deployments are %q", a.j.Deployment())
			}
			compute := a.j.Compute
			createInstance(t, compute, "pool-handmade", map[string]string{backend.TemplateLabel: "pool", "team": "web"})
			now := time.Now()
			round := func() {
				t.Helper()
				now = now.Add(time.Hour) // past the audits' grace
				a.pass(t)
				b.pass(t)
			}
			a.j.Now = func() time.Time { return now }
			b.j.Now = func() time.Time { return now }
			testutil.WaitWithin(t, 30*time.Second, "each deployment to catalog its group's two instances", func() bool {
				round()
				return len(a.hosts(t)) == 2 && len(b.hosts(t)) == 2
			})
			// One machine of each leased, by a client of each provider.
			var leases []store.Lease
			for _, tn := range []*tenant{a, b} {
				l, err := tn.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "held", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Indefinite: true}})
				if err != nil || l.State != store.Fulfilled {
					t.Fatalf("%s: lease %+v, %v", tn.name, l, err)
				}
				leases = append(leases, l)
			}
			before := zoneInstances(t, compute)
			for range 6 {
				round()
			}
			after := zoneInstances(t, compute)
			for name, in := range before {
				if got, ok := after[name]; !ok || got.GetId() != in.GetId() {
					t.Errorf("instance %s (labels %v) was deleted during passes that should change nothing", name, in.GetLabels())
				}
			}
			if _, ok := after["pool-handmade"]; !ok {
				t.Error("a person's instance with the template label was deleted")
			}
			ha, hb := a.hosts(t), b.hosts(t)
			for host := range ha {
				if _, ok := hb[host]; ok {
					t.Errorf("machine %s is in both deployments' catalogs", host)
				}
			}
			for _, tn := range []*tenant{a, b} {
				hosts := tn.hosts(t)
				if len(hosts) != 2 {
					t.Errorf("%s catalogs %d machines; want its group's 2", tn.name, len(hosts))
				}
				for host := range hosts {
					if in, ok := after[host]; !ok || in.GetLabels()[backend.DeploymentLabel] != tn.j.Deployment() {
						t.Errorf("%s catalogs %s, which is not an instance of its own (labels %v)", tn.name, host, in.GetLabels())
					}
				}
				plan, err := tn.j.Plan(ctx)
				if err != nil || len(plan) != 0 {
					t.Errorf("%s's plan once converged: %v, %v; want nothing (the other's resources are not its own)", tn.name, plan, err)
				}
			}
			for i, tn := range []*tenant{a, b} {
				if l, err := tn.alice.Lease(ctx, leases[i].ID, 0); err != nil || l.State != store.Fulfilled || after[l.Hostname] == nil {
					t.Errorf("%s's lease %+v, %v; want it fulfilled on a running instance", tn.name, l, err)
				}
			}
			if t.Failed() {
				return
			}
			// A's released machine is deleted and replaced; B's stay.
			if _, err := a.alice.Release(ctx, leases[0].ID); err != nil {
				t.Fatal(err)
			}
			testutil.WaitWithin(t, 30*time.Second, "a's released machine to be deleted and replaced", func() bool {
				round()
				_, gone := zoneInstances(t, compute)[leases[0].Hostname]
				return !gone && len(a.hosts(t)) == 2
			})
			final := zoneInstances(t, compute)
			for name, in := range before {
				if name == leases[0].Hostname {
					continue
				}
				if got, ok := final[name]; !ok || got.GetId() != in.GetId() {
					t.Errorf("instance %s (labels %v) was deleted with a's released machine", name, in.GetLabels())
				}
			}
			if hb := b.hosts(t); len(hb) != 2 || hb[leases[1].Hostname].State != store.Leased {
				t.Errorf("b's catalog after a's release: %v; want its 2 machines, %s leased", keys(hb), leases[1].Hostname)
			}
		})
	}
}
