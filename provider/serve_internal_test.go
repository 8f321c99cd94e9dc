package provider

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// TestLongPollOutlastsTheServerTimeouts: a long poll waits past the
// server's read and write timeouts and is still answered in full, while
// an ordinary request keeps them.
func TestLongPollOutlastsTheServerTimeouts(t *testing.T) {
	cfg, err := ParseConfig("test.yaml", []byte("tokens:\n  - {name: alice, role: client, token: alice-secret-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(st, cfg, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(s.Handler())
	srv.ReadTimeout, srv.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	go srv.Serve(ln)
	defer srv.Close()
	l, _, err := st.RequestLease(context.Background(), "alice", store.LeaseRequest{RequestID: "r", Dimensions: store.Dimensions{"os": {"none"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("GET", "http://"+ln.Addr().String()+"/v1/leases/"+l.ID+"?wait=1s", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer alice-secret-0123456789")
	start := time.Now()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("a long poll of 1s on a server with timeouts of 300ms: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if took := time.Since(start); err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), `"state":"PENDING"`) || took < time.Second {
		t.Errorf("after %v: %d %s %v", took, resp.StatusCode, b, err)
	}
}
