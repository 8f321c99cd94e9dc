// Package provider is the Machine Provider: a catalog of machines that
// backends add, and leases of those machines by dimensions for clients,
// served as HTTP/JSON under /v1/ with bearer tokens and roles. Its state is
// a store.Store; Server serves it and Client (in provider/client) calls it.
package provider

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gcefleet/gcefleet/store"
)

//go:embed openapi.yaml
var openAPI []byte

// Principal is who a request comes from.
type Principal struct {
	Name, Role string
}

// Server serves the provider's API.
type Server struct {
	st        *store.Store
	tokens    []Token
	retention time.Duration // of ended leases and of events
	log       *slog.Logger
	reg       *prometheus.Registry
	m         metrics

	// hearing says that the changes other replicas commit wake long polls
	// (see follow); until they do, long polls look every second.
	hearing atomic.Bool

	polls polls // the long polls waiting, by what they wait for

	mu     sync.Mutex
	wakeAt time.Time     // when Run looks next
	wake   chan struct{} // wakes Run sooner

	sections []func() template.HTML
	deferred []func()

	sessions *sessions // the browsers signed in to the pages
	history  *history  // the status page's charts
}

type metrics struct {
	inFlight prometheus.Gauge
	outcomes *prometheus.CounterVec
	wait     prometheus.Histogram
	latency  *prometheus.HistogramVec
	wakeups  *prometheus.CounterVec
}

// New returns a server for st with the tokens of cfg.
func New(st *store.Store, cfg Config, log *slog.Logger) *Server {
	retention := cfg.LeaseRetention
	if retention == 0 {
		retention = DefaultLeaseRetention
	}
	s := &Server{st: st, tokens: cfg.Tokens, retention: retention, log: log, reg: prometheus.NewRegistry(), wake: make(chan struct{}, 1)}
	// The store refuses requests beyond the cap; it is the provider's
	// configuration that sets it.
	st.MaxPending = cfg.MaxPendingPerClient
	s.polls.leases = map[string]map[*poll]struct{}{}
	s.polls.events = map[*poll]struct{}{}
	s.sessions, s.history = newSessions(), newHistory()
	s.m = metrics{
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gcefleet_provider_requests_in_flight",
			Help: "API requests being served, long polls included.",
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcefleet_provider_lease_outcomes_total",
			Help: "Lease requests by outcome: fulfilled at once, queued, fulfilled from the queue, released, ended by time (expired or denied).",
		}, []string{"outcome"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gcefleet_provider_queue_wait_seconds",
			Help:    "How long queued lease requests waited for a machine.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gcefleet_provider_request_seconds",
			Help:    "API request latency by route and status.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route", "code"}),
		wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcefleet_provider_long_poll_wakeups_total",
			Help: "Long polls woken by a change of what they wait for, by how they looked at it: read (from the store again) or change (the change's own value, no read).",
		}, []string{"answer"}),
	}
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gcefleet_provider_long_polls_waiting",
		Help: "Long polls waiting for a change.",
	}, func() float64 {
		s.polls.mu.Lock()
		defer s.polls.mu.Unlock()
		return float64(s.polls.n)
	})
	hearing := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gcefleet_provider_hearing_replicas",
		Help: "1 when the changes other replicas commit wake this one's long polls at once; 0 while long polls look every second instead.",
	}, func() float64 {
		if s.hearing.Load() {
			return 1
		}
		return 0
	})
	s.reg.MustRegister(s.m.inFlight, s.m.outcomes, s.m.wait, s.m.latency, s.m.wakeups, waiting, hearing, &gauges{s})
	return s
}

// prune deletes the leases that ended and the events written longer ago
// than the retention, a thousand at a time so that no one transaction
// holds the database long.
func (s *Server) prune(ctx context.Context) {
	before := time.Now().Add(-s.retention)
	for _, p := range []struct {
		what  string
		prune func(context.Context, time.Time, int) (int, error)
	}{
		{"ended leases", s.st.PruneLeases},
		{"events", s.st.PruneEvents},
	} {
		total := 0
		for ctx.Err() == nil {
			n, err := p.prune(ctx, before, 1000)
			total += n
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("pruning "+p.what, "err", err)
				}
				break
			}
			if n < 1000 {
				break
			}
		}
		if total > 0 {
			s.log.Info("pruned "+p.what, "count", total, "older_than", before.Format(time.RFC3339))
		}
	}
}

// GCPercent is the garbage collector's target that gcefleet serve runs
// with unless GOGC is set. A provider's live heap is small (tens of MB)
// and every request allocates: collecting when the heap reaches 5x the
// live heap rather than Go's default 2x measured 12-20% more lease+release
// pairs a second (docs/benchmarks.md) for some tens of MB.
const GCPercent = 400

// gauges reads machines and leases by state from the store at scrape time.
type gauges struct{ s *Server }

var (
	machinesDesc = prometheus.NewDesc("gcefleet_provider_machines", "Cataloged machines by state.", []string{"state"}, nil)
	leasesDesc   = prometheus.NewDesc("gcefleet_provider_leases", "Active leases by state; PENDING is the queue's length. (Ended leases are counted by gcefleet_provider_lease_outcomes_total.)", []string{"state"}, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) { ch <- machinesDesc; ch <- leasesDesc }
func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	ms, ls, err := g.s.st.Counts(context.Background())
	if err != nil {
		return
	}
	for _, st := range []string{store.Available, store.Leased} {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(ms[st]), st)
	}
	for _, st := range []string{store.Pending, store.Fulfilled} {
		ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(ls[st]), st)
	}
}

// polls are the long polls waiting, by what wakes them: a change of
// their lease, or new events of their backend. A change wakes only the
// polls that wait for it (with thousands waiting, waking all for each
// change made each re-read its lease, most for nothing).
type polls struct {
	mu     sync.Mutex
	leases map[string]map[*poll]struct{} // by lease id
	events map[*poll]struct{}
	n      int // polls waiting
}

// poll is one long poll waiting.
type poll struct {
	lease   string // the lease it waits on, or "" for events
	while   string // a lease poll waits while its lease is in this state
	backend string // an event poll reads this backend's events ("" all)

	wake chan struct{} // 1-buffered: a change happened (got or stale)

	mu    sync.Mutex
	got   *store.Lease // the lease as a change left it, out of while
	stale bool         // something changed that only a read tells
}

// watch registers p, before its first look, so that no change after that
// look goes unseen; the func it returns unregisters it.
func (s *Server) watch(p *poll) func() {
	p.wake = make(chan struct{}, 1)
	ps := &s.polls
	ps.mu.Lock()
	ps.n++
	if p.lease == "" {
		ps.events[p] = struct{}{}
	} else {
		if ps.leases[p.lease] == nil {
			ps.leases[p.lease] = map[*poll]struct{}{}
		}
		ps.leases[p.lease][p] = struct{}{}
	}
	ps.mu.Unlock()
	return func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		ps.n--
		if p.lease == "" {
			delete(ps.events, p)
			return
		}
		delete(ps.leases[p.lease], p)
		if len(ps.leases[p.lease]) == 0 {
			delete(ps.leases, p.lease)
		}
	}
}

// tell wakes p with l, the lease as a change left it, or, with l nil, to
// read again.
func (p *poll) tell(l *store.Lease) {
	p.mu.Lock()
	switch {
	case l == nil:
		p.stale = true
	case l.State == p.while:
		// Not what it waits for (an extension of a lease watched for its
		// end): nothing to do.
		p.mu.Unlock()
		return
	case p.got == nil:
		p.got = l
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// taken returns and clears what p was told.
func (p *poll) taken() (got *store.Lease, stale bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	got, stale = p.got, p.stale
	p.got, p.stale = nil, false
	return got, stale
}

// leaseChanged wakes the polls of lease l.ID with its new value: they
// answer with it, without reading it again.
func (s *Server) leaseChanged(l store.Lease) {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for p := range s.polls.leases[l.ID] {
		p.tell(&l)
	}
}

// leaseTouched wakes the polls of lease id to read it again: it changed,
// in a way this server does not know the result of.
func (s *Server) leaseTouched(id string) {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for p := range s.polls.leases[id] {
		p.tell(nil)
	}
}

// eventsAdded wakes the event polls of backend (all for "").
func (s *Server) eventsAdded(backend string) {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for p := range s.polls.events {
		if backend == "" || p.backend == "" || p.backend == backend {
			p.tell(nil)
		}
	}
}

// notify wakes every poll to read again: anything may have changed.
func (s *Server) notify() {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for _, ps := range s.polls.leases {
		for p := range ps {
			p.tell(nil)
		}
	}
	for p := range s.polls.events {
		p.tell(nil)
	}
}

// leased wakes the polls that lease l's fulfilment answers: its own
// and its machine's backend's event feed (a "leased" event).
func (s *Server) leased(l store.Lease) {
	s.leaseChanged(l)
	if l.Machine != nil {
		s.eventsAdded(l.Machine.Backend)
	}
}

// Run ends leases as they expire and requests as their deadline passes,
// until ctx ends. A lease's end reaches its backend at once, not at the
// next pass of a cron: the loop sleeps until the next lease is due, and is
// woken early when a lease due sooner appears.
func (s *Server) Run(ctx context.Context) error {
	go s.sampleHistory(ctx)
	if s.st.Dialect() == "postgres" {
		go s.follow(ctx)
	} else {
		s.hearing.Store(true) // SQLite has one process: this one
	}
	var maintained, pruned time.Time
	for {
		if time.Since(maintained) > time.Minute {
			if err := s.st.Maintain(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("refreshing the database's statistics", "err", err)
			}
			maintained = time.Now()
		}
		if time.Since(pruned) > time.Hour {
			s.prune(ctx)
			pruned = time.Now()
		}
		ended, next, err := s.st.Expire(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("expiring leases", "err", err)
			next = time.Now().Add(5 * time.Second)
		}
		if len(ended) > 0 {
			s.m.outcomes.WithLabelValues("ended_by_time").Add(float64(len(ended)))
			for _, id := range ended {
				s.leaseTouched(id)
			}
			s.eventsAdded("") // "reclaimed", for the leases that had machines
		}
		// Look again at least every few seconds, for the leases other
		// replicas make.
		wait := 5 * time.Second
		if !next.IsZero() {
			wait = min(max(time.Until(next), 0), wait)
		}
		s.mu.Lock()
		s.wakeAt = time.Now().Add(wait)
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-s.wake:
			t.Stop()
		}
	}
}

// follow wakes long polls when other replicas on the same database commit
// a change, until ctx ends: only those of the lease that changed, or the
// event polls for new events.
func (s *Server) follow(ctx context.Context) {
	backoff := time.Second
	for {
		err := s.st.Listen(ctx, func(c store.Change) {
			s.hearing.Store(true)
			backoff = time.Second
			switch {
			case c.Lease != "":
				s.leaseTouched(c.Lease)
			case c.Events:
				s.eventsAdded(c.Backend)
			default:
				s.notify()
			}
		})
		s.hearing.Store(false)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("not hearing of other replicas' changes; long polls look every second until this recovers", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// due tells Run of a lease or request that ends at t.
func (s *Server) due(t time.Time) {
	if t.IsZero() {
		return
	}
	s.mu.Lock()
	sooner := t.Before(s.wakeAt)
	s.mu.Unlock()
	if sooner {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Handler returns the HTTP handler of the API, the OpenAPI document,
// /metrics and the status page.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, roles []string, h func(w http.ResponseWriter, r *http.Request, p Principal) error) {
		mux.Handle(pattern, s.wrap(pattern, roles, h))
	}
	all := []string{Admin, Backend, Client}
	route("GET /v1/machines", []string{Admin, Backend}, s.listMachines)
	route("POST /v1/machines", []string{Admin, Backend}, s.addMachine)
	route("POST /v1/machines:batchAdd", []string{Admin, Backend}, s.addMachines)
	route("GET /v1/machines/{hostname}", []string{Admin, Backend}, s.getMachine)
	route("DELETE /v1/machines/{hostname}", []string{Admin, Backend}, s.deleteMachine)
	route("POST /v1/leases", []string{Admin, Client}, s.requestLease)
	route("GET /v1/leases", []string{Admin, Client}, s.listLeases)
	route("GET /v1/leases/{id}", []string{Admin, Client}, s.getLease)
	route("POST /v1/leases/{id}/extend", []string{Admin, Client}, s.extendLease)
	route("POST /v1/leases/{id}/release", []string{Admin, Client}, s.releaseLease)
	route("GET /v1/events", []string{Admin, Backend}, s.events)
	// The pages take a browser's session cookie too (see page); the
	// API above does not.
	mux.Handle("GET /{$}", s.page(true, s.wrap("GET /{$}", all, s.status)))
	mux.Handle("GET /metrics", s.page(false, s.wrap("/metrics", all, func(w http.ResponseWriter, r *http.Request, _ Principal) error {
		promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return nil
	})))
	s.handlePages(mux)
	mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openAPI)
	})
	return mux
}

// apiError is an error answer: {"error": {...}}.
type apiError struct {
	Status  int               `json:"-"`
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
	id      string            // of an internal error, in the log and the message
}

func (e *apiError) Error() string { return e.Message }

func invalid(fields map[string]string) error {
	keys := slices.Sorted(maps.Keys(fields))
	var more string
	// A body of a thousand bad fields is answered with the first few,
	// not echoed back whole.
	if len(keys) > maxFieldErrors {
		more = fmt.Sprintf("; and %d more", len(keys)-maxFieldErrors)
		keys = keys[:maxFieldErrors]
		kept := make(map[string]string, len(keys))
		for _, k := range keys {
			kept[k] = fields[k]
		}
		fields = kept
	}
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+": "+fields[k])
	}
	return &apiError{Status: http.StatusBadRequest, Code: "invalid", Message: "invalid request: " + strings.Join(parts, "; ") + more, Fields: fields}
}

// wrap authenticates, authorizes, times and answers a route.
func (s *Server) wrap(route string, roles []string, h func(http.ResponseWriter, *http.Request, Principal) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.m.inFlight.Inc()
		defer s.m.inFlight.Dec()
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		err := s.authorize(r, roles)
		refuseEarly(rec, err)
		if err == nil {
			var p Principal
			p, _ = s.principal(r)
			err = ownScope(r, p)
			// Only an authenticated caller's long poll outlasts the
			// server's timeouts; queryWait's error is the handler's to give.
			if strings.Contains(r.URL.RawQuery, "wait=") {
				if wait, err := queryWait(r.URL.Query()); err == nil {
					holdOpen(rec, wait)
				}
			}
			if err == nil {
				err = h(rec, r, p)
			}
		}
		if err != nil {
			ae := s.classify(err)
			rec.Header().Set("Content-Type", "application/json")
			rec.WriteHeader(ae.Status)
			json.NewEncoder(rec).Encode(map[string]any{"error": ae})
			if ae.id != "" {
				s.log.Error("request failed", "route", route, "id", ae.id, "err", err)
			}
		}
		s.m.latency.WithLabelValues(route, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
	})
}

// classify turns err into its answer. An error the API does not know is
// answered with an id and nothing of its text, which is the log's (with
// the id): it may hold SQL, a driver's message or a path.
func (s *Server) classify(err error) *apiError {
	var ae *apiError
	// The store's sentinels' messages are for the client; its layer's
	// prefix is not.
	msg := strings.TrimPrefix(err.Error(), "store: ")
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: msg}
	case errors.Is(err, store.ErrConflict):
		return &apiError{Status: http.StatusConflict, Code: "conflict", Message: msg}
	case errors.Is(err, store.ErrLeased):
		return &apiError{Status: http.StatusConflict, Code: "leased", Message: msg}
	case errors.Is(err, store.ErrNotActive):
		return &apiError{Status: http.StatusConflict, Code: "not_active", Message: msg}
	case errors.Is(err, store.ErrRequestIDReuse):
		return &apiError{Status: http.StatusConflict, Code: "request_id_reuse", Message: msg}
	case errors.Is(err, store.ErrReclaimed):
		return &apiError{Status: http.StatusConflict, Code: "reclaimed", Message: msg}
	case errors.Is(err, context.Canceled):
		return &apiError{Status: 499, Code: "canceled", Message: "the request was canceled"}
	}
	id := errorID()
	return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error (id " + id + ")", id: id}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) principal(r *http.Request) (Principal, bool) {
	if p, ok := r.Context().Value(sessionKey{}).(Principal); ok {
		return p, true // a signed-in browser's, on a page (see page)
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" || len(r.Header.Values("Authorization")) > 1 { // two: which one is meant?
		return Principal{}, false
	}
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t.Token)) == 1 {
			return Principal{Name: t.Name, Role: t.Role}, true
		}
	}
	return Principal{}, false
}

func (s *Server) authorize(r *http.Request, roles []string) error {
	p, ok := s.principal(r)
	if !ok {
		return &apiError{Status: http.StatusUnauthorized, Code: "unauthenticated", Message: "missing or unknown bearer token: send Authorization: Bearer TOKEN with a token from the provider's configuration"}
	}
	for _, role := range roles {
		if p.Role == role {
			return nil
		}
	}
	return &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("%s (%s) may not %s %s", p.Name, p.Role, r.Method, r.URL.Path)}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

var dimKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

func checkDims(fields map[string]string, prefix string, d store.Dimensions, required bool) {
	switch {
	case required && len(d) == 0:
		fields[prefix] = "give at least one dimension, such as os=linux"
	case len(d) > maxDimKeys:
		fields[prefix] = fmt.Sprintf("at most %d keys", maxDimKeys)
		return
	}
	for k, vs := range d {
		at := prefix + "." + k
		if !dimKeyRE.MatchString(k) {
			if textProblem(k, 63) != "" {
				at = prefix // the key cannot name the field
			}
			fields[at] = "keys start with a lowercase letter and hold lowercase letters, digits, _, . and - (at most 63)"
			continue
		}
		switch {
		case len(vs) == 0:
			fields[at] = "give at least one value"
		case len(vs) > maxDimValues:
			fields[at] = fmt.Sprintf("at most %d values a key", maxDimValues)
			continue
		}
		for _, v := range vs {
			if v == "" || len(v) > maxDimValue {
				fields[at] = fmt.Sprintf("values are 1 to %d bytes", maxDimValue)
			} else if p := textProblem(v, maxDimValue); p != "" {
				fields[at] = "values: " + p
			}
		}
	}
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "backend")
	if err != nil {
		return err
	}
	backend := q.Get("backend")
	if p.Role == Backend {
		backend = p.Name
	}
	ms, err := s.st.Machines(r.Context(), backend)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"machines": nonNil(ms)})
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := checkPath(r, "hostname"); err != nil {
		return err
	}
	m, err := s.st.Machine(r.Context(), r.PathValue("hostname"))
	if err != nil {
		return err
	}
	if p.Role == Backend && m.Backend != p.Name {
		return fmt.Errorf("machine %s: %w", m.Hostname, store.ErrNotFound)
	}
	return writeJSON(w, http.StatusOK, m)
}

func (s *Server) addMachine(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	var m store.Machine
	if err := readJSON(r, &m); err != nil {
		return err
	}
	fields := map[string]string{}
	checkMachine(fields, "", &m, p)
	if len(fields) > 0 {
		return invalid(fields)
	}
	m, err := s.st.AddMachine(r.Context(), m)
	if err != nil {
		return err
	}
	s.added(r.Context(), m)
	return writeJSON(w, http.StatusOK, m)
}

// maxBatchAdd bounds a batch of machines: a backend catalogs a group's
// new instances at once, and groups hold at most 1,000.
const maxBatchAdd = 1000

// addMachines catalogs a batch of machines, each as addMachine would:
// one refused does not stop the others. A batch costs the store about
// one transaction instead of one a machine.
func (s *Server) addMachines(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	var req struct {
		Machines []store.Machine `json:"machines"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	fields := map[string]string{}
	if len(req.Machines) == 0 || len(req.Machines) > maxBatchAdd {
		fields["machines"] = fmt.Sprintf("1 to %d machines", maxBatchAdd)
	}
	for i := range req.Machines {
		checkMachine(fields, fmt.Sprintf("machines[%d].", i), &req.Machines[i], p)
	}
	if len(fields) > 0 {
		return invalid(fields)
	}
	ms, errs := s.st.AddMachines(r.Context(), req.Machines)
	type result struct {
		Machine *store.Machine `json:"machine,omitempty"`
		Error   *apiError      `json:"error,omitempty"`
	}
	out := make([]result, len(ms))
	for i, m := range ms {
		if errs[i] != nil {
			out[i].Error = s.classify(errs[i])
			if out[i].Error.id != "" {
				s.log.Error("adding a machine failed", "hostname", req.Machines[i].Hostname, "id", out[i].Error.id, "err", errs[i])
			}
			continue
		}
		s.added(r.Context(), m)
		out[i].Machine = &ms[i]
	}
	return writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

// checkMachine adds m's problems to fields, each under prefix, and sets
// a backend's machine's backend to the caller's name.
func checkMachine(fields map[string]string, prefix string, m *store.Machine, p Principal) {
	checkHostname(fields, prefix+"hostname", m.Hostname)
	if p := textProblem(m.Backend, maxName); p != "" {
		fields[prefix+"backend"] = p
	}
	switch {
	case p.Role == Backend && m.Backend == "":
		m.Backend = p.Name
	case p.Role == Backend && m.Backend != p.Name:
		fields[prefix+"backend"] = fmt.Sprintf("a backend catalogs only its own machines: %q, not %q", p.Name, m.Backend)
	case m.Backend == "":
		fields[prefix+"backend"] = "name the backend the machine belongs to"
	}
	checkDims(fields, prefix+"dimensions", m.Dimensions, false)
	if m.Policies.OnReclaim != "" && m.Policies.OnReclaim != "DELETE" && m.Policies.OnReclaim != "RECYCLE" {
		fields[prefix+"policies.on_reclaim"] = "DELETE or RECYCLE"
	}
	if m.Connection.Port < 0 || m.Connection.Port > 65535 {
		fields[prefix+"connection.port"] = "a port, 1 to 65535"
	}
	checkAddress(fields, prefix+"connection.address", m.Connection.Address)
	checkCACert(fields, prefix+"connection.ca_cert", m.Connection.CACert)
	if m.State != "" || m.LeaseID != "" {
		fields[prefix+"state"] = "state and lease_id are the provider's to set"
	}
}

// added counts a machine that went at once to a waiting request, and
// answers that request's long polls with the lease read here, once.
func (s *Server) added(ctx context.Context, m store.Machine) {
	if m.LeaseID == "" {
		return
	}
	l, err := s.st.Lease(ctx, m.LeaseID)
	if err != nil {
		s.leaseTouched(m.LeaseID)
		s.eventsAdded(m.Backend)
		return
	}
	if l.Hostname == m.Hostname {
		s.m.outcomes.WithLabelValues("fulfilled_from_queue").Inc()
		s.m.wait.Observe(l.Fulfilled.Sub(l.Created).Seconds())
		s.due(l.ExpiresAt)
	}
	s.leased(l)
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := checkPath(r, "hostname"); err != nil {
		return err
	}
	backend := ""
	if p.Role == Backend {
		backend = p.Name
	}
	if err := s.st.DeleteMachine(r.Context(), backend, r.PathValue("hostname")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) requestLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	var req store.LeaseRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	now := time.Now()
	fields := map[string]string{}
	if req.RequestID == "" || textProblem(req.RequestID, maxRequestID) != "" {
		fields["request_id"] = fmt.Sprintf("1 to %d printable characters that make the request idempotent (a UUID, say)", maxRequestID)
	}
	checkDims(fields, "dimensions", req.Dimensions, true)
	if err := req.Term.Validate(now); err != nil {
		fields["term"] = err.Error()
	}
	if !req.Deadline.IsZero() && (!req.Deadline.After(now) || req.Deadline.Sub(now) > 7*24*time.Hour) {
		fields["deadline"] = "in the future and at most 7 days away"
	}
	if len(fields) > 0 {
		return invalid(fields)
	}
	l, created, err := s.st.RequestLease(r.Context(), p.Name, req)
	if errors.Is(err, store.ErrQueueFull) {
		return &apiError{Status: http.StatusTooManyRequests, Code: "queue_full", Message: err.Error()}
	}
	if err != nil {
		return err
	}
	if created {
		// A new lease: no poll waits on it yet, but a lease fulfilled at
		// once wrote an event.
		if l.State == store.Fulfilled {
			s.m.outcomes.WithLabelValues("fulfilled_at_once").Inc()
			s.due(l.ExpiresAt)
			s.leased(l)
		} else {
			s.m.outcomes.WithLabelValues("queued").Inc()
			s.due(l.Request.Deadline)
		}
	}
	return writeJSON(w, http.StatusOK, l)
}

// owned returns lease id if p may see it.
func (s *Server) owned(ctx context.Context, p Principal, id string) (store.Lease, error) {
	l, err := s.st.Lease(ctx, id)
	if err != nil {
		return l, err
	}
	if p.Role != Admin && l.Client != p.Name {
		return l, fmt.Errorf("lease %s: %w", id, store.ErrNotFound)
	}
	return l, nil
}

// getLease answers with a lease. With ?wait=, a lease in the state
// ?while= names (PENDING if not given; FULFILLED to watch a lease end) is
// answered when it leaves that state or the wait passes.
func (s *Server) getLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "wait", "while")
	if err != nil {
		return err
	}
	if _, err := queryWait(q); err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := checkID(id); err != nil {
		return err
	}
	while := store.Pending
	switch v := q.Get("while"); v {
	case "", store.Pending:
	case store.Fulfilled:
		while = v
	default:
		return invalid(map[string]string{"while": "PENDING (the default: wait for fulfilment) or FULFILLED (wait for the lease to end)"})
	}
	var l store.Lease
	err = s.longPoll(r, &poll{lease: id, while: while}, func(got *store.Lease) (bool, error) {
		if got != nil {
			// The change's value: the first look, a read, found the lease
			// p's, and a lease's client does not change.
			l = *got
			return true, nil
		}
		var err error
		l, err = s.owned(r.Context(), p, id)
		return err != nil || l.State != while, err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, l)
}

// longPoll calls ready until it says the answer is ready, the request's
// ?wait= passes, or the request ends: first with nil (ready reads what it
// needs), then each time a change wakes p, with the lease as the change
// left it when this server knows that (ready answers with it) or nil
// (ready reads again). Changes that are not p's do not wake it. While
// other replicas' changes go unheard (see follow), it reads again every
// second.
func (s *Server) longPoll(r *http.Request, p *poll, ready func(got *store.Lease) (bool, error)) error {
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 5*time.Minute {
			return invalid(map[string]string{"wait": "a duration up to 5m, such as 30s"})
		}
		wait = d
	}
	deadline := time.Now().Add(wait)
	if wait > 0 {
		defer s.watch(p)()
	}
	var got *store.Lease
	for look := true; ; {
		if look {
			done, err := ready(got)
			if err != nil || done {
				return err
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		recheck := left
		if !s.hearing.Load() {
			recheck = min(left, time.Second)
		}
		t := time.NewTimer(recheck)
		select {
		case <-p.wake:
			var stale bool
			got, stale = p.taken()
			switch look = got != nil || stale; {
			case got != nil:
				s.m.wakeups.WithLabelValues("change").Inc()
			case stale:
				s.m.wakeups.WithLabelValues("read").Inc()
			}
		case <-t.C:
			got, look = nil, true
		case <-r.Context().Done():
			t.Stop()
			return r.Context().Err()
		}
		t.Stop()
	}
}

func (s *Server) listLeases(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "client", "active")
	if err != nil {
		return err
	}
	active, err := queryBool(q, "active")
	if err != nil {
		return err
	}
	client := p.Name
	if p.Role == Admin {
		client = q.Get("client")
	}
	ls, err := s.st.Leases(r.Context(), client, active)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"leases": nonNil(ls)})
}

func (s *Server) extendLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := checkID(r.PathValue("id")); err != nil {
		return err
	}
	var body struct {
		Term store.Term `json:"term"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	if err := body.Term.Validate(time.Now()); err != nil {
		return invalid(map[string]string{"term": err.Error()})
	}
	client := p.Name
	if p.Role == Admin {
		client = ""
	}
	l, err := s.st.ExtendLease(r.Context(), client, r.PathValue("id"), body.Term)
	if err != nil {
		return err
	}
	s.due(l.ExpiresAt)
	s.leaseChanged(l)
	return writeJSON(w, http.StatusOK, l)
}

func (s *Server) releaseLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := checkID(r.PathValue("id")); err != nil {
		return err
	}
	client := p.Name
	if p.Role == Admin {
		client = ""
	}
	l, ended, err := s.st.ReleaseLease(r.Context(), client, r.PathValue("id"))
	if err != nil {
		return err
	}
	if ended {
		s.m.outcomes.WithLabelValues("released").Inc()
		s.leaseChanged(l)
		if l.Machine != nil {
			s.eventsAdded(l.Machine.Backend) // "reclaimed"
		}
	}
	return writeJSON(w, http.StatusOK, l)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "backend", "after", "wait")
	if err != nil {
		return err
	}
	if _, err := queryWait(q); err != nil {
		return err
	}
	backend := q.Get("backend")
	if p.Role == Backend {
		backend = p.Name
	}
	after, err := queryCursor(q, "after")
	if err != nil {
		return err
	}
	var evs []store.Event
	err = s.longPoll(r, &poll{backend: backend}, func(*store.Lease) (bool, error) {
		var err error
		evs, err = s.st.Events(r.Context(), backend, after, 500)
		return len(evs) > 0, err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"events": nonNil(evs)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
