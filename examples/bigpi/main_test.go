package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestBigpi runs the example as a user would and checks what it prints.
func TestBigpi(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	cmd := exec.Command(bin, "-nmach=3", "-samples=2e7")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bigpi: %v\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`π ≈ ([0-9.]+)  error [-+0-9.e]+  \(20000000 samples on 3 local machines in .*samples/s\)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("output %q", out)
	}
	pi, _ := strconv.ParseFloat(m[1], 64)
	// With 2e7 samples the standard error is about 4e-4; allow 10 of them.
	if math.Abs(pi-math.Pi) > 4e-3 {
		t.Errorf("estimate %v is too far from π", pi)
	}
	for _, want := range []string{"starting 3 local machines", "3 machines running", "sampled 100.0%"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestBigpiOneMachine: one machine is "1 machine", not "1 machines".
func TestBigpiOneMachine(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	cmd := exec.Command(bin, "-nmach=1", "-samples=1e6")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bigpi: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(string(out), "samples on 1 local machine in ") {
		t.Errorf("output %q", out)
	}
	for _, want := range []string{"starting 1 local machine...\n", "\n1 machine running after "} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if text := string(out) + stderr.String(); strings.Contains(text, "1 machines") || strings.Contains(text, "1 local machines") {
		t.Errorf("bigpi counts one machine in the plural:\n%s%s", out, stderr.String())
	}
}

func TestBigpiBadFlags(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-samples=lots"}, 2, `-samples "lots" is not a whole number`},
		{[]string{"-nmach=0"}, 2, "need at least one machine"},
		{[]string{"-system=cloud"}, 2, `unknown -system "cloud"`},
		{[]string{"-system=gce", "-gce.project="}, 2, "no project: set -gce.project"},
		{[]string{"-start-timeout=0s"}, 2, "-start-timeout 0s: give a positive duration"},
		{[]string{"-system=pool", "-pool.provider="}, 2, "no provider: set -pool.provider or GCEFLEET_PROVIDER"},
		{[]string{"-system=pool", "-pool.provider=http://127.0.0.1:1", "-pool.token=t", "-pool.lease=1s"}, 2, "lease 1s: give a term of 10s to 24h0m0s (-pool.lease)"},
		{[]string{"-system=pool", "-pool.dim=cpus"}, 2, `invalid value "cpus" for flag -pool.dim: want KEY=VALUE`},
		{[]string{"-system=pool", "-pool.dim=os=linux,cpus=2"}, 2, `one KEY=VALUE each -pool.dim; repeat the flag for more`},
		{[]string{"-no-such-flag"}, 2, "bigpi: flag provided but not defined: -no-such-flag\nbigpi -help lists the flags."},
		{[]string{"-system=pool", "-pool.provider="}, 2, "bigpi: no token"}, // the second problem, on its own line
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = withoutGcefleet(os.Environ())
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.msg) {
			t.Errorf("bigpi %v: exit %d, %q; want exit %d and %q", tc.args, cmd.ProcessState.ExitCode(), out, tc.code, tc.msg)
		}
		// The mistake is what the user sees: every line is bigpi's
		// word on it, not the usage.
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if !strings.HasPrefix(line, "bigpi") {
				t.Errorf("bigpi %v: a line not of bigpi's: %q in\n%s", tc.args, line, out)
				break
			}
		}
	}
	cmd := exec.Command(bin, "-help")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Usage: bigpi [flags]") || !strings.Contains(string(out), "-pool.dim") {
		t.Errorf("bigpi -help: %v\n%s", err, out)
	}
}

// withoutGcefleet is env without the variables bigpi reads its defaults
// from, so that the test's environment does not answer for the flags.
func withoutGcefleet(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "GCEFLEET_") && !strings.HasPrefix(kv, "BIGPI_") {
			out = append(out, kv)
		}
	}
	return out
}

// TestBigpiOnGCE runs bigpi with -system=gce against the Compute Engine
// emulator, whose instances run gceboot as local processes: the driver
// ships itself to them, and every instance and the firewall rule are gone
// when it exits.
func TestBigpiOnGCE(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	_, url := testutil.Emulator(t, emulator.Options{Images: map[string]string{"gcr.io/pi-project/gceboot": boot}})

	cmd := exec.Command(bin, "-system=gce", "-nmach=2", "-samples=2e7",
		"-gce.compute-endpoint="+url, "-gce.project=pi-project", "-gce.zones=us-west1-b",
		"-gce.image=gcr.io/pi-project/gceboot:v1", "-gce.machine-type=e2-standard-4")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bigpi: %v\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`π ≈ ([0-9.]+) .*\(20000000 samples on 2 gce machines in `).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("output %q\n%s", out, stderr.String())
	}
	if pi, _ := strconv.ParseFloat(m[1], 64); math.Abs(pi-math.Pi) > 4e-3 {
		t.Errorf("estimate %v is too far from π", pi)
	}
	run := regexp.MustCompile(`run (r[0-9a-f]+): instances are labelled gcefleet-run=`).FindStringSubmatch(stderr.String())
	if run == nil {
		t.Fatalf("bigpi did not name its run:\n%s", stderr.String())
	}

	ctx := context.Background()
	svc, err := compute.NewService(ctx, option.WithEndpoint(url+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	left, err := svc.Instances.List("pi-project", "us-west1-b").Do()
	if err != nil || len(left.Items) != 0 {
		t.Errorf("instances left after bigpi: %v, %v", left, err)
	}
	fws, err := svc.Firewalls.List("pi-project").Do()
	if err != nil || len(fws.Items) != 0 {
		t.Errorf("firewall rules left after bigpi: %v, %v", fws, err)
	}
	// The operations tell what happened: one bulkInsert of both machines
	// (their metadata holds nothing per machine: no setMetadata), and both
	// deleted.
	ops, err := svc.ZoneOperations.List("pi-project", "us-west1-b").Do()
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, op := range ops.Items {
		if op.Error == nil {
			count[op.OperationType]++
		}
	}
	if count["bulkInsert"] != 1 || count["setMetadata"] != 0 || count["delete"] != 2 {
		t.Errorf("operations by type: %v; want 1 bulkInsert, no setMetadata, 2 delete", count)
	}
}

// TestBigpiOnGCEBadImage: with an image that no instance can run, bigpi
// says how the start goes while it waits, then fails soon, long before its
// start timeout, saying why from the instances' serial ports, and leaves
// no instance behind.
func TestBigpiOnGCEBadImage(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	_, url := testutil.Emulator(t, emulator.Options{Images: map[string]string{"gcr.io/pi-project/gceboot": boot}})

	cmd := exec.Command(bin, "-system=gce", "-nmach=2", "-start-timeout=2m",
		"-gce.endpoint="+url, "-gce.project=pi-project", "-gce.zones=us-west1-b", "-gce.image=gcr.io/pi-project/gcebot:v1")
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("bigpi with a wrong image: %v\n%s", err, out)
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("bigpi took %v to fail with an image no instance can run: it waited for the start timeout\n%s", took, out)
	}
	if !regexp.MustCompile(`\n  0 of 2 machines running, 2 starting, 0 failed \([56]s\)\n`).Match(out) {
		t.Errorf("no progress while the machines did not start:\n%s", out)
	}
	for _, want := range []string{
		"bigpi: bigmachine: 0 of 2 machines started:\n  machine ",
		"warning: -gce.endpoint is deprecated: use -gce.compute-endpoint", // the old name still works
		"its container did not start: ",
		"its console ended with:",
		`konlet: image "gcr.io/pi-project/gcebot:v1" is not known to the emulator`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(url+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	if l, err := svc.Instances.List("pi-project", "us-west1-b").Do(); err != nil || len(l.Items) != 0 {
		t.Errorf("instances after a failed start: %v, %v", l, err)
	}
}
