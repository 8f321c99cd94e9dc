package provider_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
	"go.yaml.in/yaml/v3"
)

const config = `listen: 127.0.0.1:0
database: ":memory:"
tokens:
  - {name: ops, role: admin, token: admin-secret-0123456789}
  - {name: gce, role: backend, token: gce-secret-0123456789, pool: true}
  - {name: other, role: backend, token: other-secret-0123456789}
  - {name: alice, role: client, token: alice-secret-0123456789}
  - {name: bob, role: client, token: bob-secret-0123456789}
`

type world struct {
	url                         string
	server                      *provider.Server
	ops, gce, other, alice, bob *client.Client
	conns                       *atomic.Int64 // connections the server has accepted
	peak                        *atomic.Int64 // the most it has had open at once
}

func start(t *testing.T) *world { return startOn(t, "") }

// startOn starts a server on database (the config's when empty).
func startOn(t *testing.T, database string) *world {
	t.Helper()
	cfg, err := provider.ParseConfig("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	if database != "" {
		cfg.Database = database
	}
	return startWith(t, cfg)
}

// startWith starts a server with cfg.
func startWith(t *testing.T, cfg provider.Config) *world {
	t.Helper()
	st, err := store.Open(context.Background(), cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	s := provider.New(st, cfg, slog.New(slog.DiscardHandler))
	srv := httptest.NewUnstartedServer(conform(t, s.Handler()))
	conns, open, peak := new(atomic.Int64), new(atomic.Int64), new(atomic.Int64)
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			conns.Add(1)
			for n := open.Add(1); ; {
				if p := peak.Load(); n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		st.Close()
	})
	c := func(tok string) *client.Client { return &client.Client{BaseURL: srv.URL, Token: tok} }
	return &world{url: srv.URL, server: s, ops: c("admin-secret-0123456789"), gce: c("gce-secret-0123456789"), other: c("other-secret-0123456789"),
		alice: c("alice-secret-0123456789"), bob: c("bob-secret-0123456789"), conns: conns, peak: peak}
}

var linux = store.Dimensions{"os": {"linux"}, "cpus": {"8"}}

func machine(host string) store.Machine {
	return store.Machine{Hostname: host, Dimensions: linux, Connection: store.Connection{Address: "10.1.2.3", Port: 8443, CACert: testCertPEM}}
}

func lease(id string) store.LeaseRequest {
	return store.LeaseRequest{RequestID: id, Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}}
}

func TestLeaseThroughTheAPI(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	m, err := w.gce.AddMachine(ctx, machine("vm-1"))
	if err != nil || m.Backend != "gce" || m.State != store.Available {
		t.Fatalf("add: %+v, %v", m, err)
	}
	l, err := w.alice.RequestLease(ctx, lease("job-1"))
	if err != nil || l.State != store.Fulfilled || l.Machine.Connection.Address != "10.1.2.3" {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	// Another client neither sees nor ends it.
	if _, err := w.bob.Lease(ctx, l.ID, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob reading alice's lease: %v", err)
	}
	if _, err := w.bob.Release(ctx, l.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob releasing alice's lease: %v", err)
	}
	if ls, err := w.bob.Leases(ctx, false); err != nil || len(ls) != 0 {
		t.Errorf("bob's leases: %v, %v; want none", ls, err)
	}
	// A backend sees only its machines and removes only its own.
	if ms, err := w.other.Machines(ctx); err != nil || len(ms) != 0 {
		t.Errorf("another backend sees %v, %v; want none", ms, err)
	}
	if err := w.other.DeleteMachine(ctx, "vm-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another backend deleting: %v", err)
	}
	if err := w.gce.DeleteMachine(ctx, "vm-1"); !errors.Is(err, store.ErrLeased) {
		t.Errorf("deleting a leased machine: %v, want it refused as leased", err)
	}

	if l, err = w.alice.Release(ctx, l.ID); err != nil || l.State != store.Released {
		t.Fatalf("release: %+v, %v", l, err)
	}
	evs, err := w.gce.Events(ctx, 0, time.Second)
	if err != nil || len(evs) != 2 || evs[1].Kind != "reclaimed" || evs[1].Hostname != "vm-1" {
		t.Errorf("gce's events: %+v, %v", evs, err)
	}
	if evs, err := w.other.Events(ctx, 0, 0); err != nil || len(evs) != 0 {
		t.Errorf("another backend's events: %v, %v; want none", evs, err)
	}
}

// TestWaitingRequestGetsTheNextMachine: a client long-polls its pending
// request and learns of the machine the moment a backend adds it.
func TestWaitingRequestGetsTheNextMachine(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	l, err := w.alice.RequestLease(ctx, lease("waiting"))
	if err != nil || l.State != store.Pending {
		t.Fatalf("request: %+v, %v", l, err)
	}
	got := make(chan store.Lease, 1)
	go func() {
		// A minute's poll: answered at its end rather than at the change,
		// it comes long after the test below gives up.
		l, err := w.alice.Lease(ctx, l.ID, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	// The machine comes only once the poll waits at the server, so that
	// what answers it is the change, not the lease as the poll first read it.
	testutil.WaitFor(t, "the long poll to be waiting at the server", func() bool { return inFlight(t, w) == 1 })
	select {
	case l := <-got:
		t.Fatalf("the poll answered before a machine came: %+v", l)
	default:
	}
	added := time.Now()
	if _, err := w.gce.AddMachine(ctx, machine("vm-late")); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l.State != store.Fulfilled || l.Hostname != "vm-late" {
			t.Errorf("waited lease: %+v, want it fulfilled with vm-late", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the waiting poll did not answer within 10s of the machine's coming (its wait is a minute)")
	}
	t.Logf("the poll answered %v after the machine came", time.Since(added))
}

// TestExpiryReachesTheBackend: a lease that runs out is reclaimed by the
// provider's own loop, and the backend waiting on its feed hears of it.
func TestExpiryReachesTheBackend(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	if _, err := w.gce.AddMachine(ctx, machine("vm-short")); err != nil {
		t.Fatal(err)
	}
	l, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "short", Dimensions: linux, Term: store.Term{Duration: time.Second}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	after := int64(0)
	for {
		evs, err := w.gce.Events(ctx, after, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			t.Fatal("no reclaim event within 10s of a 1s lease")
		}
		last := evs[len(evs)-1]
		if last.Kind == "reclaimed" {
			if since := time.Since(l.ExpiresAt); since > 2*time.Second {
				t.Errorf("reclaimed %v after expiry", since)
			}
			break
		}
		after = last.ID
	}
	if l, err := w.alice.Lease(ctx, l.ID, 0); err != nil || l.State != store.Expired {
		t.Errorf("lease after its term: %s, %v; want EXPIRED", l.State, err)
	}
}

func TestAuthorization(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	if _, err := w.gce.AddMachine(ctx, machine("vm-a")); err != nil {
		t.Fatal(err)
	}
	l, err := w.alice.RequestLease(ctx, lease("mine"))
	if err != nil {
		t.Fatal(err)
	}
	type call struct {
		method, path, body string
	}
	calls := map[string]call{
		"list machines":  {"GET", "/v1/machines", ""},
		"add machine":    {"POST", "/v1/machines", `{"hostname":"vm-z","dimensions":{"os":["linux"]}}`},
		"add machines":   {"POST", "/v1/machines:batchAdd", `{"machines":[{"hostname":"vm-y","dimensions":{"os":["linux"]}}]}`},
		"request lease":  {"POST", "/v1/leases", `{"request_id":"x","dimensions":{"os":["mac"]},"term":{"indefinite":true}}`},
		"list leases":    {"GET", "/v1/leases", ""},
		"read events":    {"GET", "/v1/events", ""},
		"release lease":  {"POST", "/v1/leases/" + l.ID + "/release", ""},
		"status page":    {"GET", "/", ""},
		"metrics":        {"GET", "/metrics", ""},
		"delete machine": {"DELETE", "/v1/machines/nope", ""},
		"openapi":        {"GET", "/v1/openapi.yaml", ""},
	}
	for _, tc := range []struct {
		who   string
		token string
		want  map[string]int
	}{
		// Without a token the status page is the sign-in form it
		// redirects to (see TestSignIn).
		{"no token", "", map[string]int{"list machines": 401, "add machine": 401, "add machines": 401, "request lease": 401, "list leases": 401, "read events": 401, "release lease": 401, "status page": 200, "metrics": 401, "delete machine": 401, "openapi": 200}},
		{"wrong token", "guess-guess-guess-guess", map[string]int{"list machines": 401, "request lease": 401, "status page": 401}},
		{"client", "bob-secret-0123456789", map[string]int{"list machines": 403, "add machine": 403, "add machines": 403, "read events": 403, "delete machine": 403, "request lease": 200, "list leases": 200, "release lease": 404, "status page": 200, "metrics": 200}},
		{"backend", "gce-secret-0123456789", map[string]int{"add machines": 200, "request lease": 403, "list leases": 403, "release lease": 403, "list machines": 200, "read events": 200, "delete machine": 404}},
		{"admin", "admin-secret-0123456789", map[string]int{"list machines": 200, "read events": 200, "release lease": 200, "list leases": 200}},
	} {
		for name, want := range tc.want {
			c := calls[name]
			req, _ := http.NewRequest(c.method, w.url+c.path, strings.NewReader(c.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s: %s: HTTP %d, want %d: %s", tc.who, name, resp.StatusCode, want, body)
			}
		}
	}
}

// TestAddMachinesInABatch: a backend catalogs several machines in one
// call; each is added or refused on its own, and a waiting request gets
// its machine from the batch at once.
func TestAddMachinesInABatch(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	if _, err := w.gce.AddMachine(ctx, machine("vm-old")); err != nil {
		t.Fatal(err)
	}
	waiting, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "big", Dimensions: store.Dimensions{"cpus": {"64"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || waiting.State != store.Pending {
		t.Fatalf("request: %+v, %v", waiting, err)
	}
	old := machine("vm-old")
	old.Dimensions = store.Dimensions{"os": {"mac"}} // another body: refused
	big := machine("vm-big")
	big.Dimensions = store.Dimensions{"os": {"linux"}, "cpus": {"64"}}
	added, errs, err := w.gce.AddMachines(ctx, []store.Machine{machine("vm-b1"), old, big, machine("vm-b2")})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"vm-b1", "", "vm-big", "vm-b2"} {
		switch {
		case want == "" && !errors.Is(errs[i], store.ErrConflict):
			t.Errorf("machine %d: %v, want a conflict", i, errs[i])
		case want != "" && (errs[i] != nil || added[i].Hostname != want || added[i].Backend != "gce"):
			t.Errorf("machine %d: %+v, %v; want %s added", i, added[i], errs[i], want)
		}
	}
	if added[2].State != store.Leased || added[2].LeaseID != waiting.ID {
		t.Errorf("vm-big: %+v, want it leased at once to %s", added[2], waiting.ID)
	}
	if ms, err := w.gce.Machines(ctx); err != nil || len(ms) != 4 {
		t.Errorf("catalog after the batch: %d machines, %v; want 4", len(ms), err)
	}
	if m, err := w.ops.Machines(ctx); err != nil || len(m) != 4 {
		t.Errorf("admin sees %d machines, %v; want 4", len(m), err)
	}

	// A batch with an invalid machine is refused whole, naming it.
	bad := machine("Bad_Name")
	_, _, err = w.gce.AddMachines(ctx, []store.Machine{machine("vm-b3"), bad})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Fields["machines[1].hostname"] == "" {
		t.Errorf("batch with an invalid machine: %+v", err)
	}
	if ms, err := w.gce.Machines(ctx); err != nil || len(ms) != 4 {
		t.Errorf("catalog after a refused batch: %d machines, %v; want 4 (nothing of it added)", len(ms), err)
	}
	if _, _, err := w.gce.AddMachines(ctx, nil); !errors.As(err, &e) || e.Fields["machines"] == "" {
		t.Errorf("empty batch: %+v", err)
	}
}

func TestValidationNamesFields(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	_, err := w.alice.RequestLease(ctx, store.LeaseRequest{Dimensions: store.Dimensions{"OS": {"linux"}}, Term: store.Term{Duration: 30 * 24 * time.Hour}})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Fields["request_id"] == "" || e.Fields["dimensions.OS"] == "" || !strings.Contains(e.Fields["term"], "21 days") {
		t.Errorf("invalid request: %+v", err)
	}
	_, err = w.gce.AddMachine(ctx, store.Machine{Hostname: "Bad_Name", Backend: "other", Connection: store.Connection{Port: 70000},
		Dimensions: store.Dimensions{"os": {"linux\x00"}}})
	if !errors.As(err, &e) || e.Fields["hostname"] == "" || !strings.Contains(e.Fields["backend"], "only its own") || e.Fields["connection.port"] == "" ||
		!strings.Contains(e.Fields["dimensions.os"], "control characters") {
		t.Errorf("invalid machine: %+v", err)
	}
	_, err = w.alice.RequestLease(ctx, lease("dup"))
	if err != nil {
		t.Fatal(err)
	}
	other := lease("dup")
	other.Dimensions = store.Dimensions{"os": {"mac"}}
	if _, err := w.alice.RequestLease(ctx, other); !errors.Is(err, store.ErrRequestIDReuse) {
		t.Errorf("request id reuse: %v", err)
	}
}

func TestMetricsAndStatusPage(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	for _, h := range []string{"vm-m1", "vm-m2"} {
		if _, err := w.gce.AddMachine(ctx, machine(h)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.alice.RequestLease(ctx, lease("one")); err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		_, body := getAs(t, w, "admin-secret-0123456789", path)
		return body
	}
	metrics := get("/metrics")
	for _, want := range []string{
		`gcefleet_provider_machines{state="AVAILABLE"} 1`,
		`gcefleet_provider_machines{state="LEASED"} 1`,
		`gcefleet_provider_leases{state="FULFILLED"} 1`,
		`gcefleet_provider_lease_outcomes_total{outcome="fulfilled_at_once"} 1`,
		`gcefleet_provider_request_seconds_count{code="200",route="POST /v1/leases"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	page := get("/")
	if !strings.Contains(page, "vm-m1") || !strings.Contains(page, "alice") || !strings.Contains(page, "Machines (2: 1 available, 1 leased)") {
		t.Errorf("status page:\n%s", page)
	}

	// A large catalog is counted whole and shown in part.
	var more []store.Machine
	for i := range 600 {
		more = append(more, machine(fmt.Sprintf("vm-x%03d", i)))
	}
	if _, errs, err := w.gce.AddMachines(ctx, more); err != nil || errors.Join(errs...) != nil {
		t.Fatal(err, errs)
	}
	page = get("/")
	if !strings.Contains(page, "Machines (602: 601 available, 1 leased)") || !strings.Contains(page, "The first 500 by hostname") ||
		!strings.Contains(page, "vm-x497") || strings.Contains(page, "vm-x498") {
		t.Errorf("status page of 602 machines shows:\n%.2000s", page)
	}
}

func TestLeaseRetentionDefault(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\n", 30 * 24 * time.Hour},
		{"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nlease_retention: 48h\n", 48 * time.Hour},
	} {
		cfg, err := provider.ParseConfig("cfg.yaml", []byte(tc.yaml))
		if err != nil || cfg.LeaseRetention != tc.want {
			t.Errorf("config %q: retention %v, %v; want %v", tc.yaml, cfg.LeaseRetention, err, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"tokens:\n  - {name: a, role: client, token: short}\n  - {name: a, role: king, token: x-x-x-x-x-x-x-x-x-x}\n",
			[]string{"cfg.yaml:2: token \"a\": a secret of at least 16", "cfg.yaml:3: token name \"a\" is used already at line 2", "cfg.yaml:3: token \"a\": role \"king\""}},
		{"listen: x\nlisen: y\n", []string{`cfg.yaml:2: unknown key "lisen"`}},
		{"listen: 127.0.0.1:1\n", []string{"no tokens"}},
		{"tokens:\n  - {name: e, role: admin, token_env: GCEFLEET_TEST_NO_SUCH_VAR}\n", []string{"cfg.yaml:2: token \"e\": environment variable GCEFLEET_TEST_NO_SUCH_VAR is empty"}},
		{"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nlease_retention: 10m\n", []string{"cfg.yaml:3: lease_retention 10m0s: keep ended leases at least an hour"}},
		{"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nlease_retention: soon\n", []string{`cfg.yaml:3: "soon" is not a duration`, "720h"}},
		{"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nmax_pending_per_client: -5\n", []string{"cfg.yaml:3: max_pending_per_client -5: give how many lease requests one client may have waiting, 1 to 1000000"}},
		{"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nmax_pending_per_client: 2000000\n", []string{"cfg.yaml:3: max_pending_per_client 2000000"}},
	} {
		_, err := provider.ParseConfig("cfg.yaml", []byte(tc.yaml))
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("config %q: %v; want %q", tc.yaml, err, w)
			}
		}
	}
}

// TestReplicasWakeEachOthersLongPolls: a client waits on one replica for
// a lease that a machine added through another replica fulfils; its long
// poll answers at once, not at the end of its wait.
func TestReplicasWakeEachOthersLongPolls(t *testing.T) {
	url := testutil.PostgresURL(t)
	a, b := startOn(t, url), startOn(t, url)
	ctx := context.Background()
	// Hearing, a long poll looks again only when woken: a wake-up that
	// does not come leaves the lease pending at the end of the wait.
	testutil.WaitFor(t, "replica a to hear of changes", func() bool { return gauge(t, a.server, "gcefleet_provider_hearing_replicas") == 1 })
	for i := range 3 {
		l, err := a.alice.RequestLease(ctx, lease(fmt.Sprint("wait-", i)))
		if err != nil || l.State != store.Pending {
			t.Fatalf("lease request: %+v, %v; want it pending (no machines)", l, err)
		}
		got := make(chan store.Lease, 1)
		go func() {
			// Woken, the poll answers in milliseconds; not woken, it would
			// answer at the end of its minute, after the test gave up.
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			l, err := a.alice.Lease(ctx, l.ID, time.Minute)
			if err != nil {
				t.Errorf("long poll on replica a: %v", err)
			}
			got <- l
		}()
		testutil.WaitFor(t, "the long poll to be in flight", func() bool { return gauge(t, a.server, "gcefleet_provider_requests_in_flight") > 0 })
		if _, err := b.gce.AddMachine(ctx, machine(fmt.Sprint("vm-wait-", i))); err != nil {
			t.Fatal(err)
		}
		if l := <-got; l.State != store.Fulfilled || l.Hostname != fmt.Sprint("vm-wait-", i) {
			t.Fatalf("round %d: the long poll on the other replica answered %+v, want it fulfilled with vm-wait-%d", i, l, i)
		}
	}
}

// gauge reads a server's gauge without labels.
func gauge(t *testing.T, s *provider.Server, name string) float64 {
	t.Helper()
	return testutil.Metric(t, s.Registry(), name)[0].GetGauge().GetValue()
}

// TestOpenAPIMatchesTheServer: every operation the served OpenAPI document
// describes is one the server answers (with JSON, not the mux's 404).
func TestOpenAPIMatchesTheServer(t *testing.T) {
	w := start(t)
	resp, err := http.Get(w.url + "/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	err = yaml.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("the OpenAPI document does not parse: %v", err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	ops := 0
	for path, methods := range doc.Paths {
		for method := range methods {
			if method == "parameters" {
				continue
			}
			ops++
			req, _ := http.NewRequest(strings.ToUpper(method), w.url+param.ReplaceAllString(path, "x"), strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer admin-secret-0123456789")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode == 404 && !strings.HasPrefix(ct, "application/json") || resp.StatusCode == 405 {
				t.Errorf("%s %s is documented but not served: HTTP %d %s", strings.ToUpper(method), path, resp.StatusCode, body)
			}
		}
	}
	if ops < 10 {
		t.Errorf("the document describes %d operations; want every route", ops)
	}
}

// TestEndedLeasesArePruned: the provider deletes leases that ended and
// events written longer ago than lease_retention, and keeps the others.
func TestEndedLeasesArePruned(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ids []string
	for i, ago := range []time.Duration{48 * time.Hour, time.Hour} {
		st.Now = func() time.Time { return time.Now().Add(-ago) }
		if _, err := st.AddMachine(ctx, store.Machine{Backend: "gce", Hostname: fmt.Sprint("vm-", i), Dimensions: linux,
			Connection: store.Connection{Address: "10.1.2.3", Port: 8443}}); err != nil {
			t.Fatal(err)
		}
		l, _, err := st.RequestLease(ctx, "alice", lease(fmt.Sprint("ended-", i)))
		if err != nil || l.State != store.Fulfilled {
			t.Fatalf("lease: %+v, %v", l, err)
		}
		if _, _, err := st.ReleaseLease(ctx, "alice", l.ID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
	}
	st.Now = time.Now
	cfg, err := provider.ParseConfig("test.yaml", []byte(config+"lease_retention: 24h\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := provider.New(st, cfg, slog.New(slog.DiscardHandler))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.Run(rctx); close(done) }()
	defer func() { cancel(); <-done }()
	hosts := func() []string {
		evs, err := st.Events(ctx, "", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var h []string
		for _, e := range evs {
			h = append(h, e.Hostname)
		}
		return h
	}
	testutil.WaitFor(t, "the lease that ended and the events written two days ago to be pruned", func() bool {
		_, err := st.Lease(ctx, ids[0])
		return errors.Is(err, store.ErrNotFound) && !slices.Contains(hosts(), "vm-0")
	})
	if _, err := st.Lease(ctx, ids[1]); err != nil {
		t.Errorf("the lease that ended an hour ago: %v, want it kept", err)
	}
	if h := hosts(); !slices.Equal(h, []string{"vm-1", "vm-1"}) {
		t.Errorf("events kept for %q, want those of vm-1 (leased, reclaimed)", h)
	}
}

// TestClientKeepsConnections: a Client without an HTTP client of its own
// reuses its connections when many goroutines call at once, rather than
// opening one for most calls (Go's default keeps two idle per host), and
// has no more than 64 open to one provider however many call at once.
func TestClientKeepsConnections(t *testing.T) {
	// Not at most one a caller: a call that finds no connection idle dials
	// one, and when a connection another call frees reaches it first the
	// dial still completes into the pool (golang.org/issue/66442), so a
	// burst of 32 callers opens 33 to 62. The Client's bound holds them.
	const maxConns, calls = 64, 20
	for _, callers := range []int{32, 100} {
		t.Run(fmt.Sprint(callers, " callers"), func(t *testing.T) {
			w := start(t)
			var wg sync.WaitGroup
			for range callers {
				wg.Go(func() {
					for range calls {
						if _, err := w.alice.Leases(context.Background(), true); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			testutil.Wait(t, "the callers to finish", &wg)
			// The server counts a close when it reads it, which may be after
			// the client dialed the connection's replacement: one over.
			if n := w.peak.Load(); n > maxConns+1 {
				t.Errorf("%d callers had %d connections open at once, want at most %d", callers, n, maxConns)
			}
			if n := w.conns.Load(); n > int64(callers*calls/4) {
				t.Errorf("%d callers making %d calls each opened %d connections, want most calls to reuse one", callers, calls, n)
			}
		})
	}
}

// TestLesseeWatchesItsLease: a lessee's long poll with while=FULFILLED is
// answered when its lease is released or expires, and by no one else's.
func TestLesseeWatchesItsLease(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	for _, h := range []string{"vm-w1", "vm-w2"} {
		if _, err := w.gce.AddMachine(ctx, machine(h)); err != nil {
			t.Fatal(err)
		}
	}
	watched, err := w.alice.RequestLease(ctx, lease("watched"))
	if err != nil || watched.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", watched, err)
	}

	got := make(chan store.Lease, 1)
	go func() {
		l, err := w.alice.WatchLease(ctx, watched.ID, store.Fulfilled)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	testutil.WaitFor(t, "the watch to be waiting at the server", func() bool { return inFlight(t, w) == 1 })
	select {
	case l := <-got:
		t.Fatalf("the watch answered before anything changed: %+v", l)
	default:
	}
	if _, err := w.alice.Release(ctx, watched.ID); err != nil {
		t.Fatal(err)
	}
	if l := <-got; l.State != store.Released {
		t.Errorf("watch of a released lease answered %s", l.State)
	}
	if n := served(t, w, "GET /v1/leases/{id}"); n != 1 {
		t.Errorf("the watch took %d requests, want 1 long poll", n)
	}

	expiring, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "expiring", Dimensions: linux, Term: store.Term{Duration: time.Second}})
	if err != nil || expiring.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", expiring, err)
	}
	if _, err := w.bob.WatchLease(ctx, expiring.ID, store.Fulfilled); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob watching alice's lease: %v, want not found", err)
	}
	if l, err := w.alice.WatchLease(ctx, expiring.ID, store.Fulfilled); err != nil || l.State != store.Expired {
		t.Errorf("watch of a lease with a 1s term: %+v, %v; want it EXPIRED", l, err)
	}

	if code, body := getAs(t, w, "alice-secret-0123456789", "/v1/leases/"+expiring.ID+"?wait=1s&while=GONE"); code != http.StatusBadRequest ||
		!strings.Contains(body, `"query.while":"PENDING`) {
		t.Errorf("while=GONE: %d %s", code, body)
	}
}

// getAs GETs path from the server with a token and returns the status
// and body.
func getAs(t *testing.T, w *world, token, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", w.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// inFlight reads the server's gauge of requests being served.
func inFlight(t *testing.T, w *world) float64 {
	t.Helper()
	for _, m := range testutil.Metric(t, w.server.Registry(), "gcefleet_provider_requests_in_flight") {
		return m.GetGauge().GetValue()
	}
	return 0
}

// served counts the requests the server has answered on route.
func served(t *testing.T, w *world, route string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range testutil.Metric(t, w.server.Registry(), "gcefleet_provider_request_seconds") {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && l.GetValue() == route {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}
