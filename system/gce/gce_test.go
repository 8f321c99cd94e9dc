package gce_test

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/system/gce"
	"github.com/gcefleet/gcefleet/system/gce/instance"
)

const (
	project = "test-project"
	image   = "gcr.io/test-project/gceboot"
)

// TestMain makes the test binary a worker when gceboot execs it, and a
// driver of its own for TestKilledDriver.
func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(bigmachine.EnvConfig); ok {
		bigmachine.Start(gce.New(gce.Config{}))
	}
	if url := os.Getenv("GCE_TEST_DRIVER"); url != "" {
		killableDriver(url, os.Getenv("GCE_TEST_GCEBOOT"))
		return
	}
	dir, err := os.MkdirTemp("", "gce-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gceboot, err = testutil.GoBuildTo(dir, "github.com/gcefleet/gcefleet/cmd/gceboot")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gceboot is the bootstrap binary the emulator runs for the image; TestMain
// builds it once.
var gceboot string

// Hello is the service the machines serve.
type Hello struct{}

func init() { gob.Register(Hello{}) }

// Instance returns the address of the machine's metadata server, which is
// the instance's own.
func (Hello) Instance(ctx context.Context, _ struct{}, host *string) error {
	*host = os.Getenv("GCE_METADATA_HOST")
	return nil
}

func (Hello) Pid(ctx context.Context, _ struct{}, pid *int) error { *pid = os.Getpid(); return nil }

// Say prints a line on the machine.
func (Hello) Say(ctx context.Context, line string, _ *struct{}) error {
	fmt.Println(line)
	return nil
}

// world is an emulator with gceboot for the test's containers.
type world struct {
	emu *emulator.Emulator
	url string
	out *testutil.SyncBuffer
}

func newWorld(t *testing.T) *world {
	t.Helper()
	out := &testutil.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance output:\n%s", out)
		}
	})
	emu, url := testutil.Emulator(t, emulator.Options{Images: map[string]string{image: gceboot}, ProcessOutput: out, StopGrace: 2 * time.Second})
	return &world{emu: emu, url: url, out: out}
}

func (w *world) config(zones ...string) gce.Config {
	cfg := gce.DefaultConfig()
	cfg.Project, cfg.Zones, cfg.Image, cfg.Endpoint = project, zones, image+":v1", w.url
	// A timeout that a race-built binary's upload on a busy machine does
	// not outlast; the tests of a lapsing keepalive set their own.
	cfg.KeepalivePeriod, cfg.KeepaliveTimeout = 250*time.Millisecond, 10*time.Second
	cfg.Owner = "tester"
	return cfg
}

// instances lists the project's instances in zone through the Cloud Client
// Library, as a user would look.
func (w *world) instances(t *testing.T, zone string) []*computepb.Instance {
	t.Helper()
	c, err := computeapi.NewInstancesRESTClient(context.Background(), option.WithEndpoint(w.url), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []*computepb.Instance
	it := c.List(context.Background(), &computepb.ListInstancesRequest{Project: project, Zone: zone})
	for {
		in, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, in)
	}
}

func start(t *testing.T, sys *gce.System, n int, opts ...bigmachine.Option) (*bigmachine.B, []*bigmachine.Machine, error) {
	t.Helper()
	b := bigmachine.Start(sys, append([]bigmachine.Option{bigmachine.WithOutput(io.Discard), bigmachine.WithStartTimeout(time.Minute)}, opts...)...)
	t.Cleanup(b.Shutdown)
	ms, err := b.Start(context.Background(), n, bigmachine.Services{"Hello": Hello{}})
	return b, ms, err
}

func TestStartCallShutdown(t *testing.T) {
	w := newWorld(t)
	sys := gce.New(w.config("us-central1-a"))
	out := &testutil.SyncBuffer{}
	b, ms, err := start(t, sys, 3, bigmachine.WithOutput(out))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// What a machine prints reaches the driver, under the machine's name.
	if err := ms[2].Call(ctx, "Hello.Say", "from the cloud", &struct{}{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the machine's output", func() bool { return strings.Contains(out.String(), ms[2].Name()+": from the cloud\n") })
	seen := map[string]bool{}
	for _, m := range ms {
		var host string
		if err := m.Call(ctx, "Hello.Instance", struct{}{}, &host); err != nil {
			t.Fatal(err)
		}
		seen[host] = true
		if want := sys.Run(); !strings.Contains(m.Name(), "bigm-"+want+"-") {
			t.Errorf("machine name %s lacks the run %s", m.Name(), want)
		}
		if m.Maxprocs != 2 { // e2-standard-2
			t.Errorf("%s: Maxprocs %d, want the machine type's 2 CPUs", m.Name(), m.Maxprocs)
		}
	}
	if len(seen) != 3 {
		t.Errorf("machines answered from %d metadata servers, want 3 distinct instances", len(seen))
	}

	ins := w.instances(t, "us-central1-a")
	if len(ins) != 3 {
		t.Fatalf("%d instances, want 3", len(ins))
	}
	for _, in := range ins {
		l := in.GetLabels()
		if l[gce.RunLabel] != sys.Run() || l[gce.OwnerLabel] != "tester" || l[gce.RoleLabel] != "bigmachine" {
			t.Errorf("%s labels %v", in.GetName(), l)
		}
		md := map[string]string{}
		for _, it := range in.GetMetadata().GetItems() {
			md[it.GetKey()] = it.GetValue()
		}
		// gceboot, never restarted: a machine that exits is gone.
		if decl, want := md[gcecompute.ContainerDeclarationKey], gcecompute.ContainerDeclaration("gceboot", image+":v1", gcecompute.RestartNever); decl != want {
			t.Errorf("%s container declaration:\n%s\nwant:\n%s", in.GetName(), decl, want)
		}
		bc, err := instance.DecodeBootConfig(md[gce.BootKey])
		if err != nil || bc.Listen != ":8443" || bc.Nonce == "" || !strings.Contains(string(bc.CA), "BEGIN CERTIFICATE") {
			t.Errorf("%s boot configuration: %+v, %v", in.GetName(), bc, err)
		}
		s := in.GetScheduling()
		if s.GetMaxRunDuration().GetSeconds() != 12*3600 || s.GetInstanceTerminationAction() != "DELETE" {
			t.Errorf("%s scheduling %v", in.GetName(), s)
		}
		if tags := in.GetTags().GetItems(); len(tags) != 1 || tags[0] != "bigm-"+sys.Run() {
			t.Errorf("%s tags %v", in.GetName(), tags)
		}
	}

	b.Shutdown()
	if left := w.instances(t, "us-central1-a"); len(left) != 0 {
		t.Errorf("%d instances left after Shutdown", len(left))
	}
	for _, m := range ms {
		if err := m.Call(ctx, "Hello.Instance", struct{}{}, new(string)); !errors.Is(err, rpc.Unavailable) {
			t.Errorf("call after Shutdown: %v", err)
		}
	}
}

// TestShutdownSparesOthers leaves instances without our labels, and of
// another run, alone.
func TestShutdownSparesOthers(t *testing.T) {
	w := newWorld(t)
	other := gce.New(w.config("us-central1-a"))
	_, _, err := start(t, other, 1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := computeapi.NewInstancesRESTClient(context.Background(), option.WithEndpoint(w.url), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	op, err := c.Insert(context.Background(), &computepb.InsertInstanceRequest{Project: project, Zone: "us-central1-a", InstanceResource: &computepb.Instance{
		Name: new("someone-elses"), MachineType: new("zones/us-central1-a/machineTypes/e2-small"),
		Disks:             []*computepb.AttachedDisk{{Boot: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{SourceImage: new("projects/debian-cloud/global/images/family/debian-12")}}},
		NetworkInterfaces: []*computepb.NetworkInterface{{}},
	}})
	if err == nil {
		err = op.Wait(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := start(t, gce.New(w.config("us-central1-a")), 2)
	if err != nil {
		t.Fatal(err)
	}
	b.Shutdown()
	var names []string
	for _, in := range w.instances(t, "us-central1-a") {
		names = append(names, in.GetName())
	}
	if len(names) != 2 || !strings.Contains(strings.Join(names, " "), "someone-elses") || !strings.Contains(strings.Join(names, " "), other.Run()) {
		t.Errorf("after one run's Shutdown: %v; want the other run's machine and someone-elses", names)
	}
}

func TestStockoutAndQuotaFallBack(t *testing.T) {
	w := newWorld(t)
	w.emu.AddStockout(emulator.Stockout{Zone: "us-central1-a"})
	w.emu.SetQuota(project, "us-east1", "CPUS", 2) // one e2-standard-2
	sys := gce.New(w.config("us-central1-a", "us-east1-b", "europe-west1-b"))
	_, ms, err := start(t, sys, 3)
	if err != nil {
		t.Fatal(err)
	}
	zones := map[string]int{}
	for _, m := range ms {
		zones[m.Handle().(*gce.Machine).Zone]++
	}
	if zones["us-central1-a"] != 0 || zones["us-east1-b"] != 1 || zones["europe-west1-b"] != 2 {
		t.Errorf("machines by zone: %v; want none in the stocked-out zone, 1 where quota allows one, 2 in the last", zones)
	}
}

func TestPartialStartSaysWhy(t *testing.T) {
	w := newWorld(t)
	w.emu.AddStockout(emulator.Stockout{Zone: "us-central1-a"})
	w.emu.SetQuota(project, "us-east1", "CPUS", 4) // two e2-standard-2
	_, ms, err := start(t, gce.New(w.config("us-central1-a", "us-east1-b")), 3)
	if len(ms) != 2 || err == nil || !strings.Contains(err.Error(), "2 of 3") ||
		!strings.Contains(err.Error(), "ZONE_RESOURCE_POOL_EXHAUSTED") || !strings.Contains(err.Error(), "us-east1-b: made 2 of 3 machines: the zone's quota or capacity allowed no more") {
		t.Errorf("partial start: %d machines, %v", len(ms), err)
	}
}

func TestRateLimitsAreRetried(t *testing.T) {
	w := newWorld(t)
	for _, m := range []string{"compute.instances.bulkInsert", "compute.instances.list"} {
		w.emu.AddFault(emulator.Fault{Method: m, ErrorCode: 403, Count: 2})
	}
	w.emu.AddFault(emulator.Fault{Method: "compute.firewalls.insert", ErrorCode: 503, Count: 2})
	_, ms, err := start(t, gce.New(w.config("us-central1-a")), 2)
	if err != nil || len(ms) != 2 {
		t.Fatalf("start under rate limits: %d machines, %v", len(ms), err)
	}
	if n := len(w.instances(t, "us-central1-a")); n != 2 {
		t.Errorf("%d instances after retried inserts, want 2 (a retry must not make more)", n)
	}
}

func TestPreemptionIsNoticed(t *testing.T) {
	w := newWorld(t)
	cfg := w.config("us-central1-a")
	cfg.Spot = true
	_, ms, err := start(t, gce.New(cfg), 2)
	if err != nil {
		t.Fatal(err)
	}
	h := ms[0].Handle().(*gce.Machine)
	if err := w.emu.Preempt(project, h.Zone, h.Name); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.KeepaliveTimeout)
	defer cancel()
	if s := ms[0].Wait(ctx, bigmachine.Stopped); s != bigmachine.Stopped {
		t.Fatalf("preempted machine is %v after the keepalive timeout", s)
	}
	// A preempted instance goes STOPPING, then TERMINATED; the machine
	// may be looked at in either.
	if e := ms[0].Err().Error(); !strings.Contains(e, "STOPPING") && !strings.Contains(e, "TERMINATED") && !strings.Contains(e, "deleted") {
		t.Errorf("Err = %v, want it to say the instance stopped", ms[0].Err())
	}
	if err := ms[1].Call(context.Background(), "Hello.Pid", struct{}{}, new(int)); err != nil {
		t.Errorf("the other machine: %v", err)
	}
}

// TestSpotFallsBackToStandard: with no Spot capacity anywhere, machines
// come up as standard ones when the user allows it.
func TestSpotFallsBackToStandard(t *testing.T) {
	w := newWorld(t)
	w.emu.AddStockout(emulator.Stockout{Zone: "us-central1-a", SpotOnly: true})
	w.emu.AddStockout(emulator.Stockout{Zone: "us-central1-b", SpotOnly: true})
	cfg := w.config("us-central1-a", "us-central1-b")
	cfg.Spot = true
	if _, ms, err := start(t, gce.New(cfg), 1); err == nil || len(ms) != 0 {
		t.Fatalf("Spot without capacity: %d machines, %v", len(ms), err)
	}
	cfg.SpotFallback = true
	_, ms, err := start(t, gce.New(cfg), 2)
	if err != nil || len(ms) != 2 {
		t.Fatalf("with fallback: %d machines, %v", len(ms), err)
	}
	for _, in := range w.instances(t, "us-central1-a") {
		if in.GetScheduling().GetProvisioningModel() == "SPOT" {
			t.Errorf("%s is Spot", in.GetName())
		}
	}
}

// killableDriver starts two machines against the emulator at url, prints
// their names and waits to be killed.
func killableDriver(url, _ string) {
	cfg := gce.DefaultConfig()
	cfg.Project, cfg.Zones, cfg.Image, cfg.Endpoint = project, []string{"us-central1-a"}, image, url
	cfg.KeepalivePeriod, cfg.KeepaliveTimeout = 100*time.Millisecond, time.Second
	b := bigmachine.Start(gce.New(cfg), bigmachine.WithOutput(io.Discard))
	ms, err := b.Start(context.Background(), 2, bigmachine.Services{"Hello": Hello{}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("running", len(ms))
	select {}
}

// TestKilledDriver kills a driver with SIGKILL: every instance of its run
// must delete itself once its keepalive lapses.
func TestKilledDriver(t *testing.T) {
	w := newWorld(t)
	cmd, stdout := testutil.StartProcess(t, []string{"GCE_TEST_DRIVER=" + w.url}, os.Args[0], "-test.run=^$")
	line, _ := stdout.ReadString('\n')
	if strings.TrimSpace(line) != "running 2" {
		t.Fatalf("driver: %q", line)
	}
	if n := len(w.instances(t, "us-central1-a")); n != 2 {
		t.Fatalf("%d instances before the kill", n)
	}
	cmd.Process.Kill()
	cmd.Wait()
	killed := time.Now()
	// The worker timeout is 1s: 10 s is ample.
	testutil.WaitFor(t, "the killed driver's instances to delete themselves", func() bool {
		return len(w.instances(t, "us-central1-a")) == 0
	})
	t.Logf("instances gone %v after the driver was killed", time.Since(killed))
}

// TestFailedStartShowsConsole: a machine whose container cannot start
// (here an image the emulator does not know, as a wrong -gce.image is on
// GCE) fails with the last lines of its serial port, which say why.
func TestFailedStartShowsConsole(t *testing.T) {
	w := newWorld(t)
	cfg := w.config("us-central1-a")
	cfg.Image = "gcr.io/bench/no-such-image:v1"
	_, ms, err := start(t, gce.New(cfg), 1, bigmachine.WithStartTimeout(5*time.Second))
	if len(ms) != 0 || err == nil || !strings.Contains(err.Error(), "its console ended with") ||
		!strings.Contains(err.Error(), `image "gcr.io/bench/no-such-image:v1" is not known to the emulator`) {
		t.Fatalf("start with an unknown image: %d machines, %v", len(ms), err)
	}
}

// TestSecondStartInTheSameRun: machines started right after others in the
// same zone start too: the zone's list of instances, shared by the
// machines' checks, is not taken for the truth about instances made after
// it.
func TestSecondStartInTheSameRun(t *testing.T) {
	w := newWorld(t)
	b, first, err := start(t, gce.New(w.config("us-central1-a")), 2)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		more, err := b.Start(context.Background(), 2, bigmachine.Services{"Hello": Hello{}})
		if err != nil || len(more) != 2 {
			t.Fatalf("a second start in the same run: %d machines, %v", len(more), err)
		}
		first = append(first, more...)
	}
	for _, m := range first {
		if err := m.Call(context.Background(), "Hello.Pid", struct{}{}, new(int)); err != nil {
			t.Errorf("%s: %v", m.Name(), err)
		}
	}
}
