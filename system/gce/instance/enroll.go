package instance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/identity"
)

// Enroll makes this machine's key, which never leaves it, and serves its
// proof of identity on bc.Listen (TLS, with a certificate of its own for
// that key) until the driver hands it a certificate that the run's CA
// issued for that key. It returns the machine's configuration and the
// listener to serve the driver on from then, or an error when ctx ends
// first.
func Enroll(ctx context.Context, bc BootConfig, logger *slog.Logger) (bigmachine.WorkerConfig, net.Listener, error) {
	var cfg bigmachine.WorkerConfig
	name, err := metadata.InstanceNameWithContext(ctx)
	if err != nil {
		return cfg, nil, fmt.Errorf("this instance's name from the metadata server: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cfg, nil, err
	}
	proof, err := identity.NewProof(ctx, key, name, bc.Nonce)
	if err != nil {
		return cfg, nil, err
	}
	self, err := identity.SelfSigned(key, name)
	if err != nil {
		return cfg, nil, err
	}
	ln, err := Listen(bc.Listen)
	if err != nil {
		return cfg, nil, fmt.Errorf("listening on %s: %w", bc.Listen, err)
	}
	h := newHandoff(ln)
	enrolling := h.view(false)
	got := make(chan []byte, 1)
	srv := &http.Server{
		Handler: identity.EnrollHandler(proof, func(certPEM []byte) error {
			if _, err := identity.CheckCertificate(certPEM, bc.CA, key, name); err != nil {
				logger.Warn("refused a certificate", "err", err)
				return err
			}
			select {
			case got <- certPEM:
				// No connection made from now on reaches this server:
				// the driver's next one must meet the mutual TLS one.
				enrolling.Close()
			default:
				return fmt.Errorf("already enrolled")
			}
			return nil
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{self}, MinVersion: tls.VersionTLS13},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(debugWriter{logger}, "", 0),
	}
	go srv.ServeTLS(enrolling, "", "")
	logger.Info("gceboot waiting to be enrolled", "machine", name, "addr", ln.Addr().String())
	var certPEM []byte
	select {
	case certPEM = <-got:
	case <-ctx.Done():
		srv.Close()
		ln.Close()
		return cfg, nil, fmt.Errorf("no driver enrolled this machine: %w", ctx.Err())
	}
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx) // lets the certificate's answer go out
	}()
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return cfg, nil, err
	}
	cfg = bigmachine.WorkerConfig{
		Name: name, Listen: bc.Listen, Cert: certPEM, CA: bc.CA, Timeout: bc.Timeout,
		Key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	return cfg, h.view(true), nil
}

type debugWriter struct{ log *slog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug("enrollment server", "msg", string(p))
	return len(p), nil
}

// handoff passes the connections of one listener to one server at a time:
// the enrollment server, then the driver's, on the same socket, so that
// the port never stops listening.
type handoff struct {
	ln    net.Listener
	conns chan net.Conn
	done  chan struct{} // closed when ln fails
	err   error
}

func newHandoff(ln net.Listener) *handoff {
	h := &handoff{ln: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				h.err = err
				close(h.done)
				return
			}
			h.conns <- c
		}
	}()
	return h
}

// view returns a listener that takes h's connections until it is closed.
// Closing the final view closes h's listener.
func (h *handoff) view(final bool) net.Listener {
	return &view{h: h, final: final, closed: make(chan struct{})}
}

type view struct {
	h      *handoff
	final  bool
	once   sync.Once
	closed chan struct{}
}

func (v *view) Accept() (net.Conn, error) {
	select {
	case <-v.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-v.h.conns:
		return c, nil
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.h.done:
		return nil, v.h.err
	}
}

func (v *view) Close() error {
	v.once.Do(func() {
		close(v.closed)
		if v.final {
			v.h.ln.Close()
		}
	})
	return nil
}

func (v *view) Addr() net.Addr { return v.h.ln.Addr() }
