package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// TestLeaseWaitRefusedOrQueued: once a backend offers what it can make,
// lease --wait for what nothing offers exits 1 at once with the
// provider's message; a satisfiable request says its place in the queue
// while it waits.
func TestLeaseWaitRefusedOrQueued(t *testing.T) {
	url := serveInProcess(t, writeConfig(t, filepath.Join(t.TempDir(), "p.db")))
	ctx := context.Background()
	gce := &client.Client{BaseURL: url, Token: gceToken}
	if err := gce.PutOffers(ctx, []api.Offer{{Dimensions: store.Dimensions{"os": {"linux"}, "zone": {"us-central1-a"}}, Room: 3}}, 0); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": aliceToken}
	var code int
	var out, stderr string
	testutil.Within(t, 10*time.Second, "lease --wait for windows to be refused", func() {
		code, out, stderr = runCLI(t, env, "lease", "--dim", "os=windows", "--duration", "1h", "--wait")
	})
	if code != 1 || !strings.Contains(stderr, "os=windows") || !strings.Contains(stderr, "closest offers: os=linux (in us-central1-a; backend gce") || out != "" {
		t.Errorf("lease --wait for windows: exit %d\n%s%s", code, out, stderr)
	}

	// Two wait for linux: the second is second in its queue.
	if _, err := (&client.Client{BaseURL: url, Token: aliceToken}).RequestLease(ctx, store.LeaseRequest{RequestID: "first",
		Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	var errb syncWriter
	done := make(chan int, 1)
	go func() {
		e := &environ{stdout: &bytes.Buffer{}, stderr: &errb, getenv: func(k string) string { return env[k] }, progress: 100 * time.Millisecond}
		done <- run(ctx, e, []string{"lease", "--dim", "os=linux", "--duration", "1h", "--wait", "--deadline", "3s"})
	}()
	testutil.WaitWithin(t, 10*time.Second, "lease --wait to say its place", func() bool {
		return strings.Contains(errb.String(), "number 2 of 2 in the queue for these dimensions") && strings.Contains(errb.String(), "so far")
	})
	if code := testutil.Receive(t, 20*time.Second, "lease --wait to end at its deadline", done); code != 1 {
		t.Errorf("lease --wait past its deadline exited %d\n%s", code, errb.String())
	}
}

// syncWriter is a buffer written by one goroutine and read by another.
type syncWriter = testutil.SyncBuffer

// TestLeaseWaitInterruptedWithdraws: Ctrl-C on lease --wait withdraws the
// request, which would otherwise take a machine that no one uses until
// its term ends.
func TestLeaseWaitInterruptedWithdraws(t *testing.T) {
	url := serveInProcess(t, writeConfig(t, filepath.Join(t.TempDir(), "p.db")))
	env := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": aliceToken}
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	var errb syncWriter
	done := make(chan int, 1)
	go func() {
		e := &environ{stdout: &bytes.Buffer{}, stderr: &errb, getenv: func(k string) string { return env[k] }}
		done <- run(ctx, e, []string{"lease", "--dim", "os=linux", "--duration", "1h", "--wait"})
	}()
	testutil.WaitWithin(t, 10*time.Second, "lease --wait to queue its request", func() bool {
		return strings.Contains(errb.String(), "waiting for a machine")
	})
	interrupt()
	if code := testutil.Receive(t, 20*time.Second, "lease --wait to end when interrupted", done); code != 1 || !strings.Contains(errb.String(), "interrupted; its request was withdrawn") {
		t.Errorf("interrupted lease --wait: exit %d\n%s", code, errb.String())
	}
	ls, err := (&client.Client{BaseURL: url, Token: aliceToken}).Leases(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].State != store.Released {
		t.Errorf("after the interrupt, alice's leases are %+v; want the one request, RELEASED", ls)
	}
}
