package provider

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSlowBodiesDoNotLockOutClients: at max_connections, connections
// that each sent the header of an unauthenticated POST and then trickle
// its body do not keep an authenticated client from being answered:
// they are answered at once, without their body being read, and closed.
func TestSlowBodiesDoNotLockOutClients(t *testing.T) {
	cfg, err := ParseConfig("test.yaml", []byte("listen: 127.0.0.1:0\ndatabase: \":memory:\"\nmax_connections: 50\ntokens:\n  - {name: alice, role: client, token: alice-secret-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, cfg, slog.New(slog.DiscardHandler), time.Second, func(addr string, _ *Server) { addrc <- addr })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the provider did not start listening within 10s")
	}

	// 300 connections, six times the cap, each sending a header and the
	// start of a body of 100,000 bytes, then a byte every 5s until the
	// test ends.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for range 300 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("flooding %s: %v", addr, err)
		}
		wg.Go(func() {
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(time.Minute))
			if _, err := io.WriteString(c, "POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"req"); err != nil {
				return
			}
			tick := time.NewTicker(5 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := io.WriteString(c, "x"); err != nil {
						return
					}
				}
			}
		})
	}

	// Such a request is answered at once, body unread, and its
	// connection closed.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"req"); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || !strings.HasPrefix(string(b), "HTTP/1.1 401 ") || !strings.Contains(string(b), "Connection: close") {
		t.Fatalf("an unauthenticated POST that sends part of its body: %q, %v; want a 401 at once and the connection closed", b, err)
	}

	req, err := http.NewRequest("GET", "http://"+addr+"/v1/leases", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer alice-secret-0123456789")
	// A client retries a connection the provider refused at its cap
	// (some of the flood's may still be closing); it must be answered
	// within 2s all the same.
	hc := &http.Client{Timeout: 2 * time.Second}
	start := time.Now()
	for {
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("an authenticated request after the flood: %d %s", resp.StatusCode, b)
			}
			return
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("an authenticated request after 300 slow bodies at a cap of 50: not answered within 2s: %v", err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}
