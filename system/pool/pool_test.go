package pool_test

import (
	"context"
	"crypto"
	"encoding/gob"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/system/pool"
)

// TestMain makes the test binary a worker when a pool machine's gceboot
// execs it, and builds gcefleet and gceboot once for the tests.
func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(bigmachine.EnvConfig); ok {
		bigmachine.Start(pool.New(pool.Config{}))
	}
	dir, err := os.MkdirTemp("", "pool-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gcefleet, err = testutil.GoBuildTo(dir, "github.com/gcefleet/gcefleet/cmd/gcefleet")
	if err == nil {
		gceboot, err = testutil.GoBuildTo(dir, "github.com/gcefleet/gcefleet/cmd/gceboot")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var gcefleet, gceboot string

// Hello is the service the machines serve.
type Hello struct{}

func init() { gob.Register(Hello{}) }

// Pid answers with the machine's process id.
func (Hello) Pid(ctx context.Context, _ struct{}, pid *int) error { *pid = os.Getpid(); return nil }

func config(url string) pool.Config {
	cfg := pool.DefaultConfig()
	cfg.Provider, cfg.Token, cfg.TokenFile = url, testutil.FleetClientToken, ""
	cfg.Dimensions = api.Dimensions{"cpus": {"2"}}
	return cfg
}

func request(n int) bigmachine.StartRequest {
	return bigmachine.StartRequest{N: n, CA: []byte("ca"), Sign: func(string, crypto.PublicKey) ([]byte, error) { return nil, nil }}
}

// TestStartWithoutMachines: with no pool machine in the catalog, Start
// waits its start timeout, then says which requests still wait for what,
// and releases their leases.
func TestStartWithoutMachines(t *testing.T) {
	url := testutil.ServeProvider(t, gcefleet, "")
	cfg := config(url)
	cfg.StartTimeout = 1500 * time.Millisecond
	sys := pool.New(cfg)
	began := time.Now()
	specs, err := sys.Start(context.Background(), request(3))
	if took := time.Since(began); took < cfg.StartTimeout || took > cfg.StartTimeout+5*time.Second {
		t.Errorf("Start gave up after %v; its start timeout is %v", took, cfg.StartTimeout)
	}
	if len(specs) != 0 || err == nil {
		t.Fatalf("Start with no machines: %v, %v", specs, err)
	}
	for _, want := range []string{"pool: 0 of 3 machines leased and claimed", "3 requests still waiting after 1.5s for a machine with cpus=2,gceboot=true", "released", "grow the group of a gceboot template that has them"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	alice := &client.Client{BaseURL: url, Token: testutil.FleetClientToken}
	ls, err := alice.Leases(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 3 {
		t.Fatalf("%d leases, want 3", len(ls))
	}
	for _, l := range ls {
		if l.State != api.Released || !strings.HasPrefix(l.Request.RequestID, sys.Run()+"-000") {
			t.Errorf("lease %s of request %s is %s, want RELEASED and a request id of run %s", l.ID, l.Request.RequestID, l.State, sys.Run())
		}
	}
	if err := sys.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestRetriedStartDoesNotDoubleLease: a second Start of the same run (a
// driver started again, say) makes the same requests, and the provider
// answers them with the first one's leases.
func TestRetriedStartDoesNotDoubleLease(t *testing.T) {
	url := testutil.ServeProvider(t, gcefleet, "")
	cfg := config(url)
	cfg.Run = "retried-run"
	cfg.StartTimeout = 3 * time.Second
	alice := &client.Client{BaseURL: url, Token: testutil.FleetClientToken}
	var wg sync.WaitGroup
	first := pool.New(cfg)
	wg.Go(func() { first.Start(context.Background(), request(2)) })
	testutil.WaitFor(t, "the first Start's requests", func() bool {
		ls, err := alice.Leases(context.Background(), true)
		return err == nil && len(ls) == 2
	})
	cfg.StartTimeout = time.Second
	second := pool.New(cfg)
	_, err := second.Start(context.Background(), request(2))
	if err == nil || !strings.Contains(err.Error(), "2 requests still waiting") {
		t.Errorf("second Start: %v", err)
	}
	wg.Wait()
	ls, err := alice.Leases(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, l := range ls {
		ids[l.Request.RequestID] = true
	}
	if len(ls) != 2 || !ids["retried-run-0001"] || !ids["retried-run-0002"] {
		t.Errorf("leases after two Starts of one run: %d, of requests %v; want the 2 of the first", len(ls), ids)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*pool.Config)
		want string
	}{
		{func(c *pool.Config) { c.Provider = "" }, "no provider: set -pool.provider or GCEFLEET_PROVIDER"},
		{func(c *pool.Config) { c.Provider = "127.0.0.1:8790" }, `provider "127.0.0.1:8790" is not a URL: write http://HOST:PORT`},
		{func(c *pool.Config) { c.Token = "" }, "no token: set GCEFLEET_TOKEN (or -pool.token-file)"},
		{func(c *pool.Config) { c.Token, c.TokenFile = "", "/nonexistent/token" }, "token file: open /nonexistent/token"},
		{func(c *pool.Config) { c.TokenFile = "/some/file" }, "both a token (-pool.token or GCEFLEET_TOKEN) and a token file"},
		{func(c *pool.Config) { c.Lease = time.Second }, "lease 1s: give a term of 10s to 24h0m0s (-pool.lease)"},
		{func(c *pool.Config) { c.Dimensions = api.Dimensions{"gceboot": {"false"}} }, "dimension gceboot=false: the pool system leases only pool machines"},
	} {
		cfg := config("http://127.0.0.1:8790")
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate: %v; want %q", err, tc.want)
		}
	}
	cfg := config("http://127.0.0.1:8790")
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate of a good configuration: %v", err)
	}
	tok := t.TempDir() + "/token"
	testutil.WriteFile(t, tok, []byte("from-a-file\n"))
	cfg.Token, cfg.TokenFile = "", tok
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with a token file: %v", err)
	}
}

// TestStartClaimRefused: a lease fulfilled with a machine that does not
// take the claim (here nothing answers at its address) fails that machine
// with the reason, and the lease is released at once, not left to expire.
func TestStartClaimRefused(t *testing.T) {
	url := testutil.ServeProvider(t, gcefleet, "")
	gce := &client.Client{BaseURL: url, Token: testutil.FleetBackendToken}
	ctx := context.Background()
	fleetCA, err := testutil.SelfSigned("fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := testutil.CertPEM(fleetCA)
	if _, err := gce.AddMachine(ctx, api.Machine{Hostname: "warm-1", Dimensions: api.Dimensions{"gceboot": {"true"}, "cpus": {"2"}, "instance_id": {"1001"}},
		Connection: api.Connection{Address: "127.0.0.1", Port: 1, CACert: string(caPEM)}}); err != nil {
		t.Fatal(err)
	}
	cfg := config(url)
	cfg.StartTimeout = 5 * time.Second
	sys := pool.New(cfg)
	specs, err := sys.Start(ctx, request(1))
	if len(specs) != 0 || err == nil || !strings.Contains(err.Error(), "pool: 0 of 1 machines leased and claimed: claiming machine warm-1 of lease ") {
		t.Fatalf("Start on a machine that takes no claim: %v, %v", specs, err)
	}
	alice := &client.Client{BaseURL: url, Token: testutil.FleetClientToken}
	ls, err := alice.Leases(ctx, false)
	if err != nil || len(ls) != 1 || ls[0].State != api.Released || ls[0].Hostname != "warm-1" {
		t.Errorf("leases after a refused claim: %+v, %v; want warm-1's, RELEASED", ls, err)
	}
}

// TestStartProviderUnreachable: a provider that does not answer fails
// the start in seconds, not at the start timeout, saying what to check.
func TestStartProviderUnreachable(t *testing.T) {
	cfg := config("http://127.0.0.1:1")
	cfg.StartTimeout = time.Minute
	began := time.Now()
	_, err := pool.New(cfg).Start(context.Background(), request(2))
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("Start took %v to give up on a provider that does not answer", took)
	}
	if err == nil || !strings.Contains(err.Error(), "pool: 0 of 2 machines leased and claimed: requests ") || !strings.Contains(err.Error(), "is gcefleet serve running there? -pool.provider or GCEFLEET_PROVIDER names it") {
		t.Errorf("Start with a provider that does not answer: %v", err)
	}
}

// TestLeaseEndedStopsMachine runs a machine on the pool in this process,
// then ends its lease behind the driver's back: the backend deletes the
// machine, and the driver, asking the provider when its keepalive fails,
// stops it at once, saying that its lease ended, long before the
// keepalive timeout.
func TestLeaseEndedStopsMachine(t *testing.T) {
	out := &testutil.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance output:\n%s", out)
		}
	})
	const image = "gcr.io/pool-project/gceboot"
	_, emuURL := testutil.Emulator(t, emulator.Options{Images: map[string]string{image: gceboot}, ProcessOutput: out, StopGrace: 2 * time.Second})
	url := testutil.ServeProvider(t, gcefleet, testutil.PoolFleet(emuURL, "pool-project", "us-east1-b", image+":v1", 1, 2))
	ctx := context.Background()
	alice := &client.Client{BaseURL: url, Token: testutil.FleetClientToken}
	cfg := config(url)
	cfg.Dimensions = api.Dimensions{"os": {"linux"}}
	cfg.KeepalivePeriod, cfg.KeepaliveTimeout = 250*time.Millisecond, 2*time.Minute
	sys := pool.New(cfg)
	b := bigmachine.Start(sys, bigmachine.WithOutput(io.Discard), bigmachine.WithStartTimeout(2*time.Minute))
	t.Cleanup(b.Shutdown)
	ms, err := b.Start(ctx, 1, bigmachine.Services{"Hello": Hello{}})
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	if m.Maxprocs != 2 {
		t.Errorf("Maxprocs %d, want the cpus dimension's 2 (e2-standard-2)", m.Maxprocs)
	}
	var pid int
	if err := m.Call(ctx, "Hello.Pid", struct{}{}, &pid); err != nil || pid == os.Getpid() {
		t.Fatalf("Hello.Pid: %d, %v", pid, err)
	}
	ls := sys.Leases()
	if len(ls) != 1 || ls[0].Host() != m.Name() {
		t.Fatalf("the system holds %d leases, want 1 of %s", len(ls), m.Name())
	}
	ended := time.Now()
	if _, err := alice.Release(ctx, ls[0].ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitWithin(t, time.Minute, "the machine to be stopped", func() bool { return m.State() == bigmachine.Stopped })
	if took := time.Since(ended); took > cfg.KeepaliveTimeout/2 {
		t.Errorf("the machine stopped %v after its lease ended; the keepalive timeout is %v", took, cfg.KeepaliveTimeout)
	}
	if err := m.Err(); err == nil || !strings.Contains(err.Error(), "is RELEASED: the machine is the fleet's again, and deleted") {
		t.Errorf("the machine stopped with %v; want that its lease was released", err)
	}
}

// TestStartOtherBackend: with Backend set, a lease asks for that
// backend's machines only: another backend's warm machine is not leased
// (and so not released and deleted for nothing), and a backend that
// serves no pool machines is refused at once, by name; the named
// backend's machine is leased.
func TestStartOtherBackend(t *testing.T) {
	url := testutil.ServeProvider(t, gcefleet, "")
	gce := &client.Client{BaseURL: url, Token: testutil.FleetBackendToken}
	ctx := context.Background()
	fleetCA, err := testutil.SelfSigned("fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := testutil.CertPEM(fleetCA)
	m, err := gce.AddMachine(ctx, api.Machine{Hostname: "warm-1", Dimensions: api.Dimensions{"gceboot": {"true"}, "cpus": {"2"}, "instance_id": {"1001"}},
		Connection: api.Connection{Address: "127.0.0.1", Port: 1, CACert: string(caPEM)}})
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Dimensions[pool.PoolBackendDimension]; len(v) != 1 || v[0] != "gce" {
		t.Errorf("the provider cataloged warm-1 with %s=%v, want gce", pool.PoolBackendDimension, v)
	}
	cfg := config(url)
	cfg.Backend = "trusted"
	cfg.StartTimeout = 5 * time.Second
	_, err = pool.New(cfg).Start(ctx, request(1))
	if err == nil || !strings.Contains(err.Error(), `no backend "trusted" serves pool machines`) || !strings.Contains(err.Error(), "(gce)") {
		t.Errorf("Start with a backend that serves no pool machines: %v", err)
	}
	alice := &client.Client{BaseURL: url, Token: testutil.FleetClientToken}
	if ls, err := alice.Leases(ctx, false); err != nil || len(ls) != 0 {
		t.Errorf("leases after: %v, %v; want none (gce's warm-1 left alone)", ls, err)
	}
	cfg.Backend = "gce"
	_, err = pool.New(cfg).Start(ctx, request(1))
	if err == nil || !strings.Contains(err.Error(), "claiming machine warm-1 of lease ") {
		t.Errorf("Start with -pool.backend gce: %v; want warm-1 leased (its claim then refused: nothing answers at its address)", err)
	}
}

// TestMachineGivenUpReleasesLease: a machine that stops answering (its
// process paused, its instance still up, so the fleet sees nothing) is
// given up by the driver at its keepalive timeout, and its lease is
// released then, not extended on until the driver exits.
func TestMachineGivenUpReleasesLease(t *testing.T) {
	out := &testutil.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance output:\n%s", out)
		}
	})
	const image = "gcr.io/pool-project/gceboot"
	_, emuURL := testutil.Emulator(t, emulator.Options{Images: map[string]string{image: gceboot}, ProcessOutput: out, StopGrace: 2 * time.Second})
	url := testutil.ServeProvider(t, gcefleet, testutil.PoolFleet(emuURL, "pool-project", "us-east1-b", image+":v1", 1, 2))
	ctx := context.Background()
	alice := &client.Client{BaseURL: url, Token: testutil.FleetClientToken}
	cfg := config(url)
	cfg.Dimensions = api.Dimensions{"os": {"linux"}}
	cfg.KeepalivePeriod, cfg.KeepaliveTimeout = 250*time.Millisecond, 3*time.Second
	cfg.Lease = 10 * time.Second
	sys := pool.New(cfg)
	b := bigmachine.Start(sys, bigmachine.WithOutput(io.Discard), bigmachine.WithStartTimeout(2*time.Minute))
	t.Cleanup(b.Shutdown)
	ms, err := b.Start(ctx, 1, bigmachine.Services{"Hello": Hello{}})
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := ms[0].Call(ctx, "Hello.Pid", struct{}{}, &pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	testutil.WaitWithin(t, 30*time.Second, "the machine to be given up", func() bool { return ms[0].State() == bigmachine.Stopped })
	if err := ms[0].Err(); err == nil || !strings.Contains(err.Error(), "its lease "+sys.Leases()[0].ID+" is released") {
		t.Errorf("the machine stopped with %v", err)
	}
	l, err := alice.Lease(ctx, sys.Leases()[0].ID, 0)
	if err != nil || l.State != api.Released {
		t.Errorf("the lease of the machine given up: %s, %v; want RELEASED", l.State, err)
	}
}

// TestRenewedLeaseKeepsRun: a pool machine ends its run when the claim it
// holds expires; the driver hands it each extension's claim, so a run
// outlives its first claim (a term of 10 s, and the machine's grace) by
// far.
func TestRenewedLeaseKeepsRun(t *testing.T) {
	out := &testutil.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance output:\n%s", out)
		}
	})
	const image = "gcr.io/pool-project/gceboot"
	_, emuURL := testutil.Emulator(t, emulator.Options{Images: map[string]string{image: gceboot}, ProcessOutput: out, StopGrace: 2 * time.Second})
	url := testutil.ServeProvider(t, gcefleet, testutil.PoolFleet(emuURL, "pool-project", "us-east1-b", image+":v1", 1, 2))
	ctx := context.Background()
	cfg := config(url)
	cfg.Dimensions = api.Dimensions{"os": {"linux"}}
	cfg.Lease = 10 * time.Second
	sys := pool.New(cfg)
	b := bigmachine.Start(sys, bigmachine.WithOutput(io.Discard), bigmachine.WithStartTimeout(2*time.Minute))
	t.Cleanup(b.Shutdown)
	ms, err := b.Start(ctx, 1, bigmachine.Services{"Hello": Hello{}})
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	started := time.Now()
	testutil.WaitWithin(t, time.Minute, "the run to outlive its first claim by 15 s", func() bool {
		var pid int
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := m.Call(cctx, "Hello.Pid", struct{}{}, &pid); err != nil {
			t.Fatalf("%v after the start, the machine no longer answers: %v", time.Since(started).Round(time.Millisecond), err)
		}
		return time.Since(started) > cfg.Lease+claim.Grace+15*time.Second
	})
	if strings.Contains(out.String(), "the lease expired") {
		t.Error("the machine says its lease expired, though the driver extended it")
	}
}

// TestStartUntrustedProvider: a provider whose TLS certificate is not
// trusted here fails the start at once, saying how to trust it, rather
// than being retried until the start timeout as if it were down.
func TestStartUntrustedProvider(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	cfg := config(srv.URL)
	cfg.StartTimeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	specs, err := pool.New(cfg).Start(ctx, request(1))
	if len(specs) != 0 || err == nil || !strings.Contains(err.Error(), "SSL_CERT_FILE") || ctx.Err() != nil {
		t.Fatalf("Start on an untrusted provider: %v, %v; want an error at once that names SSL_CERT_FILE", specs, err)
	}
}
