// Command backend measures the GCE Backend against the Compute Engine
// emulator (no boot latency) and the real provider on SQLite: the time and
// Compute API calls to converge a fleet from empty, the calls a fleet at
// rest costs, and the memory of the process at that scale.
//
//	go run ./bench/backend                          # 100 managers x 100 instances
//	go run ./bench/backend -managers=10 -size=10
//	go run ./bench/backend -scaledown               # idle surplus after a busy window ends
//	go run ./bench/backend -burst -interval=1m      # 200 requests on 3 groups at their minimum
//
// The emulator, the provider and the backend share this process (and its
// two cores); the memory figure is theirs together.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

var zones = []string{"us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f", "us-east1-b", "us-east1-c", "us-east1-d",
	"us-west1-a", "us-west1-b", "us-west1-c"}

func main() {
	managers := flag.Int("managers", 100, "managed instance groups (templates x zones, 10 zones)")
	size := flag.Int("size", 100, "instances per group")
	interval := flag.Duration("interval", 10*time.Second, "the backend's job interval")
	rest := flag.Int("rest", 3, "intervals to measure the fleet at rest")
	scaledown := flag.Bool("scaledown", false, "measure instead the idle surplus after a window that keeps -size machines ends, with -idle-timeout against none")
	idleTimeout := flag.Duration("idle-timeout", 20*time.Second, "with -scaledown, the fleet's idle_timeout")
	burstMode := flag.Bool("burst", false, "measure a burst of lease requests on a fleet at its minimum instead (see burst.go)")
	requests := flag.Int("requests", 200, "with -burst: requests queued at once")
	boot := flag.Duration("boot", 20*time.Second, "with -burst: how long an instance takes to reach RUNNING")
	limit := flag.Duration("limit", 5*time.Minute, "with -burst: how long to wait for every request")
	flag.Parse()
	if *scaledown {
		if err := runScaledown(*size, *interval, *idleTimeout); err != nil {
			fmt.Fprintln(os.Stderr, "backend bench:", err)
			os.Exit(1)
		}
		return
	}
	if *burstMode {
		if err := burst(*requests, *boot, *interval, *limit); err != nil {
			fmt.Fprintln(os.Stderr, "backend bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*managers, *size, *interval, *rest); err != nil {
		fmt.Fprintln(os.Stderr, "backend bench:", err)
		os.Exit(1)
	}
}

func run(managers, size int, interval time.Duration, rest int) error {
	ctx := context.Background()
	emu := emulator.New(emulator.Options{})
	defer emu.Close()
	for _, region := range []string{"us-central1", "us-east1", "us-west1"} {
		for _, q := range []string{"INSTANCES", "CPUS", "DISKS_TOTAL_GB", "IN_USE_ADDRESSES"} {
			if err := emu.SetQuota("bench-project", region, q, 1e9); err != nil {
				return err
			}
		}
	}
	esrv := httptest.NewServer(emu)
	defer esrv.Close()
	compute, err := gcecompute.NewClient(ctx, esrv.URL)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "backend-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(ctx, filepath.Join(dir, "provider.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	pcfg, err := provider.ParseConfig("bench", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n"))
	if err != nil {
		return err
	}
	p := provider.New(st, pcfg, slog.New(slog.DiscardHandler))
	psrv := httptest.NewServer(p.Handler())
	defer psrv.Close()

	var cfg strings.Builder
	cfg.WriteString("templates:\n")
	templates := (managers + len(zones) - 1) / len(zones)
	for t := range templates {
		fmt.Fprintf(&cfg, "  - {base_name: t%03d, project: bench-project, dimensions: {os: linux}, machine_type: e2-micro, image: projects/debian-cloud/global/images/family/debian-12}\n", t)
	}
	cfg.WriteString("managers:\n")
	for m := range managers {
		fmt.Fprintf(&cfg, "  - {template_base_name: t%03d, zone: %s, minimum_size: %d, maximum_size: %d}\n", m/len(zones), zones[m%len(zones)], size, size)
	}
	fmt.Fprintf(&cfg, "settings:\n  interval: %s\n", interval) // the default rate: 20 calls a second
	path := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		return err
	}
	bcfg, err := backend.LoadConfig(path)
	if err != nil {
		return err
	}
	fmt.Printf("GCE Backend: %d managers x %d instances (%d templates), job interval %v\n\n", managers, size, templates, interval)

	reg := prometheus.NewRegistry()
	start := time.Now()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	b := backend.Run(rctx, bcfg, compute, &client.Client{BaseURL: psrv.URL, Token: "backend-token-0123456789"},
		backend.Options{ConfigPath: path, Store: st, Registry: reg}, slog.New(slog.DiscardHandler))
	want := managers * size
	last := time.Now()
	for {
		ms, _, err := st.Counts(ctx)
		if err != nil {
			return err
		}
		n := ms[store.Available]
		if n == want {
			break
		}
		if time.Since(last) > 5*time.Second {
			fmt.Printf("  %6.1fs  %d of %d cataloged, %d Compute calls\n", time.Since(start).Seconds(), n, want, compute.Calls())
			last = time.Now()
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("not converged after 10 minutes: %d of %d cataloged", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took, calls := time.Since(start), compute.Calls()
	fmt.Printf("converged: %d instances cataloged in %.1fs with %d Compute calls (%.2f per instance, %.1f per group)\n",
		want, took.Seconds(), calls, float64(calls)/float64(want), float64(calls)/float64(managers))
	fmt.Printf("calls to converge by method: %s\n", byMethod(reg))

	// At rest: let every job run its interval a few times.
	time.Sleep(interval)
	before, methodsBefore := compute.Calls(), counts(reg)
	time.Sleep(time.Duration(rest) * interval)
	perMin := float64(compute.Calls()-before) / (float64(rest) * interval.Minutes())
	fmt.Printf("at rest: %.0f Compute calls a minute (%.2f per group per interval) over %d intervals; by method: %s\n",
		perMin, float64(compute.Calls()-before)/float64(rest*managers), rest, diff(counts(reg), methodsBefore))
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fmt.Printf("memory at rest (emulator, provider and backend together): heap in use %.0f MiB, from the OS %.0f MiB\n",
		float64(m.HeapInuse)/(1<<20), float64(m.Sys)/(1<<20))
	_ = b
	return nil
}

// counts returns Compute calls by method so far.
func counts(reg *prometheus.Registry) map[string]float64 {
	out := map[string]float64{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "gcefleet_compute_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			method := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" {
					method = l.GetValue()
				}
			}
			out[method] += m.GetCounter().GetValue()
		}
	}
	return out
}

func byMethod(reg *prometheus.Registry) string { return diff(counts(reg), nil) }

func diff(now, before map[string]float64) string {
	var parts []string
	for k, v := range now {
		if d := v - before[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, d))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
