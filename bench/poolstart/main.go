// Command poolstart measures the pool system against a fleet of warm
// gceboot machines on the Compute Engine emulator: the time from
// (*B).Start to N machines Running, beside, in the same run and on the
// same emulator, the gce system's cold start of N machines and the upload
// floor of bench/gcestart (N receivers taking this binary over HTTP/2 and
// mutual TLS and running it: what no start that ships the driver's binary
// can beat on this host).
//
//	go run ./bench/poolstart                  # N = 1, 4, 8, 32; guests boot 20s
//	go run ./bench/poolstart -n 4 -gce=false  # the pool and the floor only
//
// The emulator runs in this process; `gcefleet serve` (a provider and a
// GCE Backend whose one group's template has gceboot: true) runs as a
// child. The group is kept at the largest N, and each start waits until
// that many machines are warm again: a used machine is deleted and
// replaced, and its replacement boots.
package main

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/bench/internal/floor"
	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/system/gce"
	"github.com/gcefleet/gcefleet/system/pool"
)

// Nop is the service the machines serve.
type Nop struct{}

func init() { gob.Register(Nop{}) }

// Ping answers.
func (Nop) Ping(ctx context.Context, _ struct{}, _ *struct{}) error { return nil }

const (
	project = "bench-project"
	zone    = "us-central1-a"
	image   = "gcr.io/bench/gceboot"
	admin   = "admin-token-0123456789"
	backend = "gce-token-0123456789"
	lessee  = "bench-token-0123456789"
)

func main() {
	if floor.IsProcess() {
		return // a floor process: started, initialised, done
	}
	// Machines, pool and gce alike, serve from here: the two systems'
	// workers are the same (instance.Listen, and Exit deletes the
	// instance).
	bigmachine.Start(pool.New(pool.Config{}))
	ns := flag.String("n", "1,4,8,32", "comma-separated machine counts")
	guest := flag.Duration("guest", 20*time.Second, "how long each instance's guest OS takes to boot after RUNNING (the pool's machines boot before they are warm)")
	withGCE := flag.Bool("gce", true, "measure the gce system's cold start too (once for each N)")
	noZstd := flag.Bool("no-precompress", false, "start the pool's machines WithCompression(CompressNever). Before bigmachine compressed lazily, that kept it from compressing the binary in the background during every start; now it compresses only for a machine off loopback, and the machines here are on loopback, so this changes nothing")
	runs := flag.Int("runs", 3, "pool starts and upload floors for each N, alternating; the table shows medians")
	cpuprofile := flag.String("cpuprofile", "", "write the driver's CPU profile of the pool starts to `file`")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "poolstart: -n %q: want machine counts such as 1,8,32\n", *ns)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	if *runs < 1 {
		fmt.Fprintf(os.Stderr, "poolstart: -runs %d: want at least 1\n", *runs)
		os.Exit(2)
	}
	if err := run(counts, *runs, *guest, *withGCE, *noZstd, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "poolstart:", err)
		os.Exit(1)
	}
}

func run(counts []int, runs int, guest time.Duration, withGCE, noZstd bool, cpuprofile string) error {
	dir, err := os.MkdirTemp("", "poolstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	boot, err := build(dir, "github.com/gcefleet/gcefleet/cmd/gceboot")
	if err != nil {
		return err
	}
	gcefleet, err := build(dir, "github.com/gcefleet/gcefleet/cmd/gcefleet")
	if err != nil {
		return err
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

	emu := emulator.New(emulator.Options{Images: map[string]string{image: boot}})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	defer emu.Close()
	for _, q := range []string{"CPUS", "INSTANCES", "IN_USE_ADDRESSES"} {
		emu.SetQuota(project, "us-central1", q, 10000)
	}
	emu.SetLatency(emulator.Latency{Guest: guest})

	warm := slices.Max(counts)
	url, stop, err := serve(dir, gcefleet, srv.URL, warm)
	if err != nil {
		return err
	}
	defer stop()
	adm := &client.Client{BaseURL: url, Token: admin}

	var prof *os.File
	if cpuprofile != "" {
		if prof, err = os.Create(cpuprofile); err != nil {
			return err
		}
		defer prof.Close()
	}

	fmt.Printf("pool system on %d warm machines, gce system cold (guests boot for %v), on one emulator; each machine receives this %.1f MB binary\n\n", warm, guest, float64(len(bin))/1e6)
	fmt.Printf("%8s  %14s  %14s  %14s  %14s  %16s\n", "machines", "pool: Running", "of it: leased", "gce: Running", "floor: upload", "pool / floor")
	for _, n := range counts {
		var pools, leases, ups []time.Duration
		for range runs {
			if err := waitWarm(adm, warm, 5*time.Minute); err != nil {
				return err
			}
			if prof != nil {
				pprof.StartCPUProfile(prof)
			}
			took, leased, err := startPool(url, n, noZstd)
			if prof != nil {
				pprof.StopCPUProfile()
				prof = nil // one profile: of the first pool start
			}
			if err != nil {
				return fmt.Errorf("pool, %d machines: %w", n, err)
			}
			up, err := floor.Upload(receiver, bin, n)
			if err != nil {
				return err
			}
			pools, leases, ups = append(pools, took), append(leases, leased), append(ups, up)
		}
		gceTook := "-"
		if withGCE {
			d, err := startGCE(srv.URL, n)
			if err != nil {
				return fmt.Errorf("gce, %d machines: %w", n, err)
			}
			gceTook = d.Round(time.Millisecond).String()
		}
		p, up := median(pools), median(ups)
		fmt.Printf("%8d  %14v  %14v  %14s  %14v  %16.2f   (pool %v; floor %v)\n", n, p.Round(time.Millisecond), median(leases).Round(time.Millisecond), gceTook, up.Round(time.Millisecond), float64(p)/float64(up), rounded(pools), rounded(ups))
	}
	return nil
}

func build(dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// serve runs `gcefleet serve` with a provider and a backend of one group
// of warm gceboot machines, and returns its URL.
func serve(dir, gcefleet, endpoint string, warm int) (string, func(), error) {
	fleet := fmt.Sprintf(`templates:
  - base_name: warm
    project: %s
    dimensions: {os: linux}
    machine_type: e2-standard-2
    container_image: %s:v1
    gceboot: true
    service_accounts: [{email: default, scopes: ["https://www.googleapis.com/auth/cloud-platform"]}]
managers:
  - {template_base_name: warm, zone: %s, minimum_size: %d, maximum_size: %d}
settings:
  interval: 1s
  compute_endpoint: %s
`, project, image, zone, warm, 2*warm+8, endpoint)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
database: %s
tokens:
  - {name: ops, role: admin, token: %s}
  - {name: gce, role: backend, token: %s}
  - {name: bench, role: client, token: %s}
backend: {config: fleet.yaml, token: gce}
`, filepath.Join(dir, "p.db"), admin, backend, lessee)
	if err := os.WriteFile(filepath.Join(dir, "fleet.yaml"), []byte(fleet), 0o600); err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "provider.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(gcefleet, "serve", "--config", path)
	logs, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); logs.Close() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "http://") {
		stop()
		b, _ := os.ReadFile(logs.Name())
		return "", nil, fmt.Errorf("gcefleet serve printed %q, not its URL (%v):\n%s", line, err, b)
	}
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(line), stop, nil
}

// waitWarm waits until n pool machines are available.
func waitWarm(c *client.Client, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ms, err := c.Machines(context.Background())
		avail := 0
		for _, m := range ms {
			if m.State == api.Available && slices.Contains(m.Dimensions[pool.PoolDimension], "true") {
				avail++
			}
		}
		if err == nil && avail >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d pool machines warm after %v (%v)", avail, n, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// timed is a pool system that notes how long its Start (leasing and
// claiming) took.
type timed struct {
	*pool.System
	took time.Duration
}

func (t *timed) Start(ctx context.Context, req bigmachine.StartRequest) ([]bigmachine.Spec, error) {
	start := time.Now()
	specs, err := t.System.Start(ctx, req)
	t.took = time.Since(start)
	return specs, err
}

// startPool starts n machines on the pool and returns how long until they
// ran, and how much of it the system's Start (lease and claim) took.
func startPool(url string, n int, noZstd bool) (time.Duration, time.Duration, error) {
	cfg := pool.DefaultConfig()
	cfg.Provider, cfg.Token, cfg.TokenFile = url, lessee, ""
	cfg.Dimensions = api.Dimensions{"os": {"linux"}}
	sys := &timed{System: pool.New(cfg)}
	opts := []bigmachine.Option{bigmachine.WithOutput(io.Discard), bigmachine.WithStartTimeout(2 * time.Minute)}
	if noZstd {
		opts = append(opts, bigmachine.WithCompression(bigmachine.CompressNever))
	}
	b := bigmachine.Start(sys, opts...)
	defer b.Shutdown()
	start := time.Now()
	ms, err := b.Start(context.Background(), n, bigmachine.Services{"Nop": Nop{}})
	took := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	return took, sys.took, ping(ms)
}

// startGCE starts n machines cold with the gce system.
func startGCE(endpoint string, n int) (time.Duration, error) {
	cfg := gce.DefaultConfig()
	cfg.Project, cfg.Zones, cfg.Image, cfg.Endpoint = project, []string{zone}, image+":v1", endpoint
	cfg.MachineType = "e2-standard-2"
	b := bigmachine.Start(gce.New(cfg), bigmachine.WithOutput(io.Discard), bigmachine.WithStartTimeout(5*time.Minute))
	defer b.Shutdown()
	start := time.Now()
	ms, err := b.Start(context.Background(), n, bigmachine.Services{"Nop": Nop{}})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	return took, ping(ms)
}

func ping(ms []*bigmachine.Machine) error {
	var errs []error
	for _, m := range ms {
		errs = append(errs, m.Call(context.Background(), "Nop.Ping", struct{}{}, &struct{}{}))
	}
	return errors.Join(errs...)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return strings.Join(out, " ")
}
