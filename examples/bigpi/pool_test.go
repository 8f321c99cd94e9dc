package main

import (
	"context"
	"math"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
)

const (
	poolProject = "pool-project"
	poolZone    = "us-east1-b"
	poolImage   = "gcr.io/pool-project/gceboot"
)

// poolWorld is a fleet of warm gceboot machines on the emulator: `gcefleet
// serve` with a provider and a GCE Backend whose one group's template has
// gceboot: true, and bigpi built to lease from it.
type poolWorld struct {
	emu          *emulator.Emulator
	bigpi        string
	url          string // the provider's
	admin, alice *client.Client
	svc          *compute.Service
	out          *testutil.SyncBuffer // what the instances print
}

func newPoolWorld(t *testing.T, minimum, maximum int) *poolWorld {
	t.Helper()
	w := &poolWorld{bigpi: testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi"), out: &testutil.SyncBuffer{}}
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	gcefleet := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gcefleet")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance output:\n%s", w.out)
		}
	})
	emu, emuURL := testutil.Emulator(t, emulator.Options{Images: map[string]string{poolImage: boot}, ProcessOutput: w.out, StopGrace: 2 * time.Second})
	w.emu = emu
	fleet := testutil.PoolFleet(emuURL, poolProject, poolZone, poolImage+":v1", minimum, maximum)
	w.url = testutil.ServeProvider(t, gcefleet, fleet)
	w.admin = &client.Client{BaseURL: w.url, Token: testutil.FleetAdminToken}
	w.alice = &client.Client{BaseURL: w.url, Token: testutil.FleetClientToken}
	var err error
	w.svc, err = compute.NewService(context.Background(), option.WithEndpoint(emuURL+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// available returns the warm machines free to lease, each as
// HOSTNAME/INSTANCE_ID: a group may make an instance again under the same
// name, and only its id tells the fresh one from the old.
func (w *poolWorld) available(t *testing.T) []string {
	t.Helper()
	ms, err := w.admin.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.State == api.Available && slices.Contains(m.Dimensions["gceboot"], "true") {
			out = append(out, machineKey(m))
		}
	}
	slices.Sort(out)
	return out
}

// machineKey is m as HOSTNAME/INSTANCE_ID.
func machineKey(m api.Machine) string {
	id := ""
	if ids := m.Dimensions["instance_id"]; len(ids) > 0 {
		id = ids[0]
	}
	return m.Hostname + "/" + id
}

// leaseKey is l's machine as HOSTNAME/INSTANCE_ID.
func leaseKey(t *testing.T, l api.Lease) string {
	t.Helper()
	if l.Machine == nil || len(l.Machine.Dimensions["instance_id"]) == 0 {
		t.Fatalf("lease %s of %s: the provider does not say which instance it held", l.ID, l.Hostname)
	}
	return machineKey(*l.Machine)
}

// instances returns the project's instances in the zone as NAME/ID.
func (w *poolWorld) instances(t *testing.T) []string {
	t.Helper()
	l, err := w.svc.Instances.List(poolProject, poolZone).Do()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range l.Items {
		out = append(out, in.Name+"/"+strconv.FormatUint(in.Id, 10))
	}
	return out
}

// command returns bigpi on the pool with args.
func (w *poolWorld) command(args ...string) *exec.Cmd {
	cmd := exec.Command(w.bigpi, append([]string{"-system=pool", "-pool.dim", "os=linux", "-pool.backend", "gce"}, args...)...)
	cmd.Env = append(cmd.Environ(), "GCEFLEET_PROVIDER="+w.url, "GCEFLEET_TOKEN="+testutil.FleetClientToken)
	return cmd
}

// waitReplaced waits until none of used (HOSTNAME/INSTANCE_ID) is a
// machine or an instance any more, and want fresh machines are available.
func (w *poolWorld) waitReplaced(t *testing.T, used []string, want int, within time.Duration) {
	t.Helper()
	testutil.WaitWithin(t, within, "the used machines to be deleted and replaced by fresh ones", func() bool {
		for _, name := range append(w.available(t), w.instances(t)...) {
			if slices.Contains(used, name) {
				return false
			}
		}
		return len(w.available(t)) >= want
	})
}

// leases returns alice's leases, all of them.
func (w *poolWorld) leases(t *testing.T) []api.Lease {
	t.Helper()
	ls, err := w.alice.Leases(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// TestBigpiOnPool runs bigpi -system=pool -nmach=4 on four warm machines:
// the estimate is right, the leases are released when it exits, and each
// machine it used is deleted and replaced by a fresh one.
func TestBigpiOnPool(t *testing.T) {
	w := newPoolWorld(t, 4, 8)
	testutil.WaitWithin(t, time.Minute, "4 warm machines", func() bool { return len(w.available(t)) == 4 })
	warm := w.available(t)

	cmd := w.command("-nmach=4", "-samples=2e7")
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bigpi: %v\n%s", err, stderr.String())
	}
	t.Logf("bigpi wrote:\n%s%s", stderr.String(), out)
	m := regexp.MustCompile(`π ≈ ([0-9.]+) .*\(20000000 samples on 4 pool machines in `).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("output %q\n%s", out, stderr.String())
	}
	if pi, _ := strconv.ParseFloat(m[1], 64); math.Abs(pi-math.Pi) > 4e-3 {
		t.Errorf("estimate %v is too far from π", pi)
	}
	for _, want := range []string{"starting 4 pool machines", "4 machines running after"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), testutil.FleetClientToken) {
		t.Errorf("bigpi printed its token:\n%s", stderr.String())
	}
	ls := w.leases(t)
	var used []string
	for _, l := range ls {
		used = append(used, leaseKey(t, l))
		if l.State != api.Released {
			t.Errorf("lease %s of %s is %s after bigpi exited, want RELEASED", l.ID, l.Hostname, l.State)
		}
	}
	slices.Sort(used)
	if !slices.Equal(used, warm) {
		t.Errorf("bigpi leased %v; the warm machines were %v", used, warm)
	}
	w.waitReplaced(t, used, 4, time.Minute)
}

// TestBigpiOnPoolKilled: a driver killed with SIGKILL releases nothing;
// its short leases lapse, and its machines are deleted and replaced.
func TestBigpiOnPoolKilled(t *testing.T) {
	w := newPoolWorld(t, 4, 8)
	testutil.WaitWithin(t, time.Minute, "4 warm machines", func() bool { return len(w.available(t)) == 4 })

	cmd := w.command("-nmach=4", "-samples=1e15", "-pool.lease=10s")
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitWithin(t, time.Minute, "bigpi's machines to run", func() bool { return strings.Contains(stderr.String(), "4 machines running after") })
	// Past a term, so that the leases are known to be extended.
	testutil.WaitWithin(t, time.Minute, "the leases to be extended", func() bool {
		ls := w.leases(t)
		for _, l := range ls {
			if l.State != api.Fulfilled || time.Until(l.ExpiresAt) > 10*time.Second || l.ExpiresAt.Sub(l.Fulfilled) <= 10*time.Second {
				return false
			}
		}
		return len(ls) == 4
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := time.Now()

	var used []string
	testutil.WaitWithin(t, 30*time.Second, "the killed driver's leases to lapse", func() bool {
		used = used[:0]
		for _, l := range w.leases(t) {
			if l.State == api.Fulfilled {
				return false
			}
			used = append(used, leaseKey(t, l))
		}
		return true
	})
	for _, l := range w.leases(t) {
		if l.State != api.Expired && l.State != api.Reclaimed {
			t.Errorf("lease %s of %s is %s: a killed driver's lease expires (or its machine is reclaimed)", l.ID, l.Hostname, l.State)
		}
	}
	if lapsed := time.Since(killed); lapsed > 25*time.Second {
		t.Errorf("the leases lapsed %v after the driver was killed; their term is 10s", lapsed)
	}
	w.waitReplaced(t, used, 4, time.Minute)
}

// TestBigpiOnPoolGrows: bigpi leases more machines than are warm; the
// requests wait, the backend grows the group for them, and they start
// as the machines come. The new machines' guests boot for longer than a
// claimed machine waits for its driver's first keepalive (30 s): the
// warm one, leased at once, must not be lost meanwhile.
func TestBigpiOnPoolGrows(t *testing.T) {
	w := newPoolWorld(t, 1, 4)
	testutil.WaitWithin(t, time.Minute, "1 warm machine", func() bool { return len(w.available(t)) == 1 })
	w.emu.SetLatency(emulator.Latency{Guest: 35 * time.Second})

	cmd := w.command("-nmach=3", "-samples=2e7", "-start-timeout=2m")
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bigpi: %v\n%s", err, stderr.String())
	}
	t.Logf("bigpi wrote:\n%s%s", stderr.String(), out)
	if !strings.Contains(string(out), "20000000 samples on 3 pool machines") || !strings.Contains(stderr.String(), "3 machines running after") {
		t.Errorf("bigpi on a pool that grows:\n%s%s", out, stderr.String())
	}
	ls := w.leases(t)
	if len(ls) != 3 {
		t.Fatalf("%d leases, want 3", len(ls))
	}
	waited := 0
	for _, l := range ls {
		if l.State != api.Released {
			t.Errorf("lease %s is %s, want RELEASED", l.ID, l.State)
		}
		if l.Fulfilled.Sub(l.Created) > time.Second {
			waited++
		}
	}
	if waited < 2 {
		t.Errorf("%d of the leases waited for a machine; with 1 warm, 2 should have", waited)
	}
	if strings.Contains(stderr.String(), "failed") && !strings.Contains(stderr.String(), "0 failed") {
		t.Errorf("a machine failed:\n%s", stderr.String())
	}
}

func TestWithoutToken(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-system=pool", "-pool.token", "s3cret", "-nmach=4"}, []string{"-system=pool", "-nmach=4"}},
		{[]string{"--pool.token=s3cret", "-pool.token-file", "/t"}, []string{"-pool.token-file", "/t"}},
		{[]string{"-nmach=2", "--", "-pool.token", "x"}, []string{"-nmach=2", "--", "-pool.token", "x"}},
	} {
		if got := withoutToken(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("withoutToken(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
