package provider_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// TestDemandLongPollWakesOnAQueuedRequest: GET /v1/demand answers at once
// without a version, and with the version it gave, when a request is
// queued, and again when it leaves the queue; on SQLite and PostgreSQL.
func TestDemandLongPollWakesOnAQueuedRequest(t *testing.T) {
	for _, db := range []string{":memory:", "postgres"} {
		t.Run(db, func(t *testing.T) {
			if db == "postgres" {
				db = testutil.PostgresURL(t)
			}
			w := startOn(t, db)
			ctx := context.Background()
			d, err := w.gce.Demand(ctx, "", 0)
			if err != nil || len(d.Sets) != 0 || d.Version == "" {
				t.Fatalf("demand of an empty queue: %+v, %v", d, err)
			}
			got := poll(t, w.gce, d.Version)
			testutil.WaitFor(t, "the demand poll to be in flight", func() bool { return gauge(t, w.server, "gcefleet_provider_requests_in_flight") > 0 })
			l, err := w.alice.RequestLease(ctx, lease("demand-1"))
			if err != nil || l.State != store.Pending {
				t.Fatalf("request: %+v, %v", l, err)
			}
			d = testutil.Receive(t, 20*time.Second, "the demand poll to answer once a request queued", got)
			if len(d.Sets) != 1 || d.Sets[0].Pending != 1 || d.Sets[0].Dimensions["os"][0] != "linux" || d.Sets[0].Oldest.IsZero() {
				t.Fatalf("demand after one request: %+v", d)
			}
			// The same version again waits; a machine that takes the
			// request answers it.
			got = poll(t, w.gce, d.Version)
			if _, err := w.gce.AddMachine(ctx, machine("vm-demand")); err != nil {
				t.Fatal(err)
			}
			if d = testutil.Receive(t, 20*time.Second, "the demand poll to answer once the request was fulfilled", got); len(d.Sets) != 0 {
				t.Fatalf("demand after fulfilment: %+v", d)
			}
			// Clients do not see it.
			if _, err := w.alice.Demand(ctx, "", 0); !client.IsForbidden(err) {
				t.Errorf("a client reading the demand: %v, want 403", err)
			}
		})
	}
}

// poll long-polls the demand of version in the background.
func poll(t *testing.T, c *client.Client, version string) <-chan api.Demand {
	got := make(chan api.Demand, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d, err := c.Demand(ctx, version, time.Minute)
		if err != nil {
			t.Errorf("demand poll: %v", err)
		}
		got <- d
	}()
	return got
}

// TestDemandWakesAcrossReplicas: a request queued on one PostgreSQL
// replica wakes a demand poll on the other.
func TestDemandWakesAcrossReplicas(t *testing.T) {
	url := testutil.PostgresURL(t)
	a, b := startOn(t, url), startOn(t, url)
	ctx := context.Background()
	testutil.WaitFor(t, "replica a to hear of changes", func() bool { return gauge(t, a.server, "gcefleet_provider_hearing_replicas") == 1 })
	d, err := a.gce.Demand(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := poll(t, a.gce, d.Version)
	testutil.WaitFor(t, "the demand poll to be in flight", func() bool { return gauge(t, a.server, "gcefleet_provider_requests_in_flight") > 0 })
	if _, err := b.alice.RequestLease(ctx, lease("across")); err != nil {
		t.Fatal(err)
	}
	if d := testutil.Receive(t, 20*time.Second, "replica a's demand poll to answer a request queued on b", got); len(d.Sets) != 1 || d.Sets[0].Pending != 1 {
		t.Fatalf("demand on a: %+v", d)
	}
}

// TestUnsatisfiableRequestsRefused: once a backend offers what it can
// make, a request that no offer and no cataloged machine satisfies is a
// 422 naming what nothing offers and the closest offers; others queue,
// and see their place in the queue. Without offers nothing is refused.
func TestUnsatisfiableRequestsRefused(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	windows := store.LeaseRequest{RequestID: "win-0", Dimensions: store.Dimensions{"os": {"windows"}, "zone": {"us-a"}}, Term: store.Term{Duration: time.Hour}}
	first, err := w.alice.RequestLease(ctx, windows)
	if err != nil || first.State != store.Pending {
		t.Fatalf("without offers, a request for anything queues: %+v, %v", first, err)
	}
	offers := []api.Offer{
		{Dimensions: store.Dimensions{"os": {"linux"}, "zone": {"us-a"}, "cpus": {"8"}}, Room: 5},
		{Dimensions: store.Dimensions{"os": {"linux"}, "zone": {"us-b"}, "cpus": {"8"}}, Room: 0},
		{Dimensions: store.Dimensions{"os": {"mac"}, "zone": {"us-c"}}, Room: 1},
	}
	if err := w.gce.PutOffers(ctx, offers, 0); err != nil {
		t.Fatal(err)
	}
	if os, err := w.alice.Offers(ctx); err != nil || len(os) != 3 || os[0].Backend != "gce" {
		t.Fatalf("offers: %+v, %v", os, err)
	}
	for _, c := range []struct {
		name     string
		dims     store.Dimensions
		refused  bool
		contains []string
	}{
		{"a value nothing offers", store.Dimensions{"os": {"windows"}, "zone": {"us-a"}}, true,
			[]string{"os=windows", "closest offers", "cpus=8 os=linux zone=us-a (backend gce; has 1 of the 2 asked)"}},
		{"values offered, but not together", store.Dimensions{"os": {"mac"}, "zone": {"us-a"}}, true,
			[]string{"has all of os=mac zone=us-a", "(backend gce; has 1 of the 2 asked)"}},
		{"a key nothing offers", store.Dimensions{"os": {"linux"}, "gpu": {"a100"}}, true, []string{"gpu=a100"}},
		// Offers alike but for their zone read as one, so that others fit.
		{"zones folded", store.Dimensions{"os": {"windows"}, "cpus": {"8"}}, true,
			[]string{"closest offers: cpus=8 os=linux (in us-a, us-b; backend gce; has 1 of the 2 asked); os=mac (in us-c; backend gce; has 0 of the 2 asked)"}},
		{"what an offer makes, though it has no room", store.Dimensions{"os": {"linux"}, "zone": {"us-b"}}, false, nil},
		{"fewer keys than an offer", store.Dimensions{"os": {"linux"}}, false, nil},
	} {
		l, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: c.name, Dimensions: c.dims, Term: store.Term{Duration: time.Hour}})
		var ae *client.Error
		switch {
		case !c.refused && err != nil:
			t.Errorf("%s: %v, want it queued", c.name, err)
		case !c.refused:
			if l.State != store.Pending {
				t.Errorf("%s: %+v, want it pending", c.name, l)
			}
		case !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != "unsatisfiable" || !errors.Is(err, api.ErrUnsatisfiable):
			t.Errorf("%s: %+v, %v; want 422 unsatisfiable", c.name, l, err)
		default:
			for _, want := range c.contains {
				if !strings.Contains(ae.Message, want) {
					t.Errorf("%s: message %q lacks %q", c.name, ae.Message, want)
				}
			}
		}
	}
	// An operator sees clients asking for what nothing offers.
	if m := testutil.Metrics(t, w.server.Registry()); !strings.Contains(m, `gcefleet_provider_lease_outcomes_total{outcome="unsatisfiable"} 4`) {
		t.Errorf("the four refusals are not counted in the lease outcomes:\n%s", m)
	}
	// A repeat of the request made before the offers answers as it did.
	if l, err := w.alice.RequestLease(ctx, windows); err != nil || l.ID != first.ID {
		t.Errorf("the windows request repeated once offers exist: %+v, %v; want lease %s again", l, err, first.ID)
	}
	// A machine added by hand satisfies what nobody offers.
	if _, err := w.gce.AddMachine(ctx, store.Machine{Hostname: "vm-gpu", Dimensions: store.Dimensions{"gpu": {"t4"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: "gpu", Dimensions: store.Dimensions{"gpu": {"t4"}}, Term: store.Term{Duration: time.Hour}}); err != nil {
		t.Errorf("a request a cataloged machine satisfies: %v", err)
	}
	// Places in the queue, among the requests for the same dimensions.
	var ids []string
	for i := range 3 {
		l, err := w.bob.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("q-", i), Dimensions: store.Dimensions{"os": {"linux"}, "zone": {"us-a"}}, Term: store.Term{Duration: time.Hour}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
	}
	if l, err := w.bob.Lease(ctx, ids[1], 0); err != nil || l.QueuePosition != 2 || l.QueueLength != 3 {
		t.Errorf("the second of three in the queue: %+v, %v; want position 2 of 3", l, err)
	}
}

// TestOffersExpire: a backend's offers stand for their ttl; once they
// lapsed, with no offers left, nothing is refused. Bad publications are
// field errors, and only backends publish.
func TestOffersExpire(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	if err := w.gce.PutOffers(ctx, []api.Offer{{Dimensions: store.Dimensions{"os": {"linux"}}, Room: 1}}, time.Second); err != nil {
		t.Fatal(err)
	}
	win := func(i int) error {
		_, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("win-", i), Dimensions: store.Dimensions{"os": {"windows"}}, Term: store.Term{Duration: time.Hour}})
		return err
	}
	if err := win(0); !errors.Is(err, api.ErrUnsatisfiable) {
		t.Fatalf("while linux is offered, windows: %v, want unsatisfiable", err)
	}
	i := 0
	testutil.WaitWithin(t, 10*time.Second, "the offers to expire and windows to be accepted", func() bool {
		i++
		return win(i) == nil
	})
	if os, err := w.gce.Offers(ctx); err != nil || len(os) != 0 {
		t.Errorf("offers after their ttl: %+v, %v", os, err)
	}
	for _, c := range []struct {
		body, field string
	}{
		{`{"offers": [{"dimensions": {"os": ["linux"]}, "room": -1}]}`, "offers[0].room"},
		{`{"offers": [{"dimensions": {}}]}`, "offers[0].dimensions"},
		{`{"offers": [], "ttl": "0s"}`, "ttl"},
		{`{"offers": [], "ttl": "2h"}`, "ttl"},
	} {
		req, _ := http.NewRequest(http.MethodPut, w.url+"/v1/offers", strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer gce-secret-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT /v1/offers %s: HTTP %d, want 400 on %s", c.body, resp.StatusCode, c.field)
		}
	}
	for _, q := range []string{"?wait=10m", "?version=" + strings.Repeat("v", 65), "?wait=1s&what=1"} {
		req, _ := http.NewRequest(http.MethodGet, w.url+"/v1/demand"+q, nil)
		req.Header.Set("Authorization", "Bearer gce-secret-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /v1/demand%s: HTTP %d, want 400", q, resp.StatusCode)
		}
	}
	if err := w.alice.PutOffers(ctx, nil, 0); !client.IsForbidden(err) {
		t.Errorf("a client publishing offers: %v, want 403", err)
	}
}

// TestQueueByDimensionsShown: the metrics name the 20 longest queues by
// set of dimensions and sum the rest as "other"; the status page lists
// every set with its queue.
func TestQueueByDimensionsShown(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	for i := range 25 {
		for j := range 1 + i%3 {
			if _, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("set-", i, "-", j),
				Dimensions: store.Dimensions{"pool": {fmt.Sprint("p", i)}}, Term: store.Term{Duration: time.Hour}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := testutil.Metrics(t, w.server.Registry())
	if n := strings.Count(m, "gcefleet_provider_queue_length{"); n != 21 {
		t.Errorf("%d queue_length series, want 20 sets and other:\n%s", n, m)
	}
	for _, want := range []string{`gcefleet_provider_queue_length{dimensions="pool=p2"} 3`, `gcefleet_provider_queue_length{dimensions="other"} `,
		`gcefleet_provider_queue_oldest_wait_seconds{dimensions="other"} `} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, w.url+"/", nil)
	req.Header.Set("Authorization", "Bearer admin-secret-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page strings.Builder
	if _, err := io.Copy(&page, resp.Body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), `<table id="queue">`) || !strings.Contains(page.String(), "<td>pool=p24</td><td>1</td>") {
		t.Errorf("the status page lacks the queue by dimensions:\n%s", page.String())
	}
}

// TestDemandPollAnswersOnShutdown: a shutting-down server answers a
// waiting demand poll at once with the demand as it is.
func TestDemandPollAnswersOnShutdown(t *testing.T) {
	w := start(t)
	d, err := w.gce.Demand(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := poll(t, w.gce, d.Version)
	testutil.WaitFor(t, "the demand poll to be in flight", func() bool { return gauge(t, w.server, "gcefleet_provider_requests_in_flight") > 0 })
	w.server.StopPolls()
	if d2 := testutil.Receive(t, 5*time.Second, "the demand poll to answer at shutdown", got); d2.Version != d.Version {
		t.Errorf("demand at shutdown: %+v, want the same empty demand", d2)
	}
}
