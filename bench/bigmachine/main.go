// Command bigmachine measures the bigmachine runtime on the local system
// and prints figures to compare with docs/benchmarks.md:
//
//	go run ./bench/bigmachine              # everything (about a minute)
//	go run ./bench/bigmachine -only=rpc    # one: startup, rpc, stream, bigpi
//
// Each figure comes with a baseline measured in the same run: plain
// HTTP/2-over-TLS for the RPC figures, a single-process loop for bigpi.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/gob"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/system/local"
)

// Bench is the service the benchmarks call.
type Bench struct{}

func init() { gob.Register(Bench{}) }

// Ping answers a small call.
func (Bench) Ping(ctx context.Context, x int, y *int) error { *y = x + 1; return nil }

// Count reads a streamed argument to its end.
func (Bench) Count(ctx context.Context, r io.Reader, n *int64) error {
	var err error
	*n, err = io.Copy(io.Discard, r)
	return err
}

func main() {
	sys := local.New()
	b := bigmachine.Start(sys, bigmachine.WithOutput(os.Stderr))
	only := flag.String("only", "", "run one benchmark: startup, rpc, stream or bigpi")
	plainChild := flag.Bool("plain-server", false, "internal: serve plain HTTP/2 for the RPC baseline")
	startupChild := flag.Int("startup-child", 0, "internal: start this many machines and report")
	samples := flag.Uint64("samples", 3e9, "bigpi samples")
	profile := flag.String("profile", "", "write CPU profiles of the driver and the first machine to `PREFIX`-driver.pprof and PREFIX-machine.pprof")
	procs := flag.Int("baseline-procs", 0, "run the driver and the RPC baselines' server with GOMAXPROCS `N` (0: all CPUs), to see what the Go scheduler's hand-offs between threads cost a round trip")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
		os.Setenv("GOMAXPROCS", strconv.Itoa(*procs)) // for plainH2's child
	}
	if *profile != "" {
		f, err := os.Create(*profile + "-driver.pprof")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	defer b.Shutdown()
	ctx := context.Background()
	if *plainChild {
		fmt.Fprintln(os.Stderr, plainServer())
		os.Exit(1)
	}
	if *startupChild > 0 {
		if _, err := b.Start(ctx, *startupChild, bigmachine.Services{"Bench": Bench{}}); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("running")
		b.Shutdown()
		return
	}
	run := func(name string, f func(context.Context, *bigmachine.B) error) {
		if *only != "" && *only != name {
			return
		}
		if err := f(ctx, b); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
	}
	fmt.Printf("bigmachine benchmarks, local system, %d CPUs, %s\n\n", runtime.NumCPU(), time.Now().Format(time.DateOnly))
	run("startup", startup)
	run("rpc", func(ctx context.Context, b *bigmachine.B) error { return rpcBench(ctx, b, *profile) })
	run("stream", stream)
	run("bigpi", func(ctx context.Context, b *bigmachine.B) error { return bigpi(ctx, b, *samples) })
}

// startup times a fresh driver process from exec to n machines Running,
// median of 5 runs each.
func startup(ctx context.Context, b *bigmachine.B) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	for _, n := range []int{1, 8} {
		var times []time.Duration
		for range 5 {
			start := time.Now()
			cmd := exec.Command(exe, fmt.Sprintf("-startup-child=%d", n))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			if err := cmd.Start(); err != nil {
				return err
			}
			line, _ := bufio.NewReader(out).ReadString('\n')
			took := time.Since(start)
			if strings.TrimSpace(line) != "running" {
				cmd.Wait()
				return fmt.Errorf("child: %q", line)
			}
			cmd.Wait()
			times = append(times, took)
		}
		slices.Sort(times)
		fmt.Printf("startup: program start to %d machines Running: median %v (of %v)\n", n, times[len(times)/2].Round(time.Millisecond), roundAll(times))
	}
	fmt.Println()
	return nil
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// rpcBench measures small calls: sequential latency and throughput with 32
// callers, beside the same over plain HTTP/2 with TLS (no gob, no RPC).
func rpcBench(ctx context.Context, b *bigmachine.B, profilePrefix string) error {
	ms, err := b.Start(ctx, 1, bigmachine.Services{"Bench": Bench{}})
	if err != nil {
		return err
	}
	m := ms[0]
	if profilePrefix != "" {
		var rc io.ReadCloser
		if err := m.Call(ctx, "Supervisor.Profile", bigmachine.ProfileRequest{Name: "profile", Seconds: 8}, &rc); err != nil {
			return err
		}
		go func() {
			f, _ := os.Create(profilePrefix + "-machine.pprof")
			io.Copy(f, rc)
			f.Close()
		}()
	}
	call := func() error {
		var y int
		return m.Call(ctx, "Bench.Ping", 1, &y)
	}
	plain, bare, stop, err := plainH2()
	if err != nil {
		return err
	}
	defer stop()
	kinds := []struct {
		name string
		f    func() error
	}{
		{"bigmachine Machine.Call", call},
		{"rpc.Client.Call, no bigmachine", bare},
		{"baseline: bare HTTP/2 POST over TLS", func() error { return plain(strings.NewReader("x")) }},
	}
	for range 2000 { // warm up all
		for _, k := range kinds {
			k.f()
		}
	}
	const n = 20000
	for _, c := range kinds {
		lat := make([]time.Duration, n)
		for i := range lat {
			t := time.Now()
			if err := c.f(); err != nil {
				return err
			}
			lat[i] = time.Since(t)
		}
		slices.Sort(lat)
		fmt.Printf("rpc: %-36s sequential round trip p50 %v  p99 %v\n", c.name, lat[n/2].Round(time.Microsecond), lat[n*99/100].Round(time.Microsecond))
	}
	for _, c := range kinds {
		const callers, dur = 32, 3 * time.Second
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := 0
		deadline := time.Now().Add(dur)
		start := time.Now()
		for range callers {
			wg.Go(func() {
				k := 0
				for time.Now().Before(deadline) {
					if c.f() == nil {
						k++
					}
				}
				mu.Lock()
				total += k
				mu.Unlock()
			})
		}
		wg.Wait()
		fmt.Printf("rpc: %-36s %d concurrent callers: %.0f calls/s\n", c.name, callers, float64(total)/time.Since(start).Seconds())
	}
	fmt.Println()
	return nil
}

// plainH2 starts this program as a plain HTTP/2-over-TLS server in a child
// process and returns two ways to call it: a bare POST whose handler does
// nothing (the floor under any RPC), and an rpc.Client call of Bench.Ping
// served by an rpc.Server (the RPC layer without bigmachine's machines).
func plainH2() (plain func(io.Reader) error, bare func() error, stop func(), err error) {
	cert, err := testutil.SelfSigned("bench")
	if err != nil {
		return nil, nil, nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM, keyPEM := testutil.CertPEM(cert)
	cmd := exec.Command(exe, "-plain-server")
	cmd.Env = append(os.Environ(), "BENCH_CERT="+string(certPEM), "BENCH_KEY="+string(keyPEM))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		return nil, nil, nil, fmt.Errorf("plain server: %w", err)
	}
	base := "https://" + strings.TrimSpace(line)
	hc := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: testutil.CertPool(cert), ServerName: "bench", Certificates: []tls.Certificate{cert}}}}
	rc := &rpc.Client{HTTP: hc}
	plain = func(body io.Reader) error {
		resp, err := hc.Post(base+"/plain", "application/octet-stream", body)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	bare = func() error {
		var y int
		return rc.Call(context.Background(), base, "Bench.Ping", 1, &y)
	}
	return plain, bare, func() { cmd.Process.Kill(); cmd.Wait() }, nil
}

// plainServer serves plainH2's child.
func plainServer() error {
	cert, err := tls.X509KeyPair([]byte(os.Getenv("BENCH_CERT")), []byte(os.Getenv("BENCH_KEY")))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	rs := rpc.NewServer()
	rs.Register("Bench", Bench{})
	mux := http.NewServeMux()
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	})
	mux.Handle("/", rs)
	// Both ends authenticated, as a driver and its machines are: the
	// baseline pays for the same handshake, and serves no stranger.
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: testutil.CertPool(cert)}}
	return srv.ServeTLS(ln, "", "")
}

// stream measures the throughput of a streamed io.Reader argument.
func stream(ctx context.Context, b *bigmachine.B) error {
	ms, err := b.Start(ctx, 1, bigmachine.Services{"Bench": Bench{}})
	if err != nil {
		return err
	}
	const size = 4 << 30
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	start := time.Now()
	var n int64
	if err := ms[0].Call(ctx, "Bench.Count", io.Reader(&repeat{buf: buf, left: size}), &n); err != nil {
		return err
	}
	took := time.Since(start)
	if n != size {
		return fmt.Errorf("streamed %d bytes, want %d", n, size)
	}
	fmt.Printf("stream: %d GiB io.Reader argument to a machine:         %.2f GB/s\n", size>>30, float64(size)/took.Seconds()/1e9)

	plain, _, stop, err := plainH2()
	if err != nil {
		return err
	}
	defer stop()
	start = time.Now()
	if err := plain(&repeat{buf: buf, left: size}); err != nil {
		return err
	}
	fmt.Printf("stream: baseline: bare HTTP/2 POST of %d GiB over TLS: %.2f GB/s\n\n", size>>30, float64(size)/time.Since(start).Seconds()/1e9)
	return nil
}

type repeat struct {
	buf  []byte
	left int64
}

func (r *repeat) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], r.buf)
	r.left -= int64(n)
	return n, nil
}

// bigpi runs examples/bigpi end to end, as a user would, with -nmach=2
// and with -single (one loop on one CPU, no machines), alternating, and
// reports efficiency = T_single / (2 x T_bigpi) for each pair.
func bigpi(ctx context.Context, _ *bigmachine.B, samples uint64) error {
	dir, err := os.MkdirTemp("", "bench-bigpi-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := dir + "/bigpi"
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/gcefleet/gcefleet/examples/bigpi").CombinedOutput(); err != nil {
		return fmt.Errorf("building bigpi: %v\n%s", err, out)
	}
	timed := func(args ...string) (time.Duration, error) {
		start := time.Now()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("bigpi %v: %v\n%s", args, err, out)
		}
		return time.Since(start), nil
	}
	n, half := fmt.Sprint(samples), fmt.Sprint(samples/2)
	for range 2 {
		single, err := timed("-single", "-samples="+n)
		if err != nil {
			return err
		}
		multi, err := timed("-nmach=2", "-samples="+n)
		if err != nil {
			return err
		}
		// The machine's own ceiling: two independent single loops at
		// once, each with half the samples, no runtime at all.
		var pair [2]time.Duration
		var errs [2]error
		var wg sync.WaitGroup
		for i := range pair {
			wg.Go(func() { pair[i], errs[i] = timed("-single", "-samples="+half) })
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			return fmt.Errorf("%v %v", errs[0], errs[1])
		}
		ceiling := max(pair[0], pair[1])
		fmt.Printf("bigpi: %.0e samples end to end: -single %v, -nmach=2 %v: efficiency %.3f; two half -single at once %v: hardware ceiling %.3f\n",
			float64(samples), single.Round(time.Millisecond), multi.Round(time.Millisecond), single.Seconds()/(2*multi.Seconds()),
			ceiling.Round(time.Millisecond), single.Seconds()/(2*ceiling.Seconds()))
	}
	return nil
}
