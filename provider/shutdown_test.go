package provider

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestShutdownAnswersLongPolls: when serve stops, a client waiting on its
// pending lease is answered at once with the lease as it stands, and the
// drain does not wait out the poll.
func TestShutdownAnswersLongPolls(t *testing.T) {
	cfg, err := ParseConfig("test.yaml", []byte("listen: 127.0.0.1:0\ndatabase: \":memory:\"\ntokens:\n  - {name: alice, role: client, token: alice-secret-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, cfg, slog.New(slog.DiscardHandler), 30*time.Second, func(addr string, _ *Server) { addrc <- addr })
	}()
	var base string
	select {
	case addr := <-addrc:
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the provider did not start listening within 10s")
	}
	do := func(method, path, body string) (int, string) {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer alice-secret-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	code, body := do("POST", "/v1/leases", `{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":"10m"}}`)
	var l struct{ ID, State string }
	if err := json.Unmarshal([]byte(body), &l); code != 200 || err != nil || l.State != "PENDING" {
		t.Fatalf("lease request: %d %s (%v)", code, body, err)
	}
	type answer struct {
		code int
		body string
	}
	polled := make(chan answer, 1)
	go func() {
		c, b := do("GET", "/v1/leases/"+l.ID+"?wait=5m", "")
		polled <- answer{c, b}
	}()
	// The poll is at the server when the gauge of waiting polls says so.
	testutil.WaitWithin(t, 10*time.Second, "the long poll to wait at the server", func() bool {
		req, err := http.NewRequest("GET", base+"/metrics", nil)
		if err != nil {
			return false
		}
		req.Header.Set("Authorization", "Bearer alice-secret-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return err == nil && strings.Contains(string(b), "\ngcefleet_provider_long_polls_waiting 1\n")
	})
	stopped := time.Now()
	cancel()
	select {
	case a := <-polled:
		if a.code != 200 || !strings.Contains(a.body, `"state":"PENDING"`) {
			t.Errorf("the waiting poll at shutdown: %d %s, want 200 with the lease still PENDING", a.code, a.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting poll was not answered within 5s of the shutdown")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not stop within 5s, though its one request was answered")
	}
	if d := time.Since(stopped); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
}
