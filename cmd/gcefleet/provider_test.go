package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

const (
	adminToken  = "admin-token-0123456789"
	gceToken    = "gce-token-0123456789"
	aliceToken  = "alice-token-0123456789"
	providerCfg = `listen: 127.0.0.1:0
database: %s
tokens:
  - {name: ops, role: admin, token: ` + adminToken + `}
  - {name: gce, role: backend, token: ` + gceToken + `}
  - {name: alice, role: client, token: ` + aliceToken + `}
`
)

func writeConfig(t *testing.T, db string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provider.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(providerCfg, db)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveInProcess runs `gcefleet serve` in this process and returns its URL.
func serveInProcess(t *testing.T, config string) string {
	t.Helper()
	url, _ := serveUntil(t, config)
	return url
}

// serveUntil is serveInProcess, with a func that stops the server.
func serveUntil(t *testing.T, config string) (string, func()) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve's log:\n%s", logs)
		}
	})
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		e := &environ{stdout: pw, stderr: logs, getenv: func(string) string { return "" }}
		done <- run(ctx, e, []string{"serve", "--config", config, "--drain", "1s"})
		pw.Close()
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if code := testutil.Receive(t, 30*time.Second, "serve to exit once stopped", done); code != 0 {
				t.Errorf("serve exited %d", code)
			}
		})
	}
	t.Cleanup(stop)
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	return strings.TrimSpace(line), stop
}

func TestProviderCommands(t *testing.T) {
	url := serveInProcess(t, writeConfig(t, filepath.Join(t.TempDir(), "p.db")))
	ctx := context.Background()
	gce := &client.Client{BaseURL: url, Token: gceToken}
	for _, h := range []string{"vm-a", "vm-b"} {
		if _, err := gce.AddMachine(ctx, store.Machine{Hostname: h, Dimensions: store.Dimensions{"os": {"linux"}, "cpus": {"8"}},
			Connection: store.Connection{Address: "10.0.0.7", Port: 8443}}); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": aliceToken}

	// Before any lease, the listing says so rather than print a bare header.
	if code, out, stderr := runCLI(t, env, "leases", "--active"); code != 0 || out != "" || !strings.Contains(stderr, "No active leases") {
		t.Errorf("leases with none: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	code, out, stderr := runCLI(t, env, "lease", "--dim", "os=linux", "--dim", "cpus=8", "--duration", "2h", "--json")
	var l store.Lease
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || l.State != store.Fulfilled || l.Machine.Connection.Port != 8443 {
		t.Fatalf("lease: exit %d, %s %s", code, out, stderr)
	}
	code, out, _ = runCLI(t, env, "leases", "--active")
	if code != 0 || !strings.Contains(out, "LEASE") || !strings.Contains(out, l.ID+"  FULFILLED  vm-a     10.0.0.7:8443") {
		t.Errorf("leases table:\n%s", out)
	}
	// A token in a file, kept off the command line, works as GCEFLEET_TOKEN does.
	tokenFile := filepath.Join(t.TempDir(), "alice.token")
	if err := os.WriteFile(tokenFile, []byte(aliceToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCLI(t, map[string]string{"GCEFLEET_PROVIDER": url}, "leases", "--active", "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out, l.ID+"  FULFILLED") {
		t.Errorf("leases with --token-file: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": adminToken}, "machines")
	if code != 0 || !strings.Contains(out, "vm-a      gce      LEASED     "+l.ID) || !strings.Contains(out, "vm-b      gce      AVAILABLE  -") {
		t.Errorf("machines table:\n%s", out)
	}
	// A client may not list the catalog: the error says why.
	if code, _, stderr := runCLI(t, env, "machines"); code != 1 || !strings.Contains(stderr, "alice (client) may not GET /v1/machines") {
		t.Errorf("client listing machines: exit %d, %s", code, stderr)
	}
	code, out, _ = runCLI(t, env, "extend", "--duration", "6h", "--json", l.ID)
	var ext []store.Lease
	if code != 0 || json.Unmarshal([]byte(out), &ext) != nil || len(ext) != 1 || ext[0].ExpiresAt.Sub(l.ExpiresAt) < 3*time.Hour {
		t.Errorf("extend by 6h: exit %d, %s; was to expire at %v", code, out, l.ExpiresAt)
	}
	if code, _, stderr := runCLI(t, env, "extend", "--duration", "600h", l.ID); code != 2 || !strings.Contains(stderr, "21 days") {
		t.Errorf("extend past 21 days: exit %d, %s", code, stderr)
	}
	// An unknown id first does not keep the real one from being released,
	// and what was released is printed beside the error.
	code, out, stderr = runCLI(t, env, "release", "0123456789abcdef01234567", l.ID)
	if code != 1 || !strings.Contains(out, l.ID) || !strings.Contains(out, "RELEASED") || !strings.Contains(out, "  ended 20") || !strings.Contains(stderr, "lease 0123456789abcdef01234567: not found") {
		t.Errorf("release of an unknown lease and %s: exit %d\n%s%s", l.ID, code, out, stderr)
	}
	// --wait waits its turn: nothing is free for cpus=64 until a machine comes.
	waited := make(chan string)
	go func() {
		_, out, stderr := runCLI(t, env, "lease", "--dim", "cpus=64", "--indefinite", "--wait")
		waited <- out + stderr
	}()
	if _, err := gce.AddMachine(ctx, store.Machine{Hostname: "vm-big", Dimensions: store.Dimensions{"cpus": {"64"}}}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.Receive(t, time.Minute, "lease --wait to answer once a machine came", waited); !strings.Contains(got, "FULFILLED  vm-big") || !strings.Contains(got, "never") {
		t.Errorf("lease --wait:\n%s", got)
	}
}

// TestProviderSurvivesKill9 kills the provider with SIGKILL while clients
// lease and release and a backend adds machines, restarts it on the same
// database, and checks that every acknowledged change is there and that no
// machine is both leased and available, or leased to two leases.
func TestProviderSurvivesKill9(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	config := writeConfig(t, filepath.Join(t.TempDir(), "crash.db"))
	start := func() (*exec.Cmd, string) {
		cmd, out := testutil.StartProcess(t, []string{"GCEFLEET_TEST_ROLE=cli"}, self, "serve", "--config", config)
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
		return cmd, strings.TrimSpace(line)
	}
	cmd, url := start()
	ctx := context.Background()
	gce := &client.Client{BaseURL: url, Token: gceToken}
	alice := &client.Client{BaseURL: url, Token: aliceToken}

	// What the server acknowledged, by lease id: the last state it said.
	var mu sync.Mutex
	acked := map[string]string{}
	ack := func(l store.Lease) {
		mu.Lock()
		acked[l.ID] = l.State
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := gce.AddMachine(ctx, store.Machine{Hostname: fmt.Sprintf("vm-%05d", i), Dimensions: store.Dimensions{"os": {"linux"}}}); err != nil {
				return
			}
		}
	})
	for c := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprintf("c%d-%d", c, i), Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
				if err != nil {
					return
				}
				ack(l)
				if i%2 == 0 && l.State == store.Fulfilled {
					if l, err = alice.Release(ctx, l.ID); err != nil {
						return
					}
					ack(l)
				}
			}
		})
	}
	// Kill once the load has made some history.
	testutil.WaitWithin(t, time.Minute, "200 acknowledged leases", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 200
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitKilled(t, cmd, 10*time.Second, "the server")
	close(stop)
	testutil.Wait(t, "the load to stop", &wg)

	_, url = start()
	admin := &client.Client{BaseURL: url, Token: adminToken}
	leases, err := admin.Leases(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]store.Lease{}
	for _, l := range leases {
		byID[l.ID] = l
	}
	order := map[string]int{store.Pending: 0, store.Fulfilled: 1, store.Released: 2}
	for id, state := range acked {
		l, ok := byID[id]
		if !ok {
			t.Errorf("acknowledged lease %s (%s) is lost", id, state)
			continue
		}
		if order[l.State] < order[state] {
			t.Errorf("lease %s was acknowledged %s, is %s after the crash", id, state, l.State)
		}
	}
	machines, err := admin.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holder := map[string]string{}
	for _, l := range leases {
		if l.State == store.Fulfilled {
			if prev, dup := holder[l.Hostname]; dup {
				t.Errorf("machine %s held by leases %s and %s", l.Hostname, prev, l.ID)
			}
			holder[l.Hostname] = l.ID
		}
	}
	for _, m := range machines {
		switch {
		case m.State == store.Leased && holder[m.Hostname] != m.LeaseID:
			t.Errorf("machine %s is leased to %s, which does not hold it", m.Hostname, m.LeaseID)
		case m.State == store.Available && holder[m.Hostname] != "":
			t.Errorf("machine %s is available and leased to %s", m.Hostname, holder[m.Hostname])
		}
	}
	t.Logf("%d acknowledged leases, %d machines checked after kill -9", len(acked), len(machines))
}

// TestServeDrainsInFlightRequests stops `gcefleet serve` while a client
// long-polls: the request still gets its answer, and the server then exits.
func TestServeDrainsInFlightRequests(t *testing.T) {
	config := writeConfig(t, filepath.Join(t.TempDir(), "drain.db"))
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		e := &environ{stdout: pw, stderr: io.Discard, getenv: func(string) string { return "" }}
		done <- run(ctx, e, []string{"serve", "--config", config, "--drain", "10s"})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	alice := &client.Client{BaseURL: strings.TrimSpace(line), Token: aliceToken}
	l, err := alice.RequestLease(context.Background(), store.LeaseRequest{RequestID: "drain", Dimensions: store.Dimensions{"os": {"plan9"}}, Term: store.Term{Indefinite: true}})
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan error)
	go func() {
		_, err := alice.Lease(context.Background(), l.ID, 2*time.Second)
		answered <- err
	}()
	// Stop the server once it is serving the long poll (the scrape that
	// asks is the other request in flight).
	testutil.WaitFor(t, "the long poll to be served", func() bool {
		return strings.Contains(adminGet(alice.BaseURL+"/metrics"), "gcefleet_provider_requests_in_flight 2")
	})
	cancel()
	if err := testutil.Receive(t, 30*time.Second, "the long poll to answer", answered); err != nil {
		t.Errorf("the in-flight request was cut off: %v", err)
	}
	if code := testutil.Receive(t, 30*time.Second, "serve to exit once drained", done); code != 0 {
		t.Errorf("serve exited %d", code)
	}
}

// adminGet returns the body at url, asked with the admin token; "" if the
// server does not answer.
func adminGet(url string) string {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// writeFleet starts an emulator and writes a backend config for it, of
// one group of two in us-east1-b, as dir/fleet.yaml; it returns the text.
func writeFleet(t *testing.T, dir string) string {
	t.Helper()
	_, emuURL := testutil.Emulator(t, emulator.Options{})
	fleet := `templates:
  - base_name: pool
    project: fleet-project
    dimensions: {os: linux}
    machine_type: e2-standard-2
    image: projects/debian-cloud/global/images/family/debian-12
managers:
  - {template_base_name: pool, zone: us-east1-b, minimum_size: 2, maximum_size: 4}
settings:
  interval: 1s
  endpoint: ` + emuURL + "\n"
	if err := os.WriteFile(filepath.Join(dir, "fleet.yaml"), []byte(fleet), 0o600); err != nil {
		t.Fatal(err)
	}
	return fleet
}

// TestServeRunsTheBackend serves a provider with a GCE Backend on the
// emulator: the group's instances appear in the catalog, and a machine
// leased and released is deleted and replaced by a fresh one.
func TestServeRunsTheBackend(t *testing.T) {
	dir := t.TempDir()
	fleet := writeFleet(t, dir)
	config := filepath.Join(dir, "provider.yaml")
	testutil.WriteFile(t, config, []byte(fmt.Sprintf(providerCfg, filepath.Join(dir, "p.db"))+"backend: {config: fleet.yaml, token: gce}\n"))
	url, stop := serveUntil(t, config)
	ctx := context.Background()
	admin := &client.Client{BaseURL: url, Token: adminToken}
	alice := &client.Client{BaseURL: url, Token: aliceToken}
	available := func() []store.Machine {
		ms, err := admin.Machines(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []store.Machine
		for _, m := range ms {
			if m.State == store.Available {
				out = append(out, m)
			}
		}
		return out
	}
	testutil.WaitFor(t, "the group's instances to be cataloged", func() bool { return len(available()) == 2 })

	l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: "r", Dimensions: store.Dimensions{"os": {"linux"}, "zone": {"us-east1-b"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	if _, err := alice.Release(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the reclaimed machine to be replaced", func() bool {
		ms := available()
		for _, m := range ms {
			if m.Hostname == l.Hostname {
				return false
			}
		}
		return len(ms) == 2
	})

	// The status page and /metrics show the backend.
	get := func(path string) string { return adminGet(url + path) }
	if page := get("/"); !strings.Contains(page, "GCE Backend") || !strings.Contains(page, "us-east1-b") || !strings.Contains(page, "This replica leads") {
		t.Errorf("status page without the backend:\n%s", page)
	}
	if m := get("/metrics"); !strings.Contains(m, "gcefleet_backend_leader 1") || !strings.Contains(m, `gcefleet_compute_calls_total{code="200",method="instanceGroupManagers.listManagedInstances"}`) {
		t.Errorf("metrics without the backend's:\n%s", m)
	}

	// A bad file, read on SIGHUP, changes nothing but the status page.
	testutil.WriteFile(t, filepath.Join(dir, "fleet.yaml"), []byte(fleet+"managers:\n  - {template_base_name: nope}\n"))
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	testutil.WaitFor(t, "the refused file on the status page", func() bool {
		return strings.Contains(get("/"), "The configuration file was refused")
	})
	if m := get("/metrics"); !strings.Contains(m, "gcefleet_backend_config_ok 0") {
		t.Error("gcefleet_backend_config_ok is not 0 after a refused file")
	}
	if n := len(available()); n != 2 {
		t.Errorf("%d machines after a refused file, want 2", n)
	}

	// Started again on the bad file, it runs on the last good one from
	// its database and says why.
	stop()
	url, stop = serveUntil(t, config)
	admin.BaseURL = url
	testutil.WaitFor(t, "the backend to run on the last good configuration", func() bool {
		page := get("/")
		return strings.Contains(page, "This replica leads") && strings.Contains(page, "The configuration file was refused") && strings.Contains(page, "us-east1-b")
	})
	if n := len(available()); n != 2 {
		t.Errorf("%d machines after a restart on a refused file, want 2", n)
	}

	// A file that renames the deployment stops serve at start: everything
	// the deployment made carries the name its database keeps.
	stop()
	testutil.WriteFile(t, filepath.Join(dir, "fleet.yaml"), []byte(fleet+"  deployment: renamed\n"))
	code, _, stderr := runCLI(t, nil, "serve", "--config", config)
	if code != 1 || !strings.Contains(stderr, `fleet.yaml: settings.deployment is "renamed", but this provider database belongs to deployment "d-`) {
		t.Errorf("serve on a renamed deployment: exit %d, %s", code, stderr)
	}
}

// TestBackendLeaderKilled: two `gcefleet serve` replicas on one PostgreSQL
// database run one backend between them; SIGKILL the one that leads, and
// the other takes over (after the leader's lease lapses) and keeps the
// fleet: a released machine is replaced.
func TestBackendLeaderKilled(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFleet(t, dir)
	config := filepath.Join(dir, "provider.yaml")
	testutil.WriteFile(t, config, []byte(fmt.Sprintf(providerCfg, testutil.PostgresURL(t))+"backend: {config: fleet.yaml, token: gce}\n"))
	type replica struct {
		cmd *exec.Cmd
		url string
	}
	start := func() replica {
		cmd, out := testutil.StartProcess(t, []string{"GCEFLEET_TEST_ROLE=cli"}, self, "serve", "--config", config)
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
		go io.Copy(io.Discard, out)
		return replica{cmd, strings.TrimSpace(line)}
	}
	leads := func(r replica) bool { return strings.Contains(adminGet(r.url+"/"), "This replica leads") }
	a, b := start(), start()
	ctx := context.Background()
	admin := &client.Client{BaseURL: a.url, Token: adminToken}
	available := func(c *client.Client) int {
		ms, _ := c.Machines(ctx)
		n := 0
		for _, m := range ms {
			if m.State == store.Available {
				n++
			}
		}
		return n
	}
	testutil.WaitWithin(t, time.Minute, "the fleet to be cataloged", func() bool { return available(admin) == 2 })
	testutil.WaitWithin(t, time.Minute, "exactly one replica to lead", func() bool { return leads(a) != leads(b) })
	leader, survivor := a, b
	if leads(b) {
		leader, survivor = b, a
	}
	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitKilled(t, leader.cmd, 10*time.Second, "the leading replica")

	alice := &client.Client{BaseURL: survivor.url, Token: aliceToken}
	admin.BaseURL = survivor.url
	l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: "after-kill", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	if _, err := alice.Release(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitWithin(t, time.Minute, "the survivor to take over and replace the released machine", func() bool {
		if !leads(survivor) || available(admin) != 2 {
			return false
		}
		ms, _ := admin.Machines(ctx)
		for _, m := range ms {
			if m.Hostname == l.Hostname {
				return false
			}
		}
		return true
	})
}

// TestUnreachableProvider: with no provider at the address, the command
// says so and which flag sets the address, rather than a bare dial error.
func TestUnreachableProvider(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	code, _, stderr := runCLI(t, map[string]string{"GCEFLEET_PROVIDER": "http://" + addr, "GCEFLEET_TOKEN": aliceToken}, "leases")
	if code != 1 || !strings.Contains(stderr, "provider http://"+addr+" not answering") || !strings.Contains(stderr, "--provider (or GCEFLEET_PROVIDER)") {
		t.Errorf("leases from an address nothing listens on: exit %d\n%s", code, stderr)
	}
}

// TestWatchFollowsALeaseToItsEnd: gcefleet watch prints a lease, then its
// end, and exits 0 when it has ended.
func TestWatchFollowsALeaseToItsEnd(t *testing.T) {
	url := serveInProcess(t, writeConfig(t, filepath.Join(t.TempDir(), "p.db")))
	ctx := context.Background()
	gce := &client.Client{BaseURL: url, Token: gceToken}
	if _, err := gce.AddMachine(ctx, store.Machine{Hostname: "vm-w", Dimensions: store.Dimensions{"os": {"linux"}},
		Connection: store.Connection{Address: "10.0.0.9", Port: 8443}}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": aliceToken}
	code, out, stderr := runCLI(t, env, "lease", "--dim", "os=linux", "--duration", "1s", "--json")
	var l store.Lease
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: exit %d, %s %s", code, out, stderr)
	}
	code, out, stderr = runCLI(t, env, "watch", l.ID)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], l.ID+"  FULFILLED  machine vm-w at 10.0.0.9:8443, expires ") ||
		!strings.HasPrefix(lines[1], l.ID+"  EXPIRED    ended ") {
		t.Errorf("watch of a 1s lease: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, env, "watch", "--json", l.ID) // ended already: one line
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"state":"EXPIRED"`) {
		t.Errorf("watch --json of an ended lease: exit %d\n%s", code, out)
	}
	if code, _, stderr := runCLI(t, env, "watch"); code != 2 || !strings.Contains(stderr, "name one lease") {
		t.Errorf("watch without an id: exit %d, %s", code, stderr)
	}
}
