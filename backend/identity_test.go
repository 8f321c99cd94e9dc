package backend_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestDeploymentIdentityIsKept: a database's identity is made at the first
// start (random, or the configured name) and kept across restarts; another
// name is refused with what to do.
func TestDeploymentIdentityIsKept(t *testing.T) {
	ctx := context.Background()
	open := func(url string) *store.Store {
		t.Helper()
		st, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	path := "sqlite:" + filepath.Join(t.TempDir(), "p.db")
	st := open(path)
	if _, err := backend.StoredDeployment(ctx, st); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("identity of a new database: %v; want none", err)
	}
	id, err := backend.Deployment(ctx, st, "")
	if err != nil || !strings.HasPrefix(id, "d-") || len(id) != 14 {
		t.Fatalf("made identity %q, %v", id, err)
	}
	st.Close()
	st = open(path)
	defer st.Close()
	for _, name := range []string{"", id} {
		if again, err := backend.Deployment(ctx, st, name); err != nil || again != id {
			t.Errorf("identity after a restart, configured %q: %q, %v; want %q", name, again, err, id)
		}
	}
	_, err = backend.Deployment(ctx, st, "ci-fleet")
	if err == nil || !strings.Contains(err.Error(), `settings.deployment is "ci-fleet", but this provider database belongs to deployment "`+id+`"`) ||
		!strings.Contains(err.Error(), "set settings.deployment: "+id+" (or remove it)") {
		t.Errorf("another name: %v", err)
	}

	named := open(":memory:")
	defer named.Close()
	if id, err := backend.Deployment(ctx, named, "ci-fleet"); err != nil || id != "ci-fleet" {
		t.Errorf("a named deployment's identity: %q, %v", id, err)
	}
	if id, err := backend.Deployment(ctx, named, ""); err != nil || id != "ci-fleet" {
		t.Errorf("once the name is no longer configured: %q, %v; want the stored ci-fleet", id, err)
	}
}

// TestReplicasStartingAtOnceShareOneIdentity: replicas of one PostgreSQL
// database that start together all get the identity the first stored.
func TestReplicasStartingAtOnceShareOneIdentity(t *testing.T) {
	url := testutil.PostgresURL(t)
	// The limit bounds the wait for the replicas below.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const replicas = 8
	stores := make([]*store.Store, replicas)
	for i := range stores {
		st, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		stores[i] = st
	}
	ids := make([]string, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, st := range stores {
		wg.Go(func() {
			<-start
			ids[i], errs[i] = backend.Deployment(ctx, st, "")
		})
	}
	close(start)
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] || ids[i] == "" {
			t.Fatalf("identities %v, errors %v; want one for all", ids, errs)
		}
	}
}

// TestDeploymentSetting: settings.deployment must fit GCE labels and
// names, and the backend's own labels cannot be set by a template.
func TestDeploymentSetting(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{poolTemplate + "settings:\n  interval: 5s\n  deployment: Team_A\n", `fleet.yaml:9: settings.deployment "Team_A": lowercase letters, digits and -`},
		{poolTemplate + "settings:\n  deployment: " + strings.Repeat("a", 64) + "\n", "fleet.yaml:8: settings.deployment"},
		{poolTemplate + "settings: {deployment: a-}\n", "fleet.yaml:7: settings.deployment \"a-\""},
		{poolTemplate + "    labels: {gcefleet-deployment: other}\n", "fleet.yaml:2: template pool: label gcefleet-deployment: keys beginning gcefleet- are the backend's own"},
	} {
		if _, err := backend.ParseConfig("fleet.yaml", []byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %s", tc.yaml, err, tc.want)
		}
	}
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(poolTemplate+"settings: {deployment: ci-fleet-2}\n"))
	if err != nil || cfg.Settings.Deployment != "ci-fleet-2" {
		t.Errorf("a good name: %+v, %v", cfg.Settings, err)
	}
}

// TestRenamedDeploymentIsRefused: a running backend refuses a file that
// names another deployment, keeps the last good one and says why.
func TestRenamedDeploymentIsRefused(t *testing.T) {
	f := newFleet(t, "sqlite:"+filepath.Join(t.TempDir(), "provider.db"))
	fleet := tenantFleet("pool")
	if err := os.WriteFile(f.path, []byte(fleet), 0o600); err != nil {
		t.Fatal(err)
	}
	b, stop := f.start("one", nil)
	defer stopped(t, b) // its jobs end before the emulator's client closes
	defer stop()
	testutil.WaitWithin(t, time.Minute, "the backend to lead", b.Leader)
	id := b.Jobs().Deployment()
	if stored, err := backend.StoredDeployment(context.Background(), f.st); err != nil || stored != id {
		t.Fatalf("stored identity %q, %v; the backend's %q", stored, err, id)
	}
	if err := os.WriteFile(f.path, []byte(strings.Replace(fleet, "audit_grace: 10m", "audit_grace: 10m\n  deployment: renamed", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Reload(true)
	if err := b.ConfigError(); err == nil || !strings.Contains(err.Error(), `settings.deployment is "renamed", but this provider database belongs to deployment "`+id+`"`) {
		t.Fatalf("config error %v", err)
	}
	if b.Jobs().Deployment() != id || !strings.Contains(string(b.StatusHTML()), "Deployment "+id) {
		t.Error("the renamed file changed the deployment, or the status page does not name it")
	}
}

// TestOthersResourcesAreNotAdopted: a template or group that has the name
// this deployment's would have but is not its own (another deployment's
// label, another description) is reported and never adopted.
func TestOthersResourcesAreNotAdopted(t *testing.T) {
	ctx := context.Background()
	fleet := tenantFleet("pool")
	j, _ := jobs(t, fleet)
	rev := revision(t, j, j.Config().Templates[0])
	op, err := j.Compute.Templates.Insert(ctx, &computepb.InsertInstanceTemplateRequest{Project: "my-project", InstanceTemplateResource: &computepb.InstanceTemplate{
		Name: new(rev), Properties: &computepb.InstanceProperties{MachineType: new("e2-small"),
			Labels: map[string]string{backend.TemplateLabel: "pool", backend.DeploymentLabel: "d-other"},
			Disks: []*computepb.AttachedDisk{{Boot: new(true), AutoDelete: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
				SourceImage: new("projects/debian-cloud/global/images/family/debian-12")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	err = j.CreateInstanceTemplates(ctx)
	if err == nil || !strings.Contains(err.Error(), `carries gcefleet-deployment="d-other", and this deployment is "`+j.Deployment()+`"`) {
		t.Errorf("another deployment's template of our name: %v", err)
	}
	if st := j.State(); len(st.Templates) != 0 {
		t.Errorf("adopted %v", st.Templates)
	}

	// Another deployment (its own jobs, on the same emulator) makes its
	// template; a group of our name on it, described as not ours, is
	// refused too.
	k, _ := jobs(t, fleet)
	k.Compute = j.Compute
	if err := k.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	krev := revision(t, k, k.Config().Templates[0])
	op, err = j.Compute.Groups.Insert(ctx, &computepb.InsertInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a",
		InstanceGroupManagerResource: &computepb.InstanceGroupManager{Name: new(krev), BaseInstanceName: new("squatter"),
			InstanceTemplate: new("projects/my-project/global/instanceTemplates/" + krev), TargetSize: new(int32(0)), Description: new("a person's")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	err = k.CreateInstanceGroupManagers(ctx)
	if err == nil || !strings.Contains(err.Error(), `says "a person's"`) || !strings.Contains(err.Error(), "not this deployment's") {
		t.Errorf("a group of our name described as someone else's: %v", err)
	}
	if st := k.State(); len(st.Groups) != 0 {
		t.Errorf("adopted %v", st.Groups)
	}
}
