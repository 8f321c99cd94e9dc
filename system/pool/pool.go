// Package pool is the bigmachine System whose machines are warm gceboot
// machines leased from the Machine Provider: a driver leases machines by
// dimensions, claims each one of a fulfilled lease (package claim), and
// runs on it as on any system, with no Compute call and no metadata write
// on the way from lease to Running.
//
// A lease is the machines' keepalive to the fleet: it is short (2 minutes
// by default) and the driver extends it while it runs, so that a driver
// that dies leaves its machines for at most one term; then the provider
// reclaims them and the backend deletes them. Every lease gets a fresh
// machine: the backend never hands a used one to another lessee.
//
// On the machine, the driver's binary runs as the pool system's worker,
// which serves as the gce system's does and deletes its instance when it
// exits.
package pool

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/system/gce/instance"
)

// System leases machines from a Machine Provider. Create it with New.
type System struct {
	cfg Config
	run string
	log *slog.Logger

	// present claims a fulfilled lease's machine: claim.PresentSession.
	present func(ctx context.Context, conn api.Connection, hostname, token string, runCA []byte, sign func(crypto.PublicKey) ([]byte, error)) (claim.Session, error)
	// renew hands a claimed machine its lease's new claim: claim.Renew.
	renew func(ctx context.Context, conn api.Connection, control, hostname, token string) error

	mu       sync.Mutex
	client   *client.Client
	next     int               // number of the next lease request
	leases   map[string]*Lease // by lease id
	stop     chan struct{}     // closed by Shutdown to end the extending
	extender sync.WaitGroup
	shutdown bool
}

// Lease is the system's record of one lease: a machine's Handle.
type Lease struct {
	ID string

	mu    sync.Mutex
	host  string // the machine, once the lease is fulfilled
	claim string // the lease's latest claim
	// conn and control are the claimed machine's connection and control
	// server, where each extension's claim goes; control is "" until
	// the machine is claimed.
	conn      api.Connection
	control   string
	delivered string    // the latest claim the machine took
	ended     error     // why the lease is over, once it is
	expires   time.Time // as of the last extension
	asked     time.Time // when KeepaliveFailed last asked the provider
	// failing is since when KeepaliveFailed has been called without a
	// gap of more than two keepalive calls, lastFailed its last call.
	failing, lastFailed time.Time
}

func (l *Lease) end(why error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended == nil {
		l.ended = why
	}
}

// Host returns the lease's machine, "" while the lease is pending.
func (l *Lease) Host() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.host
}

// Ended returns why the lease is over, or nil while it holds.
func (l *Lease) Ended() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended
}

// New returns a pool system with cfg. It checks nothing and calls
// nothing: workers create it too, before they know their configuration.
func New(cfg Config) *System {
	run := cfg.Run
	if run == "" {
		b := make([]byte, 4)
		rand.Read(b)
		run = "p" + hex.EncodeToString(b)
	}
	return &System{cfg: cfg, run: run, log: slog.Default(), present: claim.PresentSession, renew: claim.Renew, leases: map[string]*Lease{}}
}

// Name returns "pool".
func (s *System) Name() string { return "pool" }

// Run returns the run's name, which starts each of its lease request ids.
func (s *System) Run() string { return s.run }

// Keepalive returns the configured timing of the driver's keepalives to
// its machines (the leases have their own, Config.Lease).
func (s *System) Keepalive() bigmachine.Keepalive {
	return bigmachine.Keepalive{Period: s.cfg.KeepalivePeriod, Timeout: s.cfg.KeepaliveTimeout}
}

// Client returns the provider's client, made on first use.
func (s *System) Client() (*client.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	tok, err := s.cfg.token()
	if err != nil {
		return nil, fmt.Errorf("pool system: %w", err)
	}
	s.client = &client.Client{BaseURL: strings.TrimSuffix(s.cfg.Provider, "/"), Token: tok}
	return s.client, nil
}

// Leases returns the leases the system holds or held, for tests and
// status pages.
func (s *System) Leases() []*Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Lease, 0, len(s.leases))
	for _, l := range s.leases {
		out = append(out, l)
	}
	return out
}

// HTTPClient returns an HTTP/2 client with cfg.
func (s *System) HTTPClient(cfg *tls.Config) *http.Client { return rpc.HTTPClient(cfg) }

// Tail streams the machine's output over the runtime's own RPC.
func (s *System) Tail(ctx context.Context, m *bigmachine.Machine, w io.Writer) error {
	return bigmachine.TailOutput(ctx, m, w)
}

// KeepaliveFailed asks the provider about the machine's lease: a lease
// that ended (released, expired, reclaimed) has taken its machine, which
// the backend deletes. It asks at most once a second a lease.
func (s *System) KeepaliveFailed(ctx context.Context, m *bigmachine.Machine) (bool, error) {
	h, ok := m.Handle().(*Lease)
	if !ok {
		return false, nil
	}
	if why := h.Ended(); why != nil {
		return true, why
	}
	// A keepalive call lasts up to max(period, 1s), and one follows
	// another a period later: calls closer than two of those apart are
	// one spell of failing keepalives, which the driver ends at the
	// timeout since its last success, a call or so before the spell's
	// first.
	ka := s.Keepalive()
	call := max(ka.Period, time.Second) + ka.Period
	now := time.Now()
	h.mu.Lock()
	if now.Sub(h.lastFailed) > 2*call {
		h.failing = now // keepalives succeeded in between
	}
	h.lastFailed = now
	failing := now.Sub(h.failing)
	h.mu.Unlock()
	if failing >= max(ka.Timeout-2*call, ka.Period) {
		// The driver gives the machine up about now: release its lease,
		// so that the fleet reclaims it at once, not at its expiry.
		why := fmt.Errorf("no keepalive for %v; its lease %s is released", failing.Round(time.Millisecond), h.ID)
		if c, err := s.Client(); err == nil {
			if err := s.release(ctx, c, h, why); err != nil {
				s.log.Warn("releasing the lease of a machine given up", "lease", h.ID, "machine", h.Host(), "err", err)
			}
		}
		return true, why
	}
	h.mu.Lock()
	due := time.Since(h.asked) >= time.Second
	if due {
		h.asked = time.Now()
	}
	h.mu.Unlock()
	if !due {
		return false, nil
	}
	c, err := s.Client()
	if err != nil {
		return false, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := c.Lease(cctx, h.ID, 0)
	switch {
	case errors.Is(err, api.ErrNotFound):
		h.end(fmt.Errorf("lease %s of %s: the provider knows it no more", h.ID, h.Host()))
	case err != nil:
		return false, nil // the provider's trouble is not the machine's
	case l.State != api.Fulfilled:
		h.end(fmt.Errorf("lease %s of %s is %s: the machine is the fleet's again, and deleted", h.ID, h.Host(), l.State))
	}
	if why := h.Ended(); why != nil {
		return true, why
	}
	return false, nil
}

// Shutdown stops extending the leases and releases every one the system
// holds, pending ones too, in parallel.
func (s *System) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown && s.stop != nil {
		close(s.stop)
	}
	s.shutdown = true
	c := s.client
	var ls []*Lease
	for _, l := range s.leases {
		if l.Ended() == nil {
			ls = append(ls, l)
		}
	}
	s.mu.Unlock()
	s.extender.Wait()
	if c == nil {
		return nil
	}
	errs := make([]error, len(ls))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, l := range ls {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = s.release(ctx, c, l, errors.New("released at shutdown"))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// release ends lease l, which ended for why; a lease the provider has
// ended already is released.
func (s *System) release(ctx context.Context, c *client.Client, l *Lease, why error) error {
	err := retry(ctx, func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.Release(cctx, l.ID)
		return err
	})
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("releasing lease %s: %w", l.ID, err)
	}
	l.end(why)
	return nil
}

// unreachableFor is how long retry tries a provider that does not answer
// at all before it says so: a provider restarting is back within it, and
// a wrong -pool.provider should not cost the whole start timeout.
const unreachableFor = 5 * time.Second

// retry calls f until it succeeds, fails for a reason a retry does not
// mend, or ctx ends: what a retry mends is the provider answering 5xx or
// 429, or (for unreachableFor) not answering.
func retry(ctx context.Context, f func() error) error {
	backoff := 50 * time.Millisecond
	began := time.Now()
	for {
		err := f()
		if untrusted(err) {
			return fmt.Errorf("%w (the provider's TLS certificate is not trusted here: give its CA in SSL_CERT_FILE, or check -pool.provider's host name)", err)
		}
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, client.ErrUnreachable) && time.Since(began) > unreachableFor {
			return fmt.Errorf("%w (for %v: is gcefleet serve running there? -pool.provider or GCEFLEET_PROVIDER names it)", err, unreachableFor)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// untrusted reports whether err is the provider's certificate failing
// verification, which no retry mends.
func untrusted(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
	)
	return err != nil && (errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &hostname) || errors.As(err, &verify))
}

func transient(err error) bool {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Status >= 500 || e.Status == http.StatusTooManyRequests
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// Listen listens on addr; a missing host means the instance's internal
// address, from the metadata server.
func (s *System) Listen(addr string) (net.Listener, error) { return instance.Listen(addr) }

// Exit deletes the instance this worker runs on, then exits: a pool
// machine serves one lessee, and the backend replaces it with a fresh one.
func (s *System) Exit(code int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := instance.DeleteSelf(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "pool: deleting this instance:", err)
	}
	os.Exit(code)
}

// cpus returns the machine's cpus dimension, at least 1.
func cpus(m *api.Machine) int {
	if m == nil {
		return 1
	}
	for _, v := range m.Dimensions["cpus"] {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return 1
}

var _ bigmachine.System = (*System)(nil)
