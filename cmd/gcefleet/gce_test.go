package main

import (
	"context"
	"fmt"
	"log/slog"

	"path/filepath"
	"strings"
	"testing"

	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/store"
)

func startEmulator(t *testing.T) (*emulator.Emulator, string, *compute.Service) {
	t.Helper()
	emu, url := testutil.Emulator(t, emulator.Options{})
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(url+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	return emu, url, svc
}

func insert(t *testing.T, svc *compute.Service, zone, name string, labels map[string]string) {
	t.Helper()
	op, err := svc.Instances.Insert("p-gc-test", zone, &compute.Instance{
		Name: name, MachineType: "zones/" + zone + "/machineTypes/e2-small", Labels: labels,
		Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/debian-cloud/global/images/family/debian-12"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{}},
	}).Do()
	if err == nil {
		op, err = svc.ZoneOperations.Wait("p-gc-test", zone, op.Name).Do()
	}
	if err != nil || op.Error != nil {
		t.Fatalf("insert %s: %v %v", name, err, op)
	}
}

func names(t *testing.T, svc *compute.Service) string {
	t.Helper()
	agg, err := svc.Instances.AggregatedList("p-gc-test").Do()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range agg.Items {
		for _, in := range l.Instances {
			out = append(out, in.Name)
		}
	}
	return strings.Join(out, " ")
}

func TestGC(t *testing.T) {
	_, url, svc := startEmulator(t)
	ours := map[string]string{"gcefleet-role": "bigmachine", "gcefleet-run": "rold", "gcefleet-owner": "ann"}
	insert(t, svc, "us-central1-a", "bigm-rold-0001", ours)
	insert(t, svc, "us-east1-b", "bigm-rold-0002", ours)
	insert(t, svc, "us-central1-a", "bigm-rnew-0001", map[string]string{"gcefleet-role": "bigmachine", "gcefleet-run": "rnew"})
	insert(t, svc, "us-central1-a", "not-ours", map[string]string{"team": "infra"})
	env := map[string]string{"GCEFLEET_COMPUTE_ENDPOINT": url}

	code, out, stderr := runCLI(t, env, "gc", "--project", "p-gc-test")
	if code != 0 || !strings.Contains(out, "nothing to delete: 3 gcefleet instances") {
		t.Errorf("gc of young runs: exit %d, %q %q", code, out, stderr)
	}
	code, out, _ = runCLI(t, env, "gc", "--project", "p-gc-test", "--run", "rold", "--dry-run")
	if code != 0 || !strings.Contains(out, "bigm-rold-0001  us-central1-a  rold  ann") || !strings.Contains(out, "would delete 2 instances") {
		t.Errorf("dry run: exit %d:\n%s", code, out)
	}
	if got := names(t, svc); strings.Count(got, " ") != 3 {
		t.Errorf("a dry run deleted: %s", got)
	}
	code, out, stderr = runCLI(t, env, "gc", "--project", "p-gc-test", "--run", "rold")
	if code != 0 || !strings.Contains(out, "deleting 2 instances in 2 zones") {
		t.Errorf("gc --run: exit %d, %q %q", code, out, stderr)
	}
	// Age zero: every gcefleet run counts as left behind, but never an
	// instance without gcefleet's labels.
	code, out, stderr = runCLI(t, env, "gc", "--project", "p-gc-test", "--older-than", "0s")
	if code != 0 || !strings.Contains(out, "bigm-rnew-0001") || strings.Contains(out, "not-ours") {
		t.Errorf("gc --older-than 0s: exit %d, %q %q", code, out, stderr)
	}
	testutil.WaitFor(t, "gc's deletions", func() bool { return names(t, svc) == "not-ours" })
}

// TestGCSaysItRetries: under a rate limit, gc retries and says so, rather
// than waiting in silence.
func TestGCSaysItRetries(t *testing.T) {
	emu, url, svc := startEmulator(t)
	insert(t, svc, "us-central1-a", "bigm-rold-0001", map[string]string{"gcefleet-role": "bigmachine", "gcefleet-run": "rold"})
	if err := emu.AddFault(emulator.Fault{Method: "compute.instances.aggregatedList", ErrorCode: 429, Count: 5}); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, map[string]string{"GCEFLEET_COMPUTE_ENDPOINT": url}, "gc", "--project", "p-gc-test", "--older-than", "0s", "--dry-run")
	if code != 0 || !strings.Contains(out, "bigm-rold-0001") || !strings.Contains(stderr, `level=WARN msg="Compute call failing; retrying"`) || strings.Contains(stderr, "time=") {
		t.Errorf("gc under a rate limit: exit %d, %q, stderr %q", code, out, stderr)
	}
}

func TestDoctor(t *testing.T) {
	emu, url, _ := startEmulator(t)
	env := map[string]string{"GCEFLEET_COMPUTE_ENDPOINT": url}
	code, out, stderr := runCLI(t, env, "doctor", "--project", "doc-project")
	if code != 0 || !strings.Contains(out, "ok    all 14 permissions") || !strings.Contains(out, "all good") {
		t.Errorf("doctor on a healthy project: exit %d:\n%s%s", code, out, stderr)
	}
	emu.DenyPermissions("doc-project", "compute.firewalls.create", "iam.serviceAccounts.actAs")
	code, out, stderr = runCLI(t, env, "doctor", "--project", "doc-project")
	for _, want := range []string{
		"FAIL  missing compute.firewalls.create",
		"--role=roles/compute.securityAdmin",
		"FAIL  missing iam.serviceAccounts.actAs",
		"gcloud projects add-iam-policy-binding doc-project",
		"--role=roles/iam.serviceAccountUser",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 || !strings.Contains(stderr, "doctor: 2 problems") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// A project id of the wrong form is refused before any call.
	for _, bad := range []string{"My Project", "p-doc", "1234567890", "project-"} {
		code, out, stderr = runCLI(t, env, "doctor", "--project", bad)
		want := "FAIL  project \"" + bad + "\" is not a project id: 6-30 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen\n      fix: gcloud projects list (its PROJECT_ID column)\n"
		if code != 1 || out != want || stderr != "gcefleet: doctor: 1 problem\n" {
			t.Errorf("doctor --project %q: exit %d\n%s%s", bad, code, out, stderr)
		}
	}
}

func TestPlan(t *testing.T) {
	_, url, _ := startEmulator(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "fleet.yaml")
	fleet := `templates:
  - base_name: web
    project: plan-project
    dimensions: {os: linux}
    machine_type: e2-small
    image: projects/debian-cloud/global/images/family/debian-12
managers:
  - {template_base_name: web, zone: us-west1-a, minimum_size: 1, maximum_size: 3}
settings: {endpoint: "` + url + `"%s}
`
	testutil.WriteFile(t, path, []byte(fmt.Sprintf(fleet, "")))
	// Without a deployment, plan cannot tell its own from others'.
	code, _, stderr := runCLI(t, nil, "plan", "--config", path)
	if code != 1 || !strings.Contains(stderr, "names none (settings.deployment): give --database") {
		t.Errorf("plan of an unnamed deployment without --database: exit %d, %s", code, stderr)
	}
	testutil.WriteFile(t, path, []byte(fmt.Sprintf(fleet, ", deployment: plan-test")))
	code, out, stderr := runCLI(t, nil, "plan", "--config", path)
	if code != 0 || !strings.Contains(out, "create-template web-") || !strings.Contains(out, " in us-west1-a (size 1, at most 3)") {
		t.Errorf("plan: exit %d\n%s%s", code, out, stderr)
	}
	// With a provider database that holds no backend state yet, the same;
	// with one that does not exist, an error that says so.
	db := filepath.Join(dir, "gcefleet.db")
	code, _, stderr = runCLI(t, nil, "plan", "--config", path, "--database", db)
	if code != 1 || !strings.Contains(stderr, "--database "+db+": ") || !strings.Contains(stderr, "no such file") {
		t.Errorf("plan --database of a missing file: exit %d, %s", code, stderr)
	}
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, withDB, stderr := runCLI(t, nil, "plan", "--config", path, "--database", db)
	if code != 0 || withDB != out {
		t.Errorf("plan --database: exit %d\n%s%s; want what plan said without it:\n%s", code, withDB, stderr, out)
	}
	// Once serve has made the database another deployment's, plan refuses
	// this name as serve would.
	st, err = store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Deployment(context.Background(), st, "other"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, _, stderr = runCLI(t, nil, "plan", "--config", path, "--database", db)
	if code != 1 || !strings.Contains(stderr, `names deployment "plan-test", but the database `+db+` is deployment "other"'s`) {
		t.Errorf("plan of a database of another deployment: exit %d, %s", code, stderr)
	}
	// A schedule: plan says the window in force and when it changes.
	scheduled := strings.Replace(fmt.Sprintf(fleet, ", deployment: plan-test"), "maximum_size: 3}", `maximum_size: 3,
      schedules: [{days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00", time_zone: Pacific/Auckland, minimum_size: 2}]}`, 1)
	testutil.WriteFile(t, path, []byte(scheduled))
	code, out, stderr = runCLI(t, nil, "plan", "--config", path)
	if code != 1 || !strings.Contains(stderr, "the window is empty or the whole day") {
		t.Errorf("plan of a window of the whole day: exit %d\n%s%s", code, out, stderr)
	}
	testutil.WriteFile(t, path, []byte(strings.Replace(scheduled, "00:00-24:00", "00:00-12:00", 1)))
	code, out, stderr = runCLI(t, nil, "plan", "--config", path)
	// Whether the window is in force depends on the hour in Auckland:
	// either way plan names it and says when the size changes.
	if code != 0 || !strings.Contains(out, "window web in us-west1-a: ") || !strings.Contains(out, "(minimum 2, min_idle 0)") || !strings.Contains(out, "; from ") || !strings.Contains(out, "00:00-12:00 Pacific/Auckland") {
		t.Errorf("plan with a schedule: exit %d\n%s%s", code, out, stderr)
	}
	testutil.WriteFile(t, path, []byte("templates:\n  - base_name: Web\n"))
	code, _, stderr = runCLI(t, nil, "plan", "--config", path)
	if code != 1 || !strings.Contains(stderr, path+":2: base_name \"Web\"") {
		t.Errorf("plan of a bad config: exit %d, %s", code, stderr)
	}
}

// TestPlanPool: plan previews a gceboot template from what serve keeps in
// the provider's database (the fleet CA, the claim key), making neither;
// before serve made them, it says so.
func TestPlanPool(t *testing.T) {
	_, url, _ := startEmulator(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "fleet.yaml")
	testutil.WriteFile(t, path, []byte(`templates:
  - base_name: warm
    project: plan-project
    dimensions: {os: linux}
    machine_type: e2-small
    container_image: gcr.io/plan-project/gceboot:v1
    gceboot: true
    service_accounts: [{email: default, scopes: ["https://www.googleapis.com/auth/cloud-platform"]}]
managers:
  - {template_base_name: warm, zone: us-west1-a, minimum_size: 1, maximum_size: 3}
settings: {compute_endpoint: "`+url+`", deployment: plan-pool}
`))
	db := filepath.Join(dir, "gcefleet.db")
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, _, stderr := runCLI(t, nil, "plan", "--config", path, "--database", db)
	if code != 1 || !strings.Contains(stderr, "the fleet CA of gceboot templates") || !strings.Contains(stderr, "serve makes it at its first start") {
		t.Errorf("plan of a gceboot template before serve made its fleet CA: exit %d, %s", code, stderr)
	}
	st, err = store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backend.LoadFleetCA(context.Background(), st, "plan-pool"); err != nil {
		t.Fatal(err)
	}
	if _, err := provider.New(st, provider.Config{}, slog.New(slog.DiscardHandler)).ClaimKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, out, stderr := runCLI(t, nil, "plan", "--config", path, "--database", db)
	if code != 0 || !strings.Contains(out, "create-template warm-") {
		t.Errorf("plan of a gceboot template: exit %d\n%s%s", code, out, stderr)
	}
}
