package backend_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/backend"
)

func TestSchedulerRunsKickedJobsAtOnce(t *testing.T) {
	s := backend.NewScheduler(slog.New(slog.DiscardHandler))
	var runs atomic.Int32
	s.Add("delete", time.Hour, func(context.Context) error { runs.Add(1); return nil })
	s.Add("broken", time.Hour, func(context.Context) error { return errors.New("zone on fire") })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	first := s.Ran("delete")
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		closed(t, done, 10*time.Second, "the scheduler to stop once its context ended")
	})
	closed(t, first, 10*time.Second, "every job's first run as the scheduler starts")
	// An hour-long interval, yet a kick runs it now.
	next := s.Ran("delete")
	s.Kick("delete")
	closed(t, next, 10*time.Second, "the kicked job to run again, an hour before its interval")
	if runs.Load() != 2 {
		t.Errorf("runs %d, want 2", runs.Load())
	}
	// A failing job tries again after a short backoff (a second, then
	// two), not its interval.
	closed(t, s.Ran("broken"), 10*time.Second, "the failing job to run again after its backoff")
	closed(t, s.Ran("broken"), 10*time.Second, "the failing job to run again after its backoff")
	st := s.Status()
	if len(st) != 2 || st[0].Name != "broken" || st[0].LastErr != "zone on fire" || st[0].Runs < 2 || st[1].LastErr != "" {
		t.Errorf("status %+v", st)
	}
}
