package bigmachine

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine/internal/pki"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
)

// Bootstrap serves a machine's bootstrap: it answers the driver's Info,
// takes the driver's binary by Upload and execs it, and exits through exit
// if no keepalive comes within cfg.Timeout. It is the whole of gceboot and
// returns only if it cannot serve. NewBoot makes a bootstrap with
// options, such as one that supervises the program instead.
func Bootstrap(cfg WorkerConfig, ln net.Listener, logger *slog.Logger, exit func(code int)) error {
	sup := &supervisor{cfg: cfg, log: logger, exit: exit}
	return sup.serve(ln)
}

// runWorker serves the driver's program on a machine and never returns.
func runWorker(sys System, b *B, cfg WorkerConfig) {
	// A terminal's Ctrl-C reaches every process of its group, local
	// machines included; the driver, which has it too, stops them itself,
	// and a machine whose driver is gone exits when its keepalive lapses.
	signal.Ignore(os.Interrupt)
	if cfg.Uploaded != "" {
		// The running program keeps its own mapping; let go of the rest.
		removeProgram(cfg.Uploaded)
	}
	ln, err := sys.Listen(cfg.Listen)
	if err != nil {
		b.log.Error("worker cannot listen", "machine", cfg.Name, "addr", cfg.Listen, "err", err)
		sys.Exit(1)
		return
	}
	sup := &supervisor{cfg: cfg, payload: true, log: b.log, worker: b, exit: sys.Exit, output: newOutputLog()}
	if err := captureOutput(sup.output); err != nil {
		b.log.Warn("worker output will not stream to the driver", "err", err)
	}
	err = sup.serve(ln)
	b.log.Error("worker stopped serving", "machine", cfg.Name, "err", err)
	sys.Exit(1)
}

// init makes the supervisor's RPC server.
func (s *supervisor) init() error {
	s.started = time.Now()
	s.server = rpc.NewServer()
	s.server.Authorize = authorize
	return s.server.Register("Supervisor", s)
}

// serve answers calls on ln until the supervisor stops it.
func (s *supervisor) serve(ln net.Listener) error {
	creds := pki.Credentials{CertPEM: s.cfg.Cert, KeyPEM: s.cfg.Key, CAPEM: s.cfg.CA}
	tlsCfg, err := creds.ServerConfig()
	if err != nil {
		ln.Close()
		return fmt.Errorf("machine %s credentials: %w", s.cfg.Name, err)
	}
	if s.server == nil {
		if err := s.init(); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           s.server,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 30 * time.Second,
		HTTP2:             rpc.HTTP2Config(),
		// A peer without the run's certificate fails the handshake; that
		// is expected noise, not news.
		ErrorLog: log.New(handshakeFilter{s.log}, "", 0),
	}
	done := make(chan struct{})
	s.mu.Lock()
	ended := s.ended
	s.halt = func() { srv.Close() }
	s.mu.Unlock()
	if ended {
		ln.Close()
		select {} // End came first: nothing is served
	}
	s.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}
	s.extend(s.timeout())
	err = srv.ServeTLS(ln, "", "")
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		select {} // exec or exit follows
	}
	return err
}

type handshakeFilter struct{ log *slog.Logger }

func (h handshakeFilter) Write(p []byte) (int, error) {
	h.log.Debug("http server", "msg", string(p))
	return len(p), nil
}
