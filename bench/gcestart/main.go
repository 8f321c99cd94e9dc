// Command gcestart measures the gce system against the Compute Engine
// emulator with no boot latency: the time from (*B).Start to N machines
// Running, and the Compute API calls per machine, deletion included.
//
//	go run ./bench/gcestart            # N = 1, 8, 64
//	go run ./bench/gcestart -n 8,16
//	go run ./bench/gcestart -n 8 -guest 20s   # calls while guests boot
//
// The emulator runs in this process; its instances run gceboot, built
// here, which receives this program's binary and execs it, as on GCE.
//
// Beside each N it measures two floors in the same run. The first: N
// processes at once, each copying this binary into a memory file of its
// own and running it to the start of main (no network, no TLS, no
// emulator, no bootstrap). The second adds the upload: N processes at
// once, each an HTTP/2-over-TLS server that receives this binary in one
// POST, as a machine receives it from its driver, writes it to a memory
// file and runs it to main. All of a start's machines share this host's
// CPUs, so no start of N machines that uploads the driver's binary over
// TLS can be faster than the second.
package main

import (
	"context"
	"encoding/gob"
	"flag"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/bench/internal/floor"
	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/system/gce"
)

// Nop is the service the machines serve.
type Nop struct{}

func init() { gob.Register(Nop{}) }

// Ping answers.
func (Nop) Ping(ctx context.Context, _ struct{}, _ *struct{}) error { return nil }

func main() {
	if floor.IsProcess() {
		return // a floor process: started, initialised, done
	}
	bigmachine.Start(gce.New(gce.Config{})) // machines serve from here
	ns := flag.String("n", "1,8,64", "comma-separated machine counts")
	guest := flag.Duration("guest", 0, "how long each instance's guest OS takes to boot after RUNNING (as Container-Optimized OS does on GCE); the floors are not measured then")
	cpuprofile := flag.String("cpuprofile", "", "write the driver's CPU profile to `file`")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gcestart:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*ns, *guest); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "gcestart:", err)
		os.Exit(1)
	}
}

func run(ns string, guest time.Duration) error {
	dir, err := os.MkdirTemp("", "gcestart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	boot := dir + "/gceboot"
	if b := os.Getenv("GCESTART_GCEBOOT"); b != "" {
		boot = b
	}
	if out, err := exec.Command("go", "build", "-o", boot, "github.com/gcefleet/gcefleet/cmd/gceboot").CombinedOutput(); err != nil && os.Getenv("GCESTART_GCEBOOT") == "" {
		return fmt.Errorf("building gceboot: %v\n%s", err, out)
	}
	receiver, err := floor.BuildReceiver(dir)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	boots := "no boot latency"
	if guest > 0 {
		boots = fmt.Sprintf("guests boot for %v (floors not measured)", guest)
	}
	fmt.Printf("gce system on the emulator, %s; each machine receives this %.1f MB binary\n\n", boots, float64(len(bin))/1e6)
	fmt.Printf("%8s  %12s  %14s  %20s  %12s  %14s\n", "machines", "to Running", "Compute calls", "calls per machine", "floor: run", "floor: upload")
	for _, f := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("-n: %v", err)
		}
		if err := once(boot, receiver, bin, n, guest); err != nil {
			return err
		}
	}
	return nil
}

func once(boot, receiver string, bin []byte, n int, guest time.Duration) error {
	emu := emulator.New(emulator.Options{Images: map[string]string{"gcr.io/bench/gceboot": boot}})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	defer emu.Close()
	for _, q := range []string{"CPUS", "INSTANCES", "IN_USE_ADDRESSES"} {
		emu.SetQuota("bench-project", "us-central1", q, 10000)
	}
	emu.SetLatency(emulator.Latency{Guest: guest})
	cfg := gce.DefaultConfig()
	cfg.Project, cfg.Zones, cfg.Image, cfg.Endpoint = "bench-project", []string{"us-central1-a"}, "gcr.io/bench/gceboot:v1", srv.URL
	cfg.MachineType = "e2-micro"
	sys := gce.New(cfg)
	b := bigmachine.Start(sys, bigmachine.WithOutput(io.Discard))
	ctx := context.Background()
	start := time.Now()
	ms, err := b.Start(ctx, n, bigmachine.Services{"Nop": Nop{}})
	took := time.Since(start)
	if err != nil {
		b.Shutdown()
		return err
	}
	for _, m := range ms {
		if err := m.Call(ctx, "Nop.Ping", struct{}{}, &struct{}{}); err != nil {
			return err
		}
	}
	c, err := sys.Client(ctx)
	if err != nil {
		return err
	}
	startCalls := c.Calls()
	b.Shutdown()
	calls := c.Calls()
	run, upload := "-", "-"
	if guest == 0 {
		d, err := floor.Run(bin, n)
		if err != nil {
			return err
		}
		run = d.Round(time.Millisecond).String()
		if d, err = floor.Upload(receiver, bin, n); err != nil {
			return err
		}
		upload = d.Round(time.Millisecond).String()
	}
	fmt.Printf("%8d  %12v  %6d + %-6d  %20.2f  %12s  %14s\n", n, took.Round(time.Millisecond), startCalls, calls-startCalls, float64(calls)/float64(n), run, upload)
	return nil
}
