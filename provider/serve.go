package provider

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gcefleet/gcefleet/internal/netcap"
	"github.com/gcefleet/gcefleet/store"
)

// Serve opens the store of cfg, serves the API on cfg.Listen and ends
// leases as they expire, until ctx ends; then it stops taking requests and
// drains those in flight (for up to drain) before it returns. ready, if
// not nil, is called with the address and the server once it listens.
func Serve(ctx context.Context, cfg Config, log *slog.Logger, drain time.Duration, ready func(addr string, s *Server)) error {
	st, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer st.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("provider: cannot listen on %s: %w", cfg.Listen, err)
	}
	s := New(st, cfg, log)
	maxConns := cfg.MaxConnections
	if maxConns == 0 {
		maxConns = netcap.DefaultMax()
	}
	capped := netcap.Listen(ln, maxConns)
	srv := capped.Track(newHTTPServer(s.Handler()))
	// What net/http says of a connection (a TLS handshake that failed, a
	// client that spoke HTTP to the TLS port) is the client's doing:
	// debug, in the service's log, not a line on stderr each time.
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	srv.RegisterOnShutdown(s.StopPolls)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go s.Run(runCtx)
	errc := make(chan error, 1)
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cfg.TLS.cert}, MinVersion: tls.VersionTLS12}
		go func() { errc <- srv.ServeTLS(capped, "", "") }()
	} else {
		go func() { errc <- srv.Serve(capped) }()
	}
	log.Info("machine provider serving", "addr", ln.Addr().String(), "scheme", scheme, "database", st.Dialect(), "max_connections", maxConns)
	if ready != nil {
		ready(ln.Addr().String(), s)
	}
	defer s.runDeferred()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("machine provider draining requests", "for", drain)
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// The server's timeouts. A connection that has sent no complete request
// header within readHeaderTimeout, or body within readTimeout, is closed,
// and so is a keep-alive one idle for idleTimeout; an answer must be
// written within writeTimeout. Long polls (?wait=) move their own
// deadlines past their wait (see holdOpen).
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = time.Minute
	idleTimeout       = 2 * time.Minute
)

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, WriteTimeout: writeTimeout, IdleTimeout: idleTimeout}
}

// Defer registers f to run when Serve returns, before it closes the store:
// a service running beside the provider waits there for its own end.
func (s *Server) Defer(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deferred = append(s.deferred, f)
}

func (s *Server) runDeferred() {
	s.mu.Lock()
	fs := s.deferred
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// refuseEarly readies the answer to a request refused before its
// handler (err from authorize, or nil): its body is never read, and the
// connection closes after the answer. Else net/http would drain the body
// (up to 256 KiB) after the answer, which a caller with no token could
// send as slowly as it likes, holding a connection that is never idle
// and so never closed to make room for others.
func refuseEarly(w http.ResponseWriter, err error) {
	if err != nil {
		w.Header().Set("Connection", "close")
		// A deadline passed ends net/http's drain at once; the answer
		// is still written.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
}

// SelfClient returns the HTTP client a service in serve's own process (the
// GCE Backend it runs) calls the API with at its listening address, and
// its URL's scheme: over TLS, it trusts exactly the certificate the API
// serves, whatever names that certificate has (the address is a local one
// it need not name).
func (c Config) SelfClient() (*http.Client, string) {
	if c.TLS == nil {
		return nil, "http"
	}
	want := c.TLS.cert.Certificate[0]
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost, t.MaxConnsPerHost = 64, 64
	t.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is not verified against roots: the one certificate
		// this process serves is pinned instead, below.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
				return errors.New("the API at this address does not serve this process's certificate")
			}
			return nil
		},
	}
	return &http.Client{Transport: t}, "https"
}
