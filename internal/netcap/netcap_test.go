package netcap_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/netcap"
)

// serve serves h on a Listener capped at max and returns its address.
func serve(t *testing.T, max int, h http.Handler) (string, *netcap.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	capped := netcap.Listen(ln, max)
	srv := capped.Track(&http.Server{Handler: h})
	go srv.Serve(capped)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), capped
}

// get sends one request on c and reads its answer.
func get(t *testing.T, c net.Conn) error {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAtTheCapTheLongestIdleGoes: with the cap reached by idle
// connections, a new one is served and the one idle longest is closed.
func TestAtTheCapTheLongestIdleGoes(t *testing.T) {
	addr, l := serve(t, 3, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	var cs []net.Conn
	for range 3 {
		c := dial(t, addr)
		if err := get(t, c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		// The client reads the answer before the server marks the
		// connection idle: wait for that, so that idle order is dial order.
		for deadline := time.Now().Add(10 * time.Second); l.Pool().Idle() != len(cs); runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections idle, want %d", l.Pool().Idle(), len(cs))
			}
		}
	}
	if err := get(t, dial(t, addr)); err != nil {
		t.Fatalf("a fourth connection at a cap of 3: %v", err)
	}
	if err := get(t, cs[0]); err == nil {
		t.Error("the connection idle longest still serves")
	}
	if err := get(t, cs[2]); err != nil {
		t.Errorf("a connection idle less long: %v", err)
	}
	if n, e := l.Pool().Open(), l.Pool().Evicted(); n > 3 || e < 1 {
		t.Errorf("%d open, %d evicted", n, e)
	}
}

// TestAtTheCapBusyConnectionsStay: when every connection is in a request,
// a new one is refused and none of theirs is cut.
func TestAtTheCapBusyConnectionsStay(t *testing.T) {
	release := make(chan struct{})
	inside := make(chan struct{}, 2)
	addr, _ := serve(t, 2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside <- struct{}{}
		<-release
	}))
	errs := make(chan error, 2)
	for range 2 {
		c := dial(t, addr)
		go func() { errs <- get(t, c) }()
	}
	for range 2 {
		<-inside
	}
	if err := get(t, dial(t, addr)); err == nil {
		t.Error("a third connection was served while two requests held the cap of 2")
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a busy connection: %v", err)
		}
	}
}

func TestDefaultMaxLeavesHeadroom(t *testing.T) {
	if m := netcap.DefaultMax(); m < 16 {
		t.Errorf("DefaultMax %d", m)
	}
	if h := netcap.Headroom(256); h != 64 {
		t.Errorf("Headroom(256) = %d", h)
	}
	if h := netcap.Headroom(1 << 20); h != 1<<17 {
		t.Errorf("Headroom(1<<20) = %d", h)
	}
}
