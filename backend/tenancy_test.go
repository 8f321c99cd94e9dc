package backend_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	gceapi "github.com/gcefleet/gcefleet/gce"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// tenant is one deployment of several in a project: a database, a real
// provider on it, and the backend's jobs, with a Compute client of its
// own on the shared emulator.
type tenant struct {
	name  string
	j     *backend.Jobs
	st    *store.Store
	api   *client.Client // the backend's token
	alice *client.Client
	logs  *testutil.SyncBuffer
}

func newTenant(t *testing.T, name, url, dbURL, yaml string) *tenant {
	t.Helper()
	ctx := context.Background()
	compute, err := gceapi.NewClient(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { compute.Close() })
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pcfg, err := provider.ParseConfig("p.yaml", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n  - {name: alice, role: client, token: client-token-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(provider.New(st, pcfg, slog.New(slog.DiscardHandler)).Handler())
	t.Cleanup(srv.Close)
	cfg, err := backend.ParseConfig(name+".yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	tn := &tenant{name: name, st: st, logs: &testutil.SyncBuffer{},
		api:   &client.Client{BaseURL: srv.URL, Token: "backend-token-0123456789"},
		alice: &client.Client{BaseURL: srv.URL, Token: "client-token-0123456789"}}
	tn.j = backend.NewJobs(compute, tn.api, cfg, slog.New(slog.NewTextHandler(tn.logs, nil)).With("deployment", name))
	id, err := backend.Deployment(ctx, st, cfg.Settings.Deployment)
	if err != nil {
		t.Fatal(err)
	}
	tn.j.SetDeployment(id)
	if err := tn.j.LoadState(ctx, st, store.Fence{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's backend logs:\n%s", name, tn.logs.String())
		}
	})
	return tn
}

// pass runs every job once, as the scheduler does, and the event
// follower's step; the audit's grace has passed since the last pass.
func (tn *tenant) pass(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	evs, err := tn.api.Events(ctx, tn.j.State().Cursor, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.j.UpdateCatalogedInstances(ctx, evs); err != nil {
		t.Fatal(err)
	}
	for _, job := range []func(context.Context) error{
		tn.j.CreateInstanceTemplates, tn.j.CreateInstanceGroupManagers, tn.j.ResizeInstanceGroups, tn.j.CatalogInstances,
		tn.j.DeleteInstancesPendingDeletion, tn.j.RemoveCatalogedInstances, tn.j.DeleteInstanceGroupManagers, tn.j.DeleteInstanceTemplates, tn.j.AuditInstances,
	} {
		if err := job(ctx); err != nil {
			t.Fatalf("%s: %v", tn.name, err)
		}
	}
}

// hosts returns the tenant's catalog by hostname.
func (tn *tenant) hosts(t *testing.T) map[string]store.Machine {
	t.Helper()
	ms, err := tn.api.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Machine{}
	for _, m := range ms {
		out[m.Hostname] = m
	}
	return out
}

// zoneInstances returns every instance of my-project in us-central1-a.
func zoneInstances(t *testing.T, compute *gceapi.Client) map[string]*computepb.Instance {
	t.Helper()
	all, err := gceapi.All(compute.Instances.List(context.Background(), &computepb.ListInstancesRequest{Project: "my-project", Zone: "us-central1-a"}))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*computepb.Instance{}
	for _, in := range all {
		out[in.GetName()] = in
	}
	return out
}

// createInstance makes an instance by hand, as a person would.
func createInstance(t *testing.T, compute *gceapi.Client, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	op, err := compute.Instances.Insert(ctx, &computepb.InsertInstanceRequest{Project: "my-project", Zone: "us-central1-a",
		InstanceResource: &computepb.Instance{Name: new(name), MachineType: new("zones/us-central1-a/machineTypes/e2-small"), Labels: labels,
			Disks: []*computepb.AttachedDisk{{Boot: new(true), AutoDelete: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
				SourceImage: new("projects/debian-cloud/global/images/family/debian-12")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func tenantFleet(base string) string {
	return strings.Replace(poolTemplate, "base_name: pool", "base_name: "+base, 1) + `managers:
  - {template_base_name: ` + base + `, zone: us-central1-a, minimum_size: 2, maximum_size: 4}
settings:
  audit_grace: 10m
`
}

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

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
