package backend_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestLeavingAWindowShrinksOnlyTheIdle runs a backend on a clock the test
// moves, in a window that keeps four: the window shows on
// the status page and in the metrics. When the clock passes the
// window's end, idle_timeout deletes the idle machines beyond what the
// group needs (the leased one, a tenth more, and min_idle): the leased
// machine stays, and the deletions are counted.
func TestLeavingAWindowShrinksOnlyTheIdle(t *testing.T) {
	// The backend's clock: real until the test moves it on. The
	// provider's stays real (its leases and leadership run on it), so a
	// machine has been idle since its real time of cataloging.
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	// A window from an hour ago to an hour on, UTC.
	start := time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)
	end := start.Add(2 * time.Hour)
	day := strings.ToLower(start.Weekday().String()[:3])
	hours := start.Format("15:04") + "-" + end.Format("15:04")
	win := day + " " + hours + " UTC"
	f := newFleet(t, ":memory:")
	if err := os.WriteFile(f.path, []byte(poolTemplate+`managers:
  - template_base_name: pool
    zone: us-central1-a
    minimum_size: 1
    maximum_size: 6
    min_idle: 1
    idle_timeout: 1h
    schedules:
      - {days: [`+day+`], hours: "`+hours+`", time_zone: UTC, minimum_size: 4}
settings:
  interval: 1s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := backend.LoadConfig(f.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	b := backend.Run(ctx, cfg, f.compute, f.api, backend.Options{ConfigPath: f.path, Store: f.st, Replica: "r1", Registry: reg, Now: now},
		slog.New(slog.NewTextHandler(f.logs, nil)))
	defer stopped(t, b)
	defer cancel()

	testutil.WaitWithin(t, 20*time.Second, "the window's four machines", func() bool { return len(machines(t, f.api)) == 4 })
	rev := machines(t, f.api)[0].Dimensions["revision"][0]
	l, err := f.alice.RequestLease(context.Background(), store.LeaseRequest{RequestID: "job", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	page := string(b.StatusHTML())
	for _, want := range []string{"<th>window in force</th>", "<td>" + win + "</td><td>4</td><td>1</td><td>" + end.Format("2006-01-02 15:04Z") + " to default</td><td>0</td>"} {
		if !strings.Contains(page, want) {
			t.Errorf("the status page lacks %s:\n%s", want, page)
		}
	}
	metrics := testutil.Metrics(t, reg)
	for _, want := range []string{
		`gcefleet_backend_min_idle{group="` + rev + `",zone="us-central1-a"} 1`,
		`gcefleet_backend_minimum_size{group="` + rev + `",zone="us-central1-a"} 4`,
		`gcefleet_backend_schedule_window{group="` + rev + `",window="` + win + `",zone="us-central1-a"} 1`,
		`gcefleet_backend_schedule_window{group="` + rev + `",window="default",zone="us-central1-a"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// 2.5 hours on: out of the window, the machines idle since. One leased
	// needs ceil(1.1) = 2, and one idle: 3 of the 4 stay.
	offset.Add(int64(150 * time.Minute))
	group := func() int32 {
		g, err := f.compute.Groups.Get(context.Background(), &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: rev})
		if err != nil {
			t.Fatal(err)
		}
		return g.GetTargetSize()
	}
	testutil.WaitWithin(t, 20*time.Second, "the idle surplus to be deleted and the group to follow", func() bool {
		return len(machines(t, f.api)) == 3 && group() == 3
	})
	for _, m := range machines(t, f.api) {
		if m.Hostname == l.Hostname && m.State != store.Leased {
			t.Errorf("the leased machine %s is %s", m.Hostname, m.State)
		}
	}
	if ls, err := f.alice.Lease(context.Background(), l.ID, 0); err != nil || ls.State != store.Fulfilled {
		t.Errorf("the lease after the scale-down: %+v, %v", ls, err)
	}
	if !strings.Contains(testutil.Metrics(t, reg), `gcefleet_backend_idle_deleted_total{group="`+rev+`",zone="us-central1-a"} 1`) {
		t.Errorf("metrics do not count the idle machine deleted:\n%s", testutil.Metrics(t, reg))
	}
	if page := string(b.StatusHTML()); !strings.Contains(page, "<td>default</td><td>1</td><td>1</td><td>"+start.AddDate(0, 0, 7).Format("2006-01-02 15:04Z")+" to "+win+"</td><td>1</td>") {
		t.Errorf("the status page does not show the default window and the deletion:\n%s", page)
	}
}

// TestWindowEndKicksTheJobs: when a manager's window ends, the backend
// runs delete-idle-instances (and resize) at once, though its jobs run
// only every minute otherwise: the idle surplus goes seconds after the
// window's end.
func TestWindowEndKicksTheJobs(t *testing.T) {
	// The backend's clock is three hours ahead of the provider's, so the
	// machines are idle for longer than idle_timeout; its window ends
	// 15 seconds after the test starts.
	ahead := time.Now().Add(3 * time.Hour)
	end := ahead.UTC().Truncate(time.Minute).Add(2 * time.Minute)
	offset := time.Until(end.Add(-15 * time.Second))
	now := func() time.Time { return time.Now().Add(offset) }
	start := end.Add(-time.Hour)
	hours := start.Format("15:04") + "-" + end.Format("15:04")
	day := strings.ToLower(start.Weekday().String()[:3])
	f := newFleet(t, ":memory:")
	if err := os.WriteFile(f.path, []byte(poolTemplate+`managers:
  - template_base_name: pool
    zone: us-central1-a
    minimum_size: 1
    maximum_size: 6
    idle_timeout: 1h
    schedules:
      - {days: [`+day+`], hours: "`+hours+`", time_zone: UTC, minimum_size: 4}
settings:
  interval: 1m
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := backend.LoadConfig(f.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := backend.Run(ctx, cfg, f.compute, f.api, backend.Options{ConfigPath: f.path, Store: f.st, Replica: "r1", Now: now},
		slog.New(slog.NewTextHandler(f.logs, nil)))
	defer stopped(t, b)
	defer cancel()
	// Instances still booting when catalog-instances ran wait for its
	// next run (a minute): the test runs it sooner, as it is not what
	// is measured.
	testutil.WaitWithin(t, 12*time.Second, "the window's four machines", func() bool {
		b.Scheduler().Kick("catalog-instances")
		return len(machines(t, f.api)) == 4
	})
	if now().After(end) {
		t.Fatalf("the window ended before the fleet was at its minimum: the test machine is too slow for this test")
	}
	testutil.WaitWithin(t, 15*time.Second+time.Until(end.Add(-offset)), "the idle surplus deleted just after the window ends (jobs every minute)", func() bool {
		return len(machines(t, f.api)) == 1
	})
	t.Logf("back at 1, %v after the window's end", now().Sub(end).Round(time.Millisecond))
}
