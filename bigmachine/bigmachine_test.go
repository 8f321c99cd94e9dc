package bigmachine_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/system/local"
)

// TestMain lets the test binary be a worker, as every bigmachine program
// is, and a driver for the test that kills one.
func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(bigmachine.EnvConfig); ok {
		bigmachine.Start(local.New())
	}
	if os.Getenv("BIGMACHINE_TEST_DRIVER") == "1" {
		killableDriver()
		return
	}
	os.Exit(m.Run())
}

// Echo is the service the tests call.
type Echo struct{ Greeting string }

func init() { gob.Register(Echo{}) }

func (e Echo) Hello(ctx context.Context, name string, reply *string) error {
	*reply = e.Greeting + ", " + name
	return nil
}

func (Echo) Pid(ctx context.Context, _ struct{}, pid *int) error { *pid = os.Getpid(); return nil }

func (Echo) Getenv(ctx context.Context, key string, v *string) error { *v = os.Getenv(key); return nil }

func (Echo) Print(ctx context.Context, s string, _ *struct{}) error {
	_, err := os.Stdout.WriteString(s)
	return err
}

func (Echo) Fail(ctx context.Context, msg string, _ *struct{}) error { return errors.New(msg) }

// Block waits for the call's context to end.
func (Echo) Block(ctx context.Context, _ struct{}, _ *struct{}) error {
	<-ctx.Done()
	return ctx.Err()
}

// Count counts the bytes of a streamed argument.
func (Echo) Count(ctx context.Context, r io.Reader, n *int64) error {
	var err error
	*n, err = io.Copy(io.Discard, r)
	return err
}

// Ready is a service with an Init, which runs on the machine before it is
// Running.
type Ready struct {
	Inited   bool
	OnDriver bool
}

func init() { gob.Register(&Ready{}) }

func (r *Ready) Init(b *bigmachine.B) error {
	r.Inited, r.OnDriver = true, b.IsDriver()
	return nil
}

func (r *Ready) State(ctx context.Context, _ struct{}, out *Ready) error { *out = *r; return nil }

func fastSystem(opts ...local.Option) *local.System {
	return local.New(append([]local.Option{local.WithKeepalive(100*time.Millisecond, 2*time.Second)}, opts...)...)
}

// start starts n machines on sys with the Echo service and shuts them down
// when the test ends.
func start(t *testing.T, sys bigmachine.System, n int, ps ...bigmachine.Param) (*bigmachine.B, []*bigmachine.Machine, *testutil.SyncBuffer) {
	t.Helper()
	out := &testutil.SyncBuffer{}
	b := bigmachine.Start(sys, bigmachine.WithOutput(out), bigmachine.WithStartTimeout(time.Minute))
	t.Cleanup(b.Shutdown)
	ps = append([]bigmachine.Param{bigmachine.Services{"Echo": Echo{Greeting: "hello"}}}, ps...)
	ms, err := b.Start(context.Background(), n, ps...)
	if err != nil {
		t.Fatalf("%v\nthe machines' output:\n%s", err, out)
	}
	return b, ms, out
}

// start2 starts two machines with options for the B.
func start2(t *testing.T, sys bigmachine.System, opts ...bigmachine.Option) (*bigmachine.B, []*bigmachine.Machine) {
	t.Helper()
	b := bigmachine.Start(sys, append([]bigmachine.Option{bigmachine.WithOutput(io.Discard)}, opts...)...)
	t.Cleanup(b.Shutdown)
	ms, err := b.Start(context.Background(), 2, bigmachine.Services{"Echo": Echo{}})
	if err != nil {
		t.Fatal(err)
	}
	return b, ms
}

func TestStartCallShutdown(t *testing.T) {
	b, ms, out := start(t, fastSystem(), 3, bigmachine.Environ{"BIGMACHINE_TEST_VAR=seven"}, bigmachine.Services{"Ready": &Ready{}})
	ctx := context.Background()
	var ready Ready
	if err := ms[0].Call(ctx, "Ready.State", struct{}{}, &ready); err != nil || !ready.Inited || ready.OnDriver {
		t.Errorf("Init on the machine: %+v, %v", ready, err)
	}
	if len(ms) != 3 || len(b.Machines()) != 3 {
		t.Fatalf("started %d machines, B has %d", len(ms), len(b.Machines()))
	}
	pids := map[int]bool{}
	for _, m := range ms {
		if m.State() != bigmachine.Running || m.Err() != nil || m.Maxprocs < 1 || !strings.HasPrefix(m.Addr, "127.0.0.1:") {
			t.Errorf("machine %s: state %v, err %v, maxprocs %d, addr %s", m.Name(), m.State(), m.Err(), m.Maxprocs, m.Addr)
		}
		var got string
		if err := m.Call(ctx, "Echo.Hello", m.Name(), &got); err != nil || got != "hello, "+m.Name() {
			t.Errorf("Echo.Hello on %s: %q, %v", m.Name(), got, err)
		}
		if err := m.Call(ctx, "Echo.Getenv", "BIGMACHINE_TEST_VAR", &got); err != nil || got != "seven" {
			t.Errorf("Environ did not reach %s: %q, %v", m.Name(), got, err)
		}
		if err := m.Call(ctx, "Echo.Getenv", bigmachine.EnvConfig, &got); err != nil || got != "" {
			t.Errorf("the machine's credentials are still in its environment: %q, %v", got, err)
		}
		var pid int
		if err := m.Call(ctx, "Echo.Pid", struct{}{}, &pid); err != nil {
			t.Fatal(err)
		}
		pids[pid] = true
	}
	if len(pids) != 3 || pids[os.Getpid()] {
		t.Errorf("machines ran in processes %v", pids)
	}
	// What a machine prints reaches the driver, line by line, under its name.
	if err := ms[1].Call(ctx, "Echo.Print", "a line\nand another\n", &struct{}{}); err != nil {
		t.Fatal(err)
	}

	err := ms[0].Call(ctx, "Echo.Fail", "out of cheese", &struct{}{})
	if !errors.Is(err, rpc.Remote) || !strings.Contains(err.Error(), "out of cheese") {
		t.Errorf("remote error: %v", err)
	}
	if err := ms[0].Call(ctx, "Echo.Nope", "", &struct{}{}); !errors.Is(err, rpc.Invalid) {
		t.Errorf("unknown method: %v", err)
	}
	var n int64
	if err := ms[0].Call(ctx, "Echo.Count", io.Reader(strings.NewReader(strings.Repeat("x", 1<<20))), &n); err != nil || n != 1<<20 {
		t.Errorf("streamed %d bytes, %v", n, err)
	}

	b.Shutdown() // waits for the machines' processes, and so their output
	for _, line := range []string{ms[1].Name() + ": a line\n", ms[1].Name() + ": and another\n"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("driver output lacks %q:\n%s", line, out)
		}
	}
	for _, m := range ms {
		if m.State() != bigmachine.Stopped {
			t.Errorf("%s is %v after Shutdown", m.Name(), m.State())
		}
		if err := m.Call(ctx, "Echo.Hello", "x", new(string)); !errors.Is(err, rpc.Unavailable) {
			t.Errorf("call after Shutdown: %v, want Unavailable", err)
		}
	}
	for pid := range pids {
		if testutil.Alive(pid) {
			t.Errorf("worker %d outlived Shutdown", pid)
		}
	}
}

// debugMetrics returns what b's debug handler serves as its metrics.
func debugMetrics(t *testing.T, b *bigmachine.B) string {
	t.Helper()
	mux := http.NewServeMux()
	b.HandleDebug(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/debug/bigmachine/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestFailedCompressionUploadsTheBinaryAsItIs makes the compression fail:
// the machines still start, each taking the binary as it is, and the one
// failed compression is not tried again by every machine.
func TestFailedCompressionUploadsTheBinaryAsItIs(t *testing.T) {
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	var calls atomic.Int32
	fail := func(string) ([]byte, error) {
		calls.Add(1)
		return nil, errors.New("out of memory, say")
	}
	b, ms := start2(t, fastSystem(local.WithBootstrap(boot)), bigmachine.WithCompression(bigmachine.CompressAlways), bigmachine.WithCompressor(fail))
	for _, m := range ms {
		if err := m.Call(context.Background(), "Echo.Pid", struct{}{}, new(int)); err != nil {
			t.Errorf("machine %s: %v", m.Name(), err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the binary was compressed %d times for one start; want once", n)
	}
	m := debugMetrics(t, b)
	if !strings.Contains(m, `bigmachine_rpc_calls_total{method="Supervisor.Upload",outcome="ok",side="client"} 2`) ||
		strings.Contains(m, `method="Supervisor.UploadZstd"`) {
		t.Errorf("uploads after a failed compression did not go as Supervisor.Upload:\n%s", m)
	}
	if !strings.Contains(m, `bigmachine_binary_compressions_total{outcome="error"} 1`+"\n") {
		t.Errorf("the failed compression is not counted:\n%s", m)
	}
}

// TestBootstrapShipsTheBinary starts machines from the gceboot bootstrap,
// as on Compute Engine: the driver must upload its binary and have it
// exec'd, and nothing may be left in the machines' TMPDIR.
func TestBootstrapShipsTheBinary(t *testing.T) {
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	b, ms, out := start(t, fastSystem(local.WithBootstrap(boot)), 2)
	// Uploads across a network go compressed; force that here.
	zb, compressed := start2(t, fastSystem(local.WithBootstrap(boot)), bigmachine.WithCompression(bigmachine.CompressAlways))
	if err := compressed[0].Call(context.Background(), "Echo.Pid", struct{}{}, new(int)); err != nil {
		t.Errorf("a machine sent its binary compressed: %v", err)
	}
	zm := debugMetrics(t, zb)
	if !strings.Contains(zm, `bigmachine_rpc_calls_total{method="Supervisor.UploadZstd",outcome="ok",side="client"} 2`) ||
		strings.Contains(zm, `method="Supervisor.Upload",`) {
		t.Errorf("compressed uploads did not go as Supervisor.UploadZstd:\n%s", zm)
	}
	// One compression, made by the first machine shipped, serves both.
	if !strings.Contains(zm, `bigmachine_binary_compressions_total{outcome="ok"} 1`+"\n") {
		t.Errorf("two compressed uploads did not share one compression:\n%s", zm)
	}
	// By default machines on loopback take the binary as it is, and the
	// driver never compresses it: not in the background either, where it
	// took CPU from the uploads.
	bm := debugMetrics(t, b)
	if !strings.Contains(bm, `bigmachine_rpc_calls_total{method="Supervisor.Upload",outcome="ok",side="client"} 2`) ||
		strings.Contains(bm, `method="Supervisor.UploadZstd"`) {
		t.Errorf("uploads to loopback machines did not go as Supervisor.Upload:\n%s", bm)
	}
	if !strings.Contains(bm, `bigmachine_binary_compressions_total{outcome="ok"} 0`+"\n") ||
		!strings.Contains(bm, `bigmachine_binary_compressions_total{outcome="error"} 0`+"\n") {
		t.Errorf("a start on loopback machines compressed the binary:\n%s", bm)
	}
	var pid int
	if err := ms[0].Call(context.Background(), "Echo.Pid", struct{}{}, &pid); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	// The uploaded binary lives in memory only, never on disk.
	if !strings.HasPrefix(exe, "/memfd:bigmachine-program") {
		t.Errorf("the machine runs %s; want the uploaded binary in a memory file", exe)
	}
	if !strings.Contains(out.String(), "gceboot serving") {
		t.Errorf("the bootstrap's output did not reach the driver:\n%s", out)
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("TMPDIR holds %v, %v while the machines run; want it empty", left, err)
	}
	b.Shutdown()
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("TMPDIR holds %v, %v after Shutdown; want it empty", left, err)
	}
}

func TestStartFailures(t *testing.T) {
	b := bigmachine.Start(fastSystem(), bigmachine.WithStartTimeout(30*time.Second), bigmachine.WithOutput(io.Discard))
	defer b.Shutdown()
	ctx := context.Background()

	type unregistered struct{}
	_, err := b.Start(ctx, 1, bigmachine.Services{"U": unregistered{}})
	if err == nil || !strings.Contains(err.Error(), "gob.Register") {
		t.Errorf("unregistered service: %v", err)
	}

	// A program that exits at once: the machine says why it did not start,
	// and a mistake that fails many machines is told a few times, not for
	// each of them.
	ms, err := b.Start(ctx, 5, bigmachine.Binary("/bin/false"))
	if len(ms) != 0 || err == nil || !strings.Contains(err.Error(), "0 of 5 machines started") || !strings.Contains(err.Error(), "exit status 1") ||
		strings.Count(err.Error(), "exit status 1") != 3 || !strings.Contains(err.Error(), "and 2 more machines failed to start") {
		t.Fatalf("start of /bin/false: %v, %v", ms, err)
	}
	for _, m := range b.Machines() {
		if m.State() != bigmachine.Stopped || m.Err() == nil {
			t.Errorf("failed machine %s: %v, %v", m.Name(), m.State(), m.Err())
		}
	}
}

// TestKilledWorker kills a worker with SIGKILL: the driver must stop the
// machine well within the keepalive timeout and fail calls, pending and
// future, as Unavailable.
func TestKilledWorker(t *testing.T) {
	_, ms, _ := start(t, fastSystem(), 2)
	ctx := context.Background()
	var pid int
	if err := ms[0].Call(ctx, "Echo.Pid", struct{}{}, &pid); err != nil {
		t.Fatal(err)
	}
	pending := make(chan error)
	go func() { pending <- ms[0].Call(ctx, "Echo.Block", struct{}{}, &struct{}{}) }()
	killed := time.Now()
	syscall.Kill(pid, syscall.SIGKILL)

	wctx, cancel := context.WithTimeout(ctx, 2*time.Second) // the keepalive timeout
	defer cancel()
	if s := ms[0].Wait(wctx, bigmachine.Stopped); s != bigmachine.Stopped {
		t.Fatalf("machine still %v after the keepalive timeout", s)
	}
	t.Logf("stopped %v after the kill: %v", time.Since(killed), ms[0].Err())
	if !strings.Contains(ms[0].Err().Error(), "signal: killed") {
		t.Errorf("Err = %v; want it to say the process was killed", ms[0].Err())
	}
	if err := <-pending; !errors.Is(err, rpc.Unavailable) {
		t.Errorf("pending call: %v, want Unavailable", err)
	}
	if err := ms[0].Call(ctx, "Echo.Pid", struct{}{}, &pid); !errors.Is(err, rpc.Unavailable) {
		t.Errorf("call after the kill: %v, want Unavailable", err)
	}
	if err := ms[0].RetryCall(ctx, "Echo.Pid", struct{}{}, &pid); !errors.Is(err, rpc.Unavailable) {
		t.Errorf("RetryCall after the kill: %v, want Unavailable", err)
	}
	// The other machine is untouched.
	if err := ms[1].Call(ctx, "Echo.Pid", struct{}{}, &pid); err != nil {
		t.Errorf("the other machine: %v", err)
	}
}

// killableDriver is a driver in its own process, for TestKilledDriver: it
// starts two machines, prints their pids and waits to be killed.
func killableDriver() {
	b := bigmachine.Start(local.New(local.WithKeepalive(100*time.Millisecond, time.Second)))
	ms, err := b.Start(context.Background(), 2, bigmachine.Services{"Echo": Echo{}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for _, m := range ms {
		var pid int
		if err := m.Call(context.Background(), "Echo.Pid", struct{}{}, &pid); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("worker", pid)
	}
	fmt.Println("ready")
	select {}
}

// TestKilledDriver kills a driver with SIGKILL: its workers must be gone
// once their keepalive lapses.
func TestKilledDriver(t *testing.T) {
	cmd, stdout := testutil.StartProcess(t, []string{"BIGMACHINE_TEST_DRIVER=1"}, os.Args[0], "-test.run=^$")
	var pids []int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		if p, ok := strings.CutPrefix(sc.Text(), "worker "); ok {
			pid, _ := strconv.Atoi(p)
			pids = append(pids, pid)
		} else {
			t.Fatalf("driver: %s", sc.Text())
		}
	}
	if len(pids) != 2 {
		t.Fatalf("driver reported workers %v", pids)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := time.Now()
	for _, pid := range pids {
		// The worker timeout is 1s.
		testutil.WaitGone(t, pid, 5*time.Second-time.Since(killed), "a worker of the killed driver")
	}
	t.Logf("workers gone %v after the driver was killed", time.Since(killed))
}

func TestDebugPages(t *testing.T) {
	b, ms, _ := start(t, fastSystem(), 2)
	mux := http.NewServeMux()
	b.HandleDebug(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) []byte {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
		}
		return body
	}
	// Keepalives fill in the machines' vital signs.
	for _, m := range ms {
		var pid int
		m.Call(context.Background(), "Echo.Pid", struct{}{}, &pid)
	}
	status := string(get("/debug/bigmachine/"))
	for _, m := range ms {
		if !strings.Contains(status, m.Name()) || !strings.Contains(status, m.Addr) {
			t.Errorf("status page lacks %s", m.Name())
		}
	}
	if strings.Count(status, "<td>Running</td>") != 2 {
		t.Errorf("status page:\n%s", status)
	}

	p, err := profile.ParseData(get("/debug/bigmachine/pprof/goroutine"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sample) == 0 {
		t.Error("merged goroutine profile has no samples")
	}
	if _, err := profile.ParseData(get("/debug/bigmachine/pprof/heap?machine=" + ms[1].Name())); err != nil {
		t.Error(err)
	}

	var vars map[string]map[string]any
	if err := json.Unmarshal(get("/debug/bigmachine/vars"), &vars); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if vars[m.Name()]["memstats"] == nil {
			t.Errorf("vars of %s: %v", m.Name(), vars[m.Name()])
		}
	}
	metrics := string(get("/debug/bigmachine/metrics"))
	if !strings.Contains(metrics, `bigmachine_rpc_calls_total{method="Echo.Pid",outcome="ok",side="client"} 2`) {
		t.Errorf("metrics lack the Echo.Pid calls:\n%s", metrics)
	}
}

// TestMissingLoaderIsExplained: a dynamically linked binary whose loader
// the machine lacks (a cgo build shipped to an image without a C library)
// fails to start with a message that says so and how to fix it, rather
// than a bootstrap that dies at exec.
func TestMissingLoaderIsExplained(t *testing.T) {
	// /bin/true is dynamically linked wherever there is a C library; point
	// a copy of it at a loader that does not exist, as an image without
	// one would have it.
	f, err := elf.Open("/bin/true")
	if err != nil {
		testutil.Lacks(t, "a dynamically linked ELF /bin/true ("+err.Error()+")")
	}
	defer f.Close()
	var loader []byte
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			loader, _ = io.ReadAll(p.Open())
		}
	}
	const missing = "/x"
	if len(loader) <= len(missing) {
		testutil.Lacks(t, "a dynamically linked /bin/true")
	}
	bin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	bin = bytes.Replace(bin, loader, append([]byte(missing), make([]byte, len(loader)-len(missing))...), 1)
	patched := filepath.Join(t.TempDir(), "dynamic")
	if err := os.WriteFile(patched, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	b := bigmachine.Start(fastSystem(local.WithBootstrap(boot)), bigmachine.WithStartTimeout(time.Minute), bigmachine.WithOutput(io.Discard))
	defer b.Shutdown()
	_, err = b.Start(context.Background(), 1, bigmachine.Binary(patched))
	if err == nil || !strings.Contains(err.Error(), "dynamically linked and needs "+missing+", which this machine lacks: build the driver with CGO_ENABLED=0") {
		t.Errorf("start of a binary whose loader is missing: %v", err)
	}
}
