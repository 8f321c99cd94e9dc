package backend_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
	"github.com/prometheus/client_golang/prometheus"
)

func jobs(t *testing.T, yaml string) (*backend.Jobs, *emulator.Emulator) {
	t.Helper()
	emu, url := testutil.Emulator(t, emulator.Options{})
	c, err := gcecompute.NewClient(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return backend.NewJobs(c, nil, cfg, slog.New(slog.DiscardHandler)), emu
}

func templateNames(t *testing.T, j *backend.Jobs) map[string]*computepb.InstanceTemplate {
	t.Helper()
	out := map[string]*computepb.InstanceTemplate{}
	it := j.Compute.Templates.List(context.Background(), &computepb.ListInstanceTemplatesRequest{Project: "my-project"})
	for {
		tm, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[tm.GetName()] = tm
	}
}

const good = `templates:
  - base_name: linux-8
    project: my-project
    dimensions: {os: linux, pool: ci}
    machine_type: e2-standard-8
    image: projects/debian-cloud/global/images/family/debian-12
    disk: {type: pd-balanced, size_gb: 50}
    labels: {team: infra}
  - base_name: workers
    project: my-project
    dimensions: {os: cos}
    machine_type: n2-highmem-16
    container_image: gcr.io/my-project/worker:v3
    spot: true
managers:
  - {template_base_name: linux-8, zone: us-central1-a, minimum_size: 2, maximum_size: 10}
  - {template_base_name: linux-8, zone: us-central1-b, minimum_size: 0, maximum_size: 10}
  - {template_base_name: workers, zone: europe-west1-b, minimum_size: 1, maximum_size: 1000}
settings:
  interval: 30s
`

// poolTemplate is a backend config's one template, pool, in my-project.
const poolTemplate = `templates:
  - base_name: pool
    project: my-project
    dimensions: {os: linux}
    machine_type: e2-standard-2
    image: projects/debian-cloud/global/images/family/debian-12
`

// providerFor serves a provider on an in-memory store for j's backend, and
// returns its clients: the backend's and alice's.
func providerFor(t *testing.T, j *backend.Jobs) (backendAPI, alice *client.Client) {
	t.Helper()
	cfg, err := provider.ParseConfig("p.yaml", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n  - {name: alice, role: client, token: client-token-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(provider.New(st, cfg, slog.New(slog.DiscardHandler)).Handler())
	t.Cleanup(srv.Close)
	backendAPI = &client.Client{BaseURL: srv.URL, Token: "backend-token-0123456789"}
	j.Provider = backendAPI
	return backendAPI, &client.Client{BaseURL: srv.URL, Token: "client-token-0123456789"}
}

// fleet is the world of an end-to-end backend test: the emulator, a real
// provider on a real store, and the config file the backend reads.
type fleet struct {
	t       *testing.T
	emu     *emulator.Emulator
	compute *gcecompute.Client
	st      *store.Store
	api     *client.Client // the backend's token
	alice   *client.Client
	path    string
	logs    *testutil.SyncBuffer
}

const fleetYAML = `templates:
  - base_name: linux
    project: my-project
    dimensions: {os: linux}
    machine_type: %s
    image: projects/debian-cloud/global/images/family/debian-12
  - base_name: win
    project: my-project
    dimensions: {os: windows}
    machine_type: e2-standard-2
    image: projects/debian-cloud/global/images/family/debian-12
    spot: true
managers:
  - {template_base_name: linux, zone: us-central1-a, minimum_size: 2, maximum_size: 4}
  - {template_base_name: linux, zone: us-central1-b, minimum_size: 2, maximum_size: 4}
  - {template_base_name: linux, zone: us-central1-c, minimum_size: 2, maximum_size: 4}
  - {template_base_name: win, zone: us-central1-a, minimum_size: 1, maximum_size: 2}
  - {template_base_name: win, zone: us-central1-b, minimum_size: 1, maximum_size: 2}
settings:
  interval: 1s
`

func newFleet(t *testing.T, dbURL string) *fleet {
	t.Helper()
	ctx := context.Background()
	emu, url := testutil.Emulator(t, emulator.Options{})
	compute, err := gcecompute.NewClient(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { compute.Close() })
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, err := provider.ParseConfig("p.yaml", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n  - {name: alice, role: client, token: client-token-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := provider.New(st, cfg, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	pctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go p.Run(pctx) // lease expiry
	f := &fleet{t: t, emu: emu, compute: compute, st: st,
		api:   &client.Client{BaseURL: srv.URL, Token: "backend-token-0123456789"},
		alice: &client.Client{BaseURL: srv.URL, Token: "client-token-0123456789"},
		path:  filepath.Join(t.TempDir(), "fleet.yaml"), logs: &testutil.SyncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			ms, err := f.api.Machines(context.Background())
			if err != nil {
				t.Logf("catalog at the end: %v", err)
			}
			var b strings.Builder
			for _, m := range ms {
				fmt.Fprintf(&b, "  %s %s %v\n", m.Hostname, m.State, m.Dimensions["revision"])
			}
			t.Logf("catalog at the end:\n%s", b.String())
			t.Logf("backend logs:\n%s", f.logs.String())
		}
	})
	f.write("e2-standard-2")
	return f
}

func (f *fleet) write(linuxType string) {
	if err := os.WriteFile(f.path, []byte(fmt.Sprintf(fleetYAML, linuxType)), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// start runs a backend replica until the returned func is called.
func (f *fleet) start(replica string, reload chan struct{}) (*backend.Backend, func()) {
	b, _, stop := f.startWithMetrics(replica, reload)
	return b, stop
}

func (f *fleet) startWithMetrics(replica string, reload chan struct{}) (*backend.Backend, *prometheus.Registry, func()) {
	f.t.Helper()
	cfg, err := backend.LoadConfig(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	reg := prometheus.NewRegistry()
	b := backend.Run(ctx, cfg, f.compute, f.api, backend.Options{ConfigPath: f.path, Reload: reload, Store: f.st, Replica: replica, LeaderTTL: 3 * time.Second, Registry: reg},
		slog.New(slog.NewTextHandler(f.logs, nil)).With("replica", replica))
	return b, reg, cancel
}

// catalog counts the idle cataloged machines by revision, and the leased ones.
func (f *fleet) catalog() (byRevision map[string]int, leased int) {
	ms, err := f.api.Machines(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	byRevision = map[string]int{}
	for _, m := range ms {
		if m.State == store.Leased {
			leased++
			continue
		}
		byRevision[m.Dimensions["revision"][0]]++
	}
	return byRevision, leased
}

func (f *fleet) converged(want map[string]int, leased int) func() bool {
	return func() bool {
		got, l := f.catalog()
		if l != leased || len(got) != len(want) {
			return false
		}
		for rev, n := range want {
			if got[rev] != n {
				return false
			}
		}
		return true
	}
}

func (f *fleet) exists(get func() error) bool {
	err := get()
	if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fleet) instanceExists(zone, name string) bool {
	return f.exists(func() error {
		_, err := f.compute.Instances.Get(context.Background(), &computepb.GetInstanceRequest{Project: "my-project", Zone: zone, Instance: name})
		return err
	})
}

func (f *fleet) groupExists(zone, name string) bool {
	return f.exists(func() error {
		_, err := f.compute.Groups.Get(context.Background(), &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: zone, InstanceGroupManager: name})
		return err
	})
}

func (f *fleet) templateExists(name string) bool {
	return f.exists(func() error {
		_, err := f.compute.Templates.Get(context.Background(), &computepb.GetInstanceTemplateRequest{Project: "my-project", InstanceTemplate: name})
		return err
	})
}

// revisions names the fleet's revisions in its deployment: the one its
// backend gets from the store (made there by the first to ask).
func revisions(t *testing.T, path string, st *store.Store) (linux, win string) {
	t.Helper()
	cfg, err := backend.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := backend.Deployment(context.Background(), st, cfg.Settings.Deployment)
	if err != nil {
		t.Fatal(err)
	}
	return revisionIn(t, cfg.Templates[0], id), revisionIn(t, cfg.Templates[1], id)
}

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
	compute, err := gcecompute.NewClient(ctx, url)
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
func zoneInstances(t *testing.T, compute *gcecompute.Client) map[string]*computepb.Instance {
	t.Helper()
	all, err := gcecompute.All(compute.Instances.List(context.Background(), &computepb.ListInstancesRequest{Project: "my-project", Zone: "us-central1-a"}))
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
func createInstance(t *testing.T, compute *gcecompute.Client, name string, labels map[string]string) {
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

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// oldGroup makes a template and a group as the backend did before
// deployments had identities (f0dae50): named by the revision alone,
// labelled with the template label only, the group described by its
// base_name.
func oldGroup(t *testing.T, compute *gcecompute.Client, base, rev string, size int32) {
	t.Helper()
	ctx := context.Background()
	hash := rev[len(rev)-8:]
	op, err := compute.Templates.Insert(ctx, &computepb.InsertInstanceTemplateRequest{Project: "my-project", InstanceTemplateResource: &computepb.InstanceTemplate{
		Name: new(rev), Description: new("gcefleet backend template " + base),
		Properties: &computepb.InstanceProperties{
			MachineType: new("e2-standard-2"),
			Labels:      map[string]string{backend.TemplateLabel: base, backend.RevisionLabel: hash},
			Disks: []*computepb.AttachedDisk{{Boot: new(true), AutoDelete: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
				SourceImage: new("projects/debian-cloud/global/images/family/debian-12")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("us-central1-a"))
	op, err = compute.Groups.Insert(ctx, &computepb.InsertInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a",
		InstanceGroupManagerResource: &computepb.InstanceGroupManager{
			Name: new(rev), BaseInstanceName: new(rev + "-" + hex.EncodeToString(sum[:2])),
			InstanceTemplate: new("projects/my-project/global/instanceTemplates/" + rev),
			TargetSize:       new(size), Description: new("gcefleet backend manager of " + base)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// running returns the running instances of group name.
func running(t *testing.T, compute *gcecompute.Client, name string) []*computepb.ManagedInstance {
	t.Helper()
	mis, err := gcecompute.All(compute.Groups.ListManagedInstances(context.Background(), &computepb.ListManagedInstancesInstanceGroupManagersRequest{
		Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: name}))
	if err != nil {
		t.Fatal(err)
	}
	var out []*computepb.ManagedInstance
	for _, mi := range mis {
		if mi.GetInstanceStatus() == "RUNNING" && mi.GetCurrentAction() == "NONE" {
			out = append(out, mi)
		}
	}
	return out
}

// revision is j's revision of tmpl; the test fails if it cannot be
// computed.
func revision(t testing.TB, j *backend.Jobs, tmpl backend.Template) string {
	t.Helper()
	rev, err := j.Revision(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// revisionIn is tmpl's revision in deployment; the test fails if it
// cannot be computed.
func revisionIn(t testing.TB, tmpl backend.Template, deployment string) string {
	t.Helper()
	rev, err := tmpl.Revision(deployment)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// machines is the provider's catalog as c sees it; the test fails if it
// cannot be read.
func machines(t testing.TB, c *client.Client) []store.Machine {
	t.Helper()
	ms, err := c.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// plan is what j would change; the test fails if it cannot say.
func plan(t testing.TB, j *backend.Jobs) []backend.Change {
	t.Helper()
	changes, err := j.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return changes
}

// closed waits for ch to be closed, and fails the test if it is not
// within the limit.
func closed(t testing.TB, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("waited %v for %s", within, what)
	}
}

// stopped waits, once b's context has ended, for b to stop; the test
// fails if it does not within a minute.
func stopped(t testing.TB, b *backend.Backend) {
	t.Helper()
	done := make(chan struct{})
	go func() { b.Wait(); close(done) }()
	closed(t, done, time.Minute, "the backend to stop once its context ended")
}
