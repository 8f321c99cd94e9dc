// Package provider is the Machine Provider: a catalog of machines that
// backends add, and leases of those machines by dimensions for clients,
// served as HTTP/JSON under /v1/ with bearer tokens and roles. Its state is
// a store.Store; Server serves it and Client (in provider/client) calls it,
// both with the types of provider/api.
package provider

import (
	_ "embed"
	"html/template"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

	claims claimKeys // the claim key, once read or made
	// poolBackends may catalog pool machines (see Token.Pool).
	poolBackends map[string]bool

	polls polls // the long polls waiting, by what they wait for
	// stopping is closed when the server shuts down: waiting long polls
	// answer at once with what they have, rather than hold up the drain.
	stopping     chan struct{}
	stoppingOnce sync.Once

	mu     sync.Mutex
	wakeAt time.Time     // when Run looks next
	wake   chan struct{} // wakes Run sooner

	sections []func() template.HTML
	deferred []func()

	sessions *sessions // the browsers signed in to the pages
	history  *history  // the status page's charts
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
	s.poolBackends = map[string]bool{}
	for _, t := range cfg.Tokens {
		if t.Pool && t.Role == Backend {
			s.poolBackends[t.Name] = true
		}
	}
	if cfg.Backend != nil && cfg.Backend.Token != "" {
		s.poolBackends[cfg.Backend.Token] = true
	}
	s.polls.leases = map[string]map[*poll]struct{}{}
	s.stopping = make(chan struct{})
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
