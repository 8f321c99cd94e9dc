package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

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
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go s.Run(runCtx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("machine provider serving", "addr", ln.Addr().String(), "database", st.Dialect())
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
