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
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/gob"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/system/gce"
)

// Nop is the service the machines serve.
type Nop struct{}

func init() { gob.Register(Nop{}) }

// Ping answers.
func (Nop) Ping(ctx context.Context, _ struct{}, _ *struct{}) error { return nil }

func main() {
	if os.Getenv(floorEnv) != "" {
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
	receiver := dir + "/receiver"
	if out, err := exec.Command("go", "build", "-o", receiver, "github.com/gcefleet/gcefleet/bench/gcestart/receiver").CombinedOutput(); err != nil {
		return fmt.Errorf("building the upload floor's receiver: %v\n%s", err, out)
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
	floor, upload := "-", "-"
	if guest == 0 {
		d, err := floorRun(bin, n)
		if err != nil {
			return err
		}
		floor = d.Round(time.Millisecond).String()
		if d, err = uploadFloor(receiver, bin, n); err != nil {
			return err
		}
		upload = d.Round(time.Millisecond).String()
	}
	fmt.Printf("%8d  %12v  %6d + %-6d  %20.2f  %12s  %14s\n", n, took.Round(time.Millisecond), startCalls, calls-startCalls, float64(calls)/float64(n), floor, upload)
	return nil
}

// floorEnv marks a floor process.
const floorEnv = "GCESTART_FLOOR"

// floorRun runs n copies of this binary at once, each from a memory file of
// its own written just before, and returns how long until all have exited.
func floorRun(bin []byte, n int) (time.Duration, error) {
	start := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := runFromMemory(bin); err != nil {
				errs[i] = fmt.Errorf("floor process: %w", err)
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// uploadFloor starts n receivers at once, uploads this binary to each over
// HTTP/2 and TLS with the RPC's settings, and returns how long until all
// have run it and answered.
func uploadFloor(receiver string, bin []byte, n int) (time.Duration, error) {
	cert, err := testutil.SelfSigned("floor")
	if err != nil {
		return 0, err
	}
	certPEM, keyPEM := testutil.CertPEM(cert)
	hc := rpc.HTTPClient(&tls.Config{RootCAs: testutil.CertPool(cert), ServerName: "floor", Certificates: []tls.Certificate{cert}})
	defer hc.CloseIdleConnections()
	start := time.Now()
	took := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.Command(receiver)
			cmd.Stdin = bytes.NewReader(append(append([]byte(nil), certPEM...), keyPEM...)) // not the environment: no key goes there
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err == nil {
				err = cmd.Start()
			}
			if err != nil {
				errs[i] = err
				return
			}
			defer cmd.Wait()
			addr, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				cmd.Process.Kill()
				errs[i] = fmt.Errorf("upload floor process: %w", err)
				return
			}
			resp, err := hc.Post("https://"+strings.TrimSpace(addr)+"/run", "application/octet-stream", bytes.NewReader(bin))
			if err != nil {
				cmd.Process.Kill()
				errs[i] = err
				return
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took[i] = time.Since(start) // the receiver's exit is not part of it
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("upload floor process: %s: %s", resp.Status, msg)
			}
		})
	}
	wg.Wait()
	return slices.Max(took), errors.Join(errs...)
}

// runFromMemory writes bin to a memory file and runs it as a floor process.
func runFromMemory(bin []byte) error {
	fd, err := unix.MemfdCreate("gcestart-floor", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "gcestart-floor")
	defer f.Close()
	if _, err := f.Write(bin); err != nil {
		return err
	}
	cmd := exec.Command(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd))
	cmd.Env = append(os.Environ(), floorEnv+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
