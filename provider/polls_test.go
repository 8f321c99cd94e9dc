package provider_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/store"
)

// TestLongPollsWakeOnlyForTheirOwn: a long poll on a pending lease and a
// backend's long poll on its event feed are not woken by changes to other
// leases and other backends' events (no read of the store for them), and
// are answered when their own change comes, the lease poll with the
// change's own value on SQLite.
func TestLongPollsWakeOnlyForTheirOwn(t *testing.T) {
	for _, db := range []string{":memory:", "postgres"} {
		t.Run(strings.Trim(db, ":"), func(t *testing.T) {
			if db == "postgres" {
				db = testutil.PostgresURL(t)
			}
			w := startOn(t, db)
			ctx := context.Background()
			testutil.WaitFor(t, "the server to hear of changes", func() bool { return gauge(t, w.server, "gcefleet_provider_hearing_replicas") == 1 })
			mine, err := w.alice.RequestLease(ctx, lease("mine"))
			if err != nil || mine.State != store.Pending {
				t.Fatalf("lease request: %+v, %v; want it pending (no machines)", mine, err)
			}
			evs, err := w.gce.Events(ctx, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			var after int64
			if len(evs) > 0 {
				after = evs[len(evs)-1].ID
			}
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			leaseDone := make(chan store.Lease, 1)
			go func() {
				l, err := w.alice.Lease(ctx, mine.ID, time.Minute)
				if err != nil {
					t.Errorf("long poll on %s: %v", mine.ID, err)
				}
				leaseDone <- l
			}()
			eventsDone := make(chan []store.Event, 1)
			go func() {
				evs, err := w.gce.Events(ctx, after, time.Minute)
				if err != nil {
					t.Errorf("long poll on gce's events: %v", err)
				}
				eventsDone <- evs
			}()
			testutil.WaitFor(t, "both long polls to wait", func() bool { return gauge(t, w.server, "gcefleet_provider_long_polls_waiting") == 2 })

			// Others' changes: bob's leases of another backend's machines,
			// fulfilled, released, queued and withdrawn.
			win := store.Dimensions{"os": {"windows"}}
			for i := range 10 {
				if _, err := w.other.AddMachine(ctx, store.Machine{Hostname: fmt.Sprint("win-", i), Dimensions: win}); err != nil {
					t.Fatal(err)
				}
				l, err := w.bob.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("win-", i), Dimensions: win, Term: store.Term{Duration: time.Hour}})
				if err != nil || l.State != store.Fulfilled {
					t.Fatalf("bob's lease: %+v, %v", l, err)
				}
				if _, err := w.bob.Extend(ctx, l.ID, store.Term{Duration: 2 * time.Hour}); err != nil {
					t.Fatal(err)
				}
				if _, err := w.bob.Release(ctx, l.ID); err != nil {
					t.Fatal(err)
				}
				q, err := w.bob.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("mac-", i), Dimensions: store.Dimensions{"os": {"mac"}}, Term: store.Term{Duration: time.Hour}})
				if err != nil || q.State != store.Pending {
					t.Fatalf("bob's queued request: %+v, %v", q, err)
				}
				if _, err := w.bob.Release(ctx, q.ID); err != nil {
					t.Fatal(err)
				}
			}
			// On the old code every change above woke both polls, and each
			// read the store again.
			if n := wakeups(t, w); n != 0 {
				t.Fatalf("others' changes woke the long polls %v times, want 0", n)
			}
			if _, err := w.gce.AddMachine(ctx, machine("vm-mine")); err != nil {
				t.Fatal(err)
			}
			l := <-leaseDone
			if l.State != store.Fulfilled || l.Hostname != "vm-mine" {
				t.Errorf("long poll answered %+v, want %s fulfilled with vm-mine", l, mine.ID)
			}
			evs = <-eventsDone
			if len(evs) != 1 || evs[0].Kind != "leased" || evs[0].Hostname != "vm-mine" {
				t.Errorf("gce's event poll answered %+v, want the one event of vm-mine's lease", evs)
			}
			if n := wakeups(t, w); n != 2 {
				t.Errorf("long polls woken %v times, want 2 (each once, by its own change)", n)
			}
			if !strings.HasPrefix(db, "postgres") {
				// SQLite: this server made the change, and knew its value.
				if n := wakeupsBy(t, w, "change"); n != 1 {
					t.Errorf("the lease poll answered from the change %v times, want 1 (no read)", n)
				}
			}
		})
	}
}

func wakeups(t *testing.T, w *world) float64 { return wakeupsBy(t, w, "") }

// wakeupsBy counts long polls' wake-ups answered as answer ("" all).
func wakeupsBy(t *testing.T, w *world, answer string) float64 {
	t.Helper()
	mfs, err := w.server.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "gcefleet_provider_long_poll_wakeups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if answer == "" || m.GetLabel()[0].GetValue() == answer {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestQueueFullIs429: a client with max_pending_per_client requests
// waiting is refused the next with 429 and a message that names the cap
// and the setting; another client is not.
func TestQueueFullIs429(t *testing.T) {
	if cfg, err := provider.ParseConfig("test.yaml", []byte(config)); err != nil || cfg.MaxPendingPerClient != 1000 {
		t.Errorf("max_pending_per_client by default: %d, %v; want 1000", cfg.MaxPendingPerClient, err)
	}
	cfg, err := provider.ParseConfig("test.yaml", []byte(config+"max_pending_per_client: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxPendingPerClient != 2 {
		t.Fatalf("max_pending_per_client parsed as %d", cfg.MaxPendingPerClient)
	}
	w := startWith(t, cfg)
	ctx := context.Background()
	for i := range 2 {
		if l, err := w.alice.RequestLease(ctx, lease(fmt.Sprint(i))); err != nil || l.State != store.Pending {
			t.Fatalf("request %d: %+v, %v", i, l, err)
		}
	}
	code, body := postAs(t, w, "alice-secret-0123456789", "/v1/leases", `{"request_id": "2", "dimensions": {"os": ["linux"]}, "term": {"duration": 3600000000000}}`)
	if code != http.StatusTooManyRequests || !strings.Contains(body, "queue_full") || !strings.Contains(body, "2 pending") || !strings.Contains(body, "max_pending_per_client") {
		t.Errorf("third request: %d %s; want 429 naming the cap of 2 and max_pending_per_client", code, body)
	}
	if l, err := w.bob.RequestLease(ctx, lease("0")); err != nil || l.State != store.Pending {
		t.Errorf("bob's request: %+v, %v; want it queued", l, err)
	}
}

func postAs(t *testing.T, w *world, token, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", w.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
