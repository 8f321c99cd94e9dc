package main

import (
	"bytes"
	"context"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestGCRefusesAnInstanceWithoutARun: an instance a list of bigmachine
// instances finds but that names no run is not gc's to delete; gc says so,
// fails, and still deletes the runs' instances beside it.
func TestGCRefusesAnInstanceWithoutARun(t *testing.T) {
	_, url, svc := startEmulator(t)
	insert(t, svc, "us-central1-a", "bigm-rold-0001", map[string]string{"gcefleet-role": "bigmachine", "gcefleet-run": "rold"})
	insert(t, svc, "us-central1-a", "bigm-norun", map[string]string{"gcefleet-role": "bigmachine"})
	code, out, stderr := runCLI(t, map[string]string{"GCEFLEET_COMPUTE_ENDPOINT": url}, "gc", "--project", "p-gc-test", "--older-than", "0s")
	if code == 0 || !strings.Contains(stderr, "refusing to delete bigm-norun: it carries no gcefleet-run label") {
		t.Errorf("gc of an instance without a run: exit %d, %q, stderr %q", code, out, stderr)
	}
	testutil.WaitFor(t, "gc's deletion of bigm-rold-0001", func() bool { return names(t, svc) == "bigm-norun" })
}

// TestGCDeletesFirewallRulesOfRunsThatAreGone: a killed run leaves its
// firewall rule bigm-RUN behind. gc deletes it once the run has no instance
// left and the rule is older than --older-than, says in a dry run why a
// younger run is kept, keeps a live run's rule, and never touches a rule
// gcefleet did not make, however like ours its name is.
func TestGCDeletesFirewallRulesOfRunsThatAreGone(t *testing.T) {
	var mu sync.Mutex
	var offset time.Duration
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return time.Now().Add(offset)
	}
	_, url := testutil.Emulator(t, emulator.Options{Now: now})
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(url+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	rule := func(name, desc string, tags ...string) {
		t.Helper()
		op, err := svc.Firewalls.Insert("p-gc-test", &compute.Firewall{Name: name, Description: desc, TargetTags: tags,
			SourceRanges: []string{"192.0.2.1/32"}, Allowed: []*compute.FirewallAllowed{{IPProtocol: "tcp", Ports: []string{"8443"}}}}).Do()
		if err == nil {
			op, err = svc.GlobalOperations.Wait("p-gc-test", op.Name).Do()
		}
		if err != nil || op.Error != nil {
			t.Fatalf("insert firewall %s: %v %v", name, err, op)
		}
	}
	ours := func(run, owner string) string {
		return "gcefleet run " + run + " of " + owner + ": the driver reaches its machines"
	}
	// Three hours ago: a killed run's rule, one an older gcefleet made, a
	// live run's, and two that are not gcefleet's.
	mu.Lock()
	offset = -3 * time.Hour
	mu.Unlock()
	rule("bigm-rdead", ours("rdead", "ann"), "bigm-rdead")
	rule("bigm-rb0b", "gcefleet bigmachine run rb0b: the driver reaches its machines", "bigm-rb0b")
	rule("bigm-rc0de", ours("rc0de", "bob"), "bigm-rc0de")
	rule("bigm-ra11", "ssh for the build machines", "bigm-ra11")
	rule("bigm-rfee", ours("rfee", "eve"), "web")
	// Now: the live run's instance, and a rule of a run just begun.
	mu.Lock()
	offset = 0
	mu.Unlock()
	insert(t, svc, "us-central1-a", "bigm-rc0de-0001", map[string]string{"gcefleet-role": "bigmachine", "gcefleet-run": "rc0de", "gcefleet-owner": "bob"})
	rule("bigm-rbeef", ours("rbeef", "ann"), "bigm-rbeef")
	env := map[string]string{"GCEFLEET_COMPUTE_ENDPOINT": url}
	// Ages are to the second of a creation timestamp.
	ages := regexp.MustCompile(`\b(3h0m)?[0-9]s\b`)

	code, out, stderr := runCLI(t, env, "gc", "--project", "p-gc-test", "--older-than", "1h", "--dry-run")
	want := `keeping firewall rule bigm-rbeef: run rbeef has no instance left, but the rule is AGE old, younger than --older-than 1h0m0s
keeping run rc0de: its newest instance is AGE old, younger than --older-than 1h0m0s
FIREWALL RULE  RUN    OWNER  AGE
bigm-rb0b      rb0b          AGE
bigm-rdead     rdead  ann    AGE
dry run: would delete 0 instances and 2 firewall rules
`
	if got := ages.ReplaceAllString(out, "AGE"); code != 0 || got != want {
		t.Errorf("gc --dry-run: exit %d, stderr %q, output:\n%s\nwant:\n%s", code, stderr, got, want)
	}
	if got := firewalls(t, svc); got != "bigm-ra11 bigm-rb0b bigm-rbeef bigm-rc0de bigm-rdead bigm-rfee" {
		t.Errorf("a dry run deleted firewall rules: %s left", got)
	}

	code, out, stderr = runCLI(t, env, "gc", "--project", "p-gc-test", "--older-than", "1h")
	if !strings.HasSuffix(out, "\ndeleted 2 firewall rules (bigm-rb0b, bigm-rdead)\n") || code != 0 {
		t.Errorf("gc: exit %d, stderr %q, output:\n%s", code, stderr, out)
	}
	if got := firewalls(t, svc); got != "bigm-ra11 bigm-rbeef bigm-rc0de bigm-rfee" {
		t.Errorf("after gc: firewall rules %s, want the live, young and others' rules", got)
	}

	// A run gc deletes loses its rule with its instances, once they are gone.
	code, out, stderr = runCLI(t, env, "gc", "--project", "p-gc-test", "--run", "rc0de")
	if !strings.HasSuffix(out, "\ndeleted 1 instance in 1 zone and 1 firewall rule (bigm-rc0de)\n") || code != 0 {
		t.Errorf("gc --run: exit %d, stderr %q, output:\n%s", code, stderr, out)
	}
	if got := firewalls(t, svc) + "; instances: " + names(t, svc); got != "bigm-ra11 bigm-rbeef bigm-rfee; instances: " {
		t.Errorf("after gc --run: firewall rules %s", got)
	}
}

// firewalls lists the project's firewall rules by name.
func firewalls(t *testing.T, svc *compute.Service) string {
	t.Helper()
	l, err := svc.Firewalls.List("p-gc-test").Do()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range l.Items {
		out = append(out, f.Name)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestGCShowsProgress: while GCE takes its time deleting (here, a
// container that ignores SIGTERM until the stop grace ends), gc says how
// many instances are left and how long it has waited, then what it
// deleted.
func TestGCShowsProgress(t *testing.T) {
	_, url := testutil.Emulator(t, emulator.Options{Images: map[string]string{"gcr.io/p-gc-test/stubborn": "/bin/sh"}, StopGrace: 2 * time.Second})
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(url+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	decl := "spec:\n  containers:\n  - name: s\n    image: gcr.io/p-gc-test/stubborn\n    args: [\"-c\", \"trap '' TERM; sleep 60\"]\n  restartPolicy: Never\n"
	zone := "us-central1-a"
	op, err := svc.Instances.Insert("p-gc-test", zone, &compute.Instance{
		Name: "bigm-rslow-0001", MachineType: "zones/" + zone + "/machineTypes/e2-small",
		Labels:            map[string]string{"gcefleet-role": "bigmachine", "gcefleet-run": "rslow"},
		Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{}},
		Metadata:          &compute.Metadata{Items: []*compute.MetadataItems{{Key: "gce-container-declaration", Value: &decl}}},
	}).Do()
	if err == nil {
		op, err = svc.ZoneOperations.Wait("p-gc-test", zone, op.Name).Do()
	}
	if err != nil || op.Error != nil {
		t.Fatalf("insert: %v %v", err, op)
	}
	var out, errb bytes.Buffer
	env := map[string]string{"GCEFLEET_COMPUTE_ENDPOINT": url}
	e := &environ{stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }, progress: 200 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if code := run(ctx, e, []string{"gc", "--project", "p-gc-test", "--run", "rslow"}); code != 0 {
		t.Fatalf("gc: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "gc: waiting for GCE to delete 1 instance: 1 left (") {
		t.Errorf("gc said no progress while GCE deleted for 2s; stderr:\n%s", errb.String())
	}
	if !strings.Contains(out.String(), "deleted 1 instance") {
		t.Errorf("gc did not end with what it deleted:\n%s", out.String())
	}
	if got := names(t, svc); got != "" {
		t.Errorf("left after gc: %q", got)
	}
}
