// Command provider measures the Machine Provider through its HTTP API:
// lease+release pairs per second and their latency with concurrent
// clients, over a catalog kept at a given size by a backend that re-adds
// each reclaimed machine as its event arrives.
//
//	go run ./bench/provider                        # SQLite and PostgreSQL
//	go run ./bench/provider -store=sqlite -clients=32 -for=10s
//	go run ./bench/provider -polls=2000            # without, then with 2,000 long polls open
//
// With -polls, each store is measured twice in the same run: first as
// above, then with that many long polls open (GET /v1/leases/ID?wait=...)
// on pending requests that no machine satisfies, made by pollers of their
// own (500 requests each, under the provider's default cap a client).
//
// PostgreSQL is GCEFLEET_TEST_POSTGRES or postgres@127.0.0.1:5432; the
// benchmark makes a database of its own and drops it after.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// gcPercent is cmd/gcefleet's: the benchmark measures the provider as
// gcefleet serve runs it.
const gcPercent = 400

func main() {
	which := flag.String("store", "sqlite,postgres", "stores to measure")
	clients := flag.Int("clients", 32, "concurrent clients")
	machines := flag.Int("machines", 10000, "cataloged machines")
	dur := flag.Duration("for", 10*time.Second, "how long to measure each store")
	polls := flag.Int("polls", 0, "measure again with this many long polls open on pending leases")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measured part to `file` ({store} in it is replaced by the store's name)")
	flag.Parse()
	gc := "GOGC=" + os.Getenv("GOGC")
	if os.Getenv("GOGC") == "" { // as gcefleet serve runs
		debug.SetGCPercent(gcPercent)
		gc = fmt.Sprintf("GOGC=%d as gcefleet serve", gcPercent)
	}
	fmt.Printf("Machine Provider: lease+release pairs through the HTTP API, %d clients, %d machines, %v each, %s\n",
		*clients, *machines, *dur, gc)
	// This machine's speed has varied threefold between days; naming the
	// processor lets figures from different days be told apart.
	fmt.Printf("host: %s, %d CPUs\n\n", processor(), runtime.NumCPU())
	for _, s := range strings.Split(*which, ",") {
		if err := measure(s, *clients, *machines, *polls, *dur, *cpuprofile); err != nil {
			fmt.Fprintf(os.Stderr, "provider bench (%s): %v\n", s, err)
			os.Exit(1)
		}
	}
}

// measure runs the benchmark on one store; with a profile path, it
// writes a CPU profile of the measured part (not of filling the catalog).
func measure(kind string, clients, machines, polls int, dur time.Duration, profile string) error {
	ctx := context.Background()
	url, cleanup, err := database(ctx, kind)
	if err != nil {
		return err
	}
	defer cleanup()
	st, err := store.Open(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	pollers := (polls + pollsPerPoller - 1) / pollsPerPoller
	tokens := "tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n  - {name: bench, role: client, token: client-token-0123456789}\n"
	for i := range pollers {
		tokens += fmt.Sprintf("  - {name: poller-%d, role: client, token: poller-token-%d-0123456789}\n", i, i)
	}
	cfg, err := provider.ParseConfig("bench", []byte(tokens))
	if err != nil {
		return err
	}
	s := provider.New(st, cfg, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	rctx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go s.Run(rctx)
	// The clients' default HTTP client, as every caller gets.
	backend := &client.Client{BaseURL: srv.URL, Token: "backend-token-0123456789"}
	lessee := &client.Client{BaseURL: srv.URL, Token: "client-token-0123456789"}

	start := time.Now()
	for i := range machines {
		if _, err := st.AddMachine(ctx, machineNamed(fmt.Sprintf("vm-%06d", i))); err != nil {
			return err
		}
	}
	// As the provider's own loop, or autovacuum, would by the time a
	// catalog this size is in use.
	if err := st.Maintain(ctx); err != nil {
		return err
	}
	fmt.Printf("%-9s catalog of %d filled in %v\n", kind, machines, time.Since(start).Round(time.Millisecond))

	if profile != "" {
		f, err := os.Create(strings.ReplaceAll(profile, "{store}", kind))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	// The backend: every reclaimed machine comes back, under a new name,
	// added in batches (as the GCE backend catalogs a group's new
	// instances) by a few workers, so that the catalog stays full.
	bctx, stopBackend := context.WithCancel(ctx)
	defer stopBackend()
	var bwg sync.WaitGroup
	adds := make(chan []store.Machine, 64)
	for range 4 {
		bwg.Go(func() {
			for ms := range adds {
				backend.AddMachines(bctx, ms)
			}
		})
	}
	bwg.Go(func() {
		defer close(adds)
		var after int64
		n := machines
		for bctx.Err() == nil {
			evs, err := backend.Events(bctx, after, time.Second)
			if err != nil {
				return
			}
			var ms []store.Machine
			for _, e := range evs {
				after = e.ID
				if e.Kind == "reclaimed" {
					n++
					ms = append(ms, machineNamed(fmt.Sprintf("vm-%06d", n)))
				}
			}
			if len(ms) == 0 {
				continue
			}
			select {
			case adds <- ms:
			case <-bctx.Done():
				return
			}
		}
	})

	if err := pairs(ctx, kind, "", lessee, clients, dur); err != nil {
		return err
	}
	if polls > 0 {
		stop, err := openPolls(ctx, srv.URL, polls, pollers)
		if err != nil {
			return err
		}
		err = pairs(ctx, kind, fmt.Sprintf("with %d long polls open", polls), lessee, clients, dur)
		stop()
		if err != nil {
			return err
		}
	}
	stopBackend()
	bwg.Wait()
	return nil
}

// pollsPerPoller is how many pending requests each poller makes: half
// the provider's default cap on a client's queue.
const pollsPerPoller = 500

// pairs measures lease+release pairs for dur with clients callers and
// prints the figures, labeled with what else is going on.
func pairs(ctx context.Context, kind, label string, lessee *client.Client, clients int, dur time.Duration) error {
	var mu sync.Mutex
	var lat []time.Duration
	var errs int
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	cpu0, _ := usage()
	host0 := hostTicks()
	start := time.Now()
	phase := start.UnixNano() // request ids of this measure's own
	for c := range clients {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for i := 0; time.Now().Before(deadline); i++ {
				t := time.Now()
				l, err := lessee.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprintf("%d-c%d-%d", phase, c, i),
					Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
				if err == nil && l.State == store.Fulfilled {
					_, err = lessee.Release(ctx, l.ID)
				} else if err == nil {
					lessee.Release(ctx, l.ID) // queued: the catalog ran dry
					err = fmt.Errorf("not fulfilled at once")
				}
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	cpu, maxRSS := usage()
	cpu -= cpu0
	host := hostTicks().since(host0)
	slices.Sort(lat)
	if len(lat) == 0 {
		return fmt.Errorf("no pair completed (%d failed)", errs)
	}
	if label != "" {
		fmt.Printf("%-9s %s:\n", kind, label)
	}
	fmt.Printf("%-9s %7.0f pairs/s  pair latency p50 %v  p99 %v  this process's CPU %v a pair, max RSS %d MiB  (%d pairs, %d not fulfilled at once)\n", kind,
		float64(len(lat))/took.Seconds(), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond),
		(cpu / time.Duration(len(lat))).Round(time.Microsecond), maxRSS>>20, len(lat), errs)
	fmt.Printf("%-9s whole machine during the run: %s\n\n", "", host)
	return nil
}

// openPolls makes polls pending requests, pollers clients' worth, that
// no machine satisfies, and keeps a long poll open on each until the
// func it returns is called.
func openPolls(ctx context.Context, url string, polls, pollers int) (func(), error) {
	// Connections enough for every poll at once.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: polls, MaxConnsPerHost: 0}}
	var ids []string
	var who []*client.Client
	for i := range polls {
		c := &client.Client{BaseURL: url, Token: fmt.Sprintf("poller-token-%d-0123456789", i/pollsPerPoller), HTTP: hc}
		l, err := c.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("poll-", i),
			Dimensions: store.Dimensions{"os": {"plan9"}}, Term: store.Term{Duration: time.Hour}})
		if err != nil {
			return nil, fmt.Errorf("queueing a request to poll: %w", err)
		}
		ids, who = append(ids, l.ID), append(who, c)
	}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			for pctx.Err() == nil {
				who[i].Lease(pctx, id, time.Minute)
			}
		})
	}
	// Every poll sent and waiting: long before this, on this machine.
	time.Sleep(3 * time.Second)
	return func() { cancel(); wg.Wait(); hc.CloseIdleConnections() }, nil
}

// processor names this machine's CPU as /proc/cpuinfo does: model name,
// family and model.
func processor() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	field := func(name string) string {
		for line := range strings.Lines(string(b)) {
			k, v, ok := strings.Cut(line, ":")
			if ok && strings.TrimSpace(k) == name {
				return strings.TrimSpace(v)
			}
		}
		return "?"
	}
	return fmt.Sprintf("%s (family %s, model %s)", field("model name"), field("cpu family"), field("model"))
}

// ticks are the machine's CPU time by kind, from /proc/stat, in clock ticks.
type ticks struct{ busy, idle, steal uint64 }

func hostTicks() ticks {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ticks{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return ticks{}
	}
	var n [8]uint64
	for i := range n {
		n[i], _ = strconv.ParseUint(f[i+1], 10, 64)
	}
	return ticks{busy: n[0] + n[1] + n[2] + n[5] + n[6], idle: n[3] + n[4], steal: n[7]}
}

// since describes the time from t0 to t: how busy the machine's CPUs
// were (this process, the database and anything else) and how much time
// the hypervisor took from them.
func (t ticks) since(t0 ticks) string {
	busy, idle, steal := t.busy-t0.busy, t.idle-t0.idle, t.steal-t0.steal
	all := busy + idle + steal
	if all == 0 {
		return "not known (no /proc/stat)"
	}
	return fmt.Sprintf("CPUs %.0f%% busy, %.0f%% idle, %.0f%% stolen by the hypervisor",
		100*float64(busy)/float64(all), 100*float64(idle)/float64(all), 100*float64(steal)/float64(all))
}

// usage is the CPU time this process has used, user and system (per
// pair, a figure that varies less with the machine's load than the rate;
// PostgreSQL's own processes are not in it), and the most memory it has
// held, in bytes.
func usage() (cpu time.Duration, maxRSS int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Maxrss << 10 // Linux reports KiB
}

func machineNamed(h string) store.Machine {
	return store.Machine{Hostname: h, Backend: "gce", Dimensions: store.Dimensions{"os": {"linux"}, "cpus": {"8"}, "zone": {"us-central1-a"}},
		Connection: store.Connection{Address: "10.0.0.1", Port: 8443}}
}

// database returns a fresh database of kind and how to drop it.
func database(ctx context.Context, kind string) (string, func(), error) {
	switch kind {
	case "sqlite":
		dir, err := os.MkdirTemp("", "provider-bench-")
		if err != nil {
			return "", nil, err
		}
		return filepath.Join(dir, "bench.db"), func() { os.RemoveAll(dir) }, nil
	case "postgres":
		admin := os.Getenv("GCEFLEET_TEST_POSTGRES")
		if admin == "" {
			admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
		}
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return "", nil, fmt.Errorf("PostgreSQL at %s: %w", admin, err)
		}
		name := fmt.Sprintf("gcefleet_bench_%d", time.Now().UnixNano())
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			conn.Close(ctx)
			return "", nil, err
		}
		i := strings.LastIndex(admin, "/")
		q := ""
		if j := strings.IndexByte(admin[i:], '?'); j >= 0 {
			q = admin[i+j:]
		}
		return admin[:i+1] + name + q, func() {
			conn.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
			conn.Close(context.Background())
		}, nil
	}
	return "", nil, fmt.Errorf("unknown store %q: sqlite or postgres", kind)
}
