package bigmachine

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine/internal/pki"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
)

// testSystem is enough of a System to run a bootstrap in the test process.
type testSystem struct{}

func (testSystem) Name() string { return "test" }
func (testSystem) Start(context.Context, StartRequest) ([]Spec, error) {
	return nil, errors.New("not for starting")
}
func (testSystem) Keepalive() Keepalive {
	return Keepalive{Period: time.Second, Timeout: time.Minute}
}
func (testSystem) KeepaliveFailed(context.Context, *Machine) (bool, error) { return false, nil }
func (testSystem) Tail(context.Context, *Machine, io.Writer) error         { return nil }
func (testSystem) HTTPClient(cfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}
func (testSystem) Listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
func (testSystem) Exit(int)                                 {}
func (testSystem) Shutdown(context.Context) error           { return nil }

// TestOnlyTheDriverGetsIn serves a bootstrap and a worker with a driver's
// credentials and tries them with other peers: one without a certificate,
// one with a certificate of another CA, and a machine of the same run. None
// may upload a binary; only a machine of the run may call a service; the
// driver may do both.
func TestOnlyTheDriverGetsIn(t *testing.T) {
	b := Start(testSystem{})
	other, err := pki.NewCA("another run", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, _ := other.Issue(pki.DriverName)
	peerCert, peerKey, _ := b.ca.Issue("m-peer")

	serve := func(name string, payload bool) string {
		cfg, err := b.workerConfig(name, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sup := &supervisor{cfg: cfg, payload: payload, log: slog.New(slog.DiscardHandler), worker: b, exit: func(int) {}}
		if err := sup.init(); err != nil {
			t.Fatal(err)
		}
		if payload {
			// A registered service to try to call.
			sup.server.Register("Echo", echo{})
		}
		go sup.serve(ln)
		t.Cleanup(func() { ln.Close() })
		return "https://" + ln.Addr().String()
	}
	boot := serve("m-boot", false)
	work := serve("m-work", true)

	client := func(serverName string, certPEM, keyPEM []byte) *rpc.Client {
		var certs []tls.Certificate
		if certPEM != nil {
			c, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			certs = []tls.Certificate{c}
		}
		roots := b.driver // trusts the run's CA, as any peer would need to
		cfg, _ := roots.ClientConfig(serverName)
		cfg.Certificates = certs
		return &rpc.Client{HTTP: testSystem{}.HTTPClient(cfg)}
	}
	ctx := context.Background()
	upload := func(c *rpc.Client) error {
		var n int64
		return c.Call(ctx, boot, "Supervisor.Upload", io.Reader(strings.NewReader("#!/bin/sh\necho pwned\n")), &n)
	}
	call := func(c *rpc.Client) error {
		var got string
		return c.Call(ctx, work, "Echo.Echo", "hi", &got)
	}

	for _, tc := range []struct {
		who          string
		cert, key    []byte
		uploadKind   rpc.Kind
		callSucceeds bool
	}{
		{"no certificate", nil, nil, rpc.Network, false},
		{"another run's CA", otherCert, otherKey, rpc.Network, false},
		{"a machine of the run", peerCert, peerKey, rpc.Invalid, true},
	} {
		if err := upload(client("m-boot", tc.cert, tc.key)); !errors.Is(err, tc.uploadKind) {
			t.Errorf("%s: upload: %v, want a %v", tc.who, err, tc.uploadKind)
		}
		err := call(client("m-work", tc.cert, tc.key))
		if (err == nil) != tc.callSucceeds {
			t.Errorf("%s: call: %v", tc.who, err)
		}
	}
	if err := upload(client("m-boot", b.driver.CertPEM, b.driver.KeyPEM)); err != nil {
		t.Errorf("the driver's upload: %v", err)
	}
	if err := call(client("m-work", b.driver.CertPEM, b.driver.KeyPEM)); err != nil {
		t.Errorf("the driver's call: %v", err)
	}
	// The driver verifies machines too: a server with another run's
	// certificate is refused.
	if err := call(client("m-other", b.driver.CertPEM, b.driver.KeyPEM)); !errors.Is(err, rpc.Network) {
		t.Errorf("calling a machine under the wrong name: %v", err)
	}
}

type echo struct{}

func (echo) Echo(ctx context.Context, s string, r *string) error { *r = s; return nil }
