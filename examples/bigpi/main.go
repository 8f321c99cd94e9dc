// Command bigpi estimates π by sampling random points in the unit square on
// many machines and counting those that fall inside the quarter circle.
//
//	go run ./examples/bigpi -nmach=4 -samples=1e9
//
// It is the smallest complete bigmachine program: the same binary is the
// driver and, on each machine, the worker that serves the Pi service.
package main

import (
	"context"
	"encoding/gob"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/system/gce"
	"github.com/gcefleet/gcefleet/system/local"
	"github.com/gcefleet/gcefleet/system/pool"
)

// Pi is the service each machine serves.
type Pi struct{}

func init() { gob.Register(Pi{}) }

// Chunk is a share of the sampling: N samples from the stream Seed.
type Chunk struct {
	N    uint64
	Seed uint64
}

// Sample draws c.N points on all of the machine's CPUs and returns how many
// fall inside the quarter circle.
func (Pi) Sample(ctx context.Context, c Chunk, inside *uint64) error {
	procs := runtime.GOMAXPROCS(0)
	var total atomic.Uint64
	var wg sync.WaitGroup
	for i := range procs {
		n := c.N / uint64(procs)
		if i == 0 {
			n += c.N % uint64(procs)
		}
		wg.Go(func() { total.Add(sample(n, c.Seed, uint64(i))) })
	}
	wg.Wait()
	*inside = total.Load()
	return ctx.Err()
}

// sample is the inner loop: n points from the PCG stream (seed, stream).
func sample(n, seed, stream uint64) uint64 {
	r := rand.NewPCG(seed, stream)
	var in uint64
	for range n {
		x := float64(r.Uint64()>>11) * 0x1p-53
		y := float64(r.Uint64()>>11) * 0x1p-53
		if x*x+y*y <= 1 {
			in++
		}
	}
	return in
}

func main() {
	os.Exit(run())
}

// prefixWriter writes each line it is given as bigpi's: the flag
// package writes one line a call.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, "bigpi: "); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}

// sayAll prints each line of err (such as a system's joined problems with
// its flags) as bigpi's.
func sayAll(err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(os.Stderr, "bigpi:", line)
	}
}

func run() int {
	gcecfg := gce.DefaultConfig()
	gcecfg.RegisterFlags(flag.CommandLine)
	poolcfg := pool.DefaultConfig()
	poolcfg.RegisterFlags(flag.CommandLine)
	var (
		system  = flag.String("system", "local", "where machines come from: local (child processes), gce (Compute Engine; see the -gce.* flags) or pool (warm machines leased from the Machine Provider; see the -pool.* flags)")
		nmach   = flag.Int("nmach", 2, "number of machines")
		samples = flag.String("samples", "1e9", "number of samples, such as 1e9 or 3000000000")
		single  = flag.Bool("single", false, "sample in this process on one CPU, without machines (the baseline)")
		timeout = flag.Duration("start-timeout", 2*time.Minute, "how long machines may take to start; those that take longer fail and bigpi goes on without them")
		debug   = flag.String("debug", "", "serve bigmachine's status page and merged profiles at http://`ADDR`/debug/bigmachine/ while bigpi runs, such as localhost:8080 (empty: none)")
	)
	// bigpi's own flags are read from BIGPI_NAME too (the -gce.* ones from
	// GCEFLEET_NAME, the -pool.* ones from the variables their help
	// names); the command line wins, as it is parsed after.
	var envErr error
	flag.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "gce.") || strings.HasPrefix(f.Name, "pool.") {
			return
		}
		name := "BIGPI_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		f.Usage += " (env " + name + ")"
		if v := os.Getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintln(os.Stderr, "bigpi:", envErr)
		return 2
	}
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `Usage: bigpi [flags]

bigpi estimates π on -nmach machines, each sampling with all its CPUs, and
prints the estimate, its error and the sampling rate.

Examples:
  go run ./examples/bigpi -system=local -nmach=4 -samples=1e9
  go run ./examples/bigpi -nmach=4 -samples=1e11 -debug=localhost:8080
  go run ./examples/bigpi -system=gce -nmach=8 -samples=1e11 \
      -gce.project=my-project -gce.zones=us-central1-a,us-central1-b \
      -gce.image=gcr.io/my-project/gceboot:v1
  GCEFLEET_PROVIDER=http://127.0.0.1:8790 GCEFLEET_TOKEN_FILE=~/.gcefleet-token \
      go run ./examples/bigpi -system=pool -nmach=4 -pool.dim cpus=2

On -system=pool, give the provider's client token in GCEFLEET_TOKEN or a file
(-pool.token-file): a -pool.token on the command line is readable by every
user of this host, in /proc.

Flags:
`)
		flag.PrintDefaults()
	}
	// A mistake in a flag is said in one line of bigpi's, not above the
	// whole usage; what the flags say as they are set (a deprecated
	// name) is bigpi's too.
	usage := flag.Usage
	flag.CommandLine.Init("bigpi", flag.ContinueOnError)
	flag.CommandLine.Usage = func() {}
	flag.CommandLine.SetOutput(prefixWriter{os.Stderr})
	err := flag.CommandLine.Parse(os.Args[1:])
	flag.CommandLine.SetOutput(os.Stderr)
	flag.CommandLine.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage()
		return 0
	case err != nil:
		fmt.Fprintln(os.Stderr, "bigpi -help lists the flags.")
		return 2
	}
	// Machines run this same program with the same flags; on them,
	// bigmachine.Start serves and never returns.
	var sys bigmachine.System
	switch *system {
	case "local":
		sys = local.New()
	case "gce":
		// Say what is wrong with the flags before any machine is made.
		if err := gcecfg.Validate(); err != nil && !bigmachine.Worker() {
			sayAll(err)
			return 2
		}
		sys = gce.New(gcecfg)
	case "pool":
		if err := poolcfg.Validate(); err != nil && !bigmachine.Worker() {
			sayAll(err)
			return 2
		}
		sys = pool.New(poolcfg)
	default:
		fmt.Fprintf(os.Stderr, "bigpi: unknown -system %q; use local, gce or pool\n", *system)
		return 2
	}
	f, err := strconv.ParseFloat(*samples, 64)
	if err != nil || f < 1 || f > math.MaxUint64/2 || f != math.Trunc(f) {
		fmt.Fprintf(os.Stderr, "bigpi: -samples %q is not a whole number of samples, like 1e9\n", *samples)
		return 2
	}
	n := uint64(f)
	if *timeout <= 0 {
		fmt.Fprintf(os.Stderr, "bigpi: -start-timeout %v: give a positive duration, like 2m\n", *timeout)
		return 2
	}
	if *nmach < 1 {
		fmt.Fprintf(os.Stderr, "bigpi: -nmach %d: need at least one machine\n", *nmach)
		return 2
	}
	// Ctrl-C (or SIGTERM) cancels ctx, saying so at once; a second one
	// kills, as signals do by default.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wasInterrupted atomic.Bool
	sigs := make(chan os.Signal, 1)
	if !bigmachine.Worker() {
		// On a machine, a SIGTERM is its end (its instance is going),
		// which the driver hears of: the machine does not speak for it.
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	}
	go func() {
		select {
		case <-sigs:
			signal.Stop(sigs)
			wasInterrupted.Store(true)
			fmt.Fprintln(os.Stderr, "\nbigpi: interrupted; stopping its machines (Ctrl-C again to quit at once)")
			cancel()
		case <-ctx.Done():
		}
	}()

	if *single {
		start := time.Now()
		in := sample(n, 1, 0)
		report(os.Stdout, in, n, "1 CPU of this process", time.Since(start))
		return 0
	}

	b := bigmachine.Start(sys, bigmachine.WithStartTimeout(*timeout))
	defer b.Shutdown()
	// After Ctrl-C, the calls that fail are the ones it cancelled: say
	// that the machines are stopped rather than how each call failed.
	interrupted := func() int {
		b.Shutdown()
		fmt.Fprintln(os.Stderr, "bigpi: interrupted; its machines are stopped")
		return 130
	}
	start := time.Now()
	facts := []bigmachine.Fact{{Name: "program", Value: fmt.Sprintf("bigpi: %s, %d samples", count(*nmach, "machine"), n)}}
	if g, ok := sys.(*gce.System); ok {
		fmt.Fprintf(os.Stderr, "run %s: instances are labelled %s=%s\n", g.Run(), gce.RunLabel, g.Run())
		facts = append(facts, bigmachine.Fact{Name: "run", Value: g.Run()}, bigmachine.Fact{Name: "project", Value: gcecfg.Project},
			bigmachine.Fact{Name: "zones", Value: strings.Join(gcecfg.Zones, ", ")})
	}
	if p, ok := sys.(*pool.System); ok {
		fmt.Fprintf(os.Stderr, "run %s: lease requests are %s-0001, %s-0002, ...\n", p.Run(), p.Run(), p.Run())
		facts = append(facts, bigmachine.Fact{Name: "run", Value: p.Run()}, bigmachine.Fact{Name: "provider", Value: poolcfg.Provider})
	}
	if *debug != "" {
		// Only the driver gets here: on machines, Start never returns.
		stopDebug, err := serveDebug(*debug, b, facts)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bigpi:", err)
			return 2
		}
		defer stopDebug()
	}
	fmt.Fprintf(os.Stderr, "starting %s...\n", count(*nmach, sys.Name()+" machine"))
	stopWatch := watchStart(os.Stderr, b, *nmach, start, startProgressEvery)
	// The machines run with this command line, less a -pool.token: the
	// token is the driver's, not theirs.
	machines, err := b.Start(ctx, *nmach, bigmachine.Services{"Pi": Pi{}}, bigmachine.Args(withoutToken(os.Args[1:])))
	stopWatch()
	if wasInterrupted.Load() {
		return interrupted()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bigpi:", err)
		if len(machines) == 0 {
			return 1
		}
		fmt.Fprintf(os.Stderr, "going on with %s\n", count(len(machines), "machine"))
	}
	fmt.Fprintf(os.Stderr, "%s running after %v\n", count(len(machines), "machine"), time.Since(start).Round(time.Millisecond))

	in, err := estimate(ctx, machines, n, progress(os.Stderr, n))
	if wasInterrupted.Load() {
		return interrupted()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bigpi:", err)
		return 1
	}
	report(os.Stdout, in, n, count(len(machines), sys.Name()+" machine"), time.Since(start))
	return 0
}

// serveDebug serves b's debugging pages on addr until stop is called.
func serveDebug(addr string, b *bigmachine.B, facts []bigmachine.Fact) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-debug %s: %w (give a free host:port, such as localhost:8080)", addr, err)
	}
	mux := http.NewServeMux()
	b.HandleDebug(mux, facts...)
	mux.Handle("GET /{$}", http.RedirectHandler("/debug/bigmachine/", http.StatusFound))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(os.Stderr, "status page: http://%s/debug/bigmachine/\n", ln.Addr())
	return func() { srv.Close() }, nil
}

// startProgressEvery is how often a slow start says where it is: cloud
// machines take tens of seconds to boot.
const startProgressEvery = 5 * time.Second

// watchStart writes, every period until stop is called, how many of b's n
// machines are running, starting and failed.
func watchStart(w io.Writer, b *bigmachine.B, n int, start time.Time, period time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ms := b.Machines()
			if len(ms) == 0 {
				fmt.Fprintf(w, "  making %s (%v)\n", count(n, "machine"), time.Since(start).Round(time.Second))
				continue
			}
			var running, starting, failed int
			for _, m := range ms {
				switch m.State() {
				case bigmachine.Running:
					running++
				case bigmachine.Stopped:
					failed++
				default:
					starting++
				}
			}
			fmt.Fprintf(w, "  %d of %d machines running, %d starting, %d failed (%v)\n", running, n, starting, failed, time.Since(start).Round(time.Second))
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// estimate spreads n samples over the machines in chunks, which each
// machine takes as it finishes the last, so faster machines do more. The
// chunks shrink as the work runs out (guided self-scheduling), so that no
// machine is left with a big last chunk while the others idle.
func estimate(ctx context.Context, machines []*bigmachine.Machine, n uint64, done func(uint64)) (uint64, error) {
	nm := uint64(len(machines))
	largest := max(n/(8*nm), 1)
	const smallest = 1 << 20
	type job struct{ n, seed uint64 }
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		var seed uint64
		for left := n; left > 0; {
			c := min(max(left/(4*nm), smallest), largest, left)
			seed++
			select {
			case jobs <- job{c, seed}:
			case <-ctx.Done():
				return
			}
			left -= c
		}
	}()
	var total atomic.Uint64
	errs := make([]error, len(machines))
	var wg sync.WaitGroup
	for i, m := range machines {
		wg.Go(func() {
			for j := range jobs {
				var in uint64
				if err := m.RetryCall(ctx, "Pi.Sample", Chunk{N: j.n, Seed: j.seed}, &in); err != nil {
					errs[i] = fmt.Errorf("%s: %w", m.Name(), err)
					return
				}
				total.Add(in)
				done(j.n)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return total.Load(), ctx.Err()
}

// progress returns a function that counts finished samples and shows the
// share done, at most a few times a second.
func progress(w io.Writer, total uint64) func(uint64) {
	var mu sync.Mutex
	var done uint64
	var last time.Time
	start := time.Now()
	return func(n uint64) {
		mu.Lock()
		defer mu.Unlock()
		done += n
		if time.Since(last) < 250*time.Millisecond && done < total {
			return
		}
		last = time.Now()
		rate := float64(done) / time.Since(start).Seconds()
		fmt.Fprintf(w, "sampled %5.1f%%  %.3g samples/s\n", 100*float64(done)/float64(total), rate)
	}
}

func report(w io.Writer, in, n uint64, where string, took time.Duration) {
	pi := 4 * float64(in) / float64(n)
	fmt.Fprintf(w, "π ≈ %.10f  error %+.3g  (%d samples on %s in %v, %.3g samples/s)\n",
		pi, pi-math.Pi, n, where, took.Round(time.Millisecond), float64(n)/took.Seconds())
}

// count says n of what, in the singular for one: "1 machine", "4 machines".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// withoutToken returns args without the -pool.token flag and its value.
func withoutToken(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "pool.token" {
			if !hasValue {
				i++ // the value is the next argument
			}
			continue
		}
		out = append(out, a)
	}
	return out
}
