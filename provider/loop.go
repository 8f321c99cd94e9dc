package provider

import (
	"context"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// prune deletes the leases that ended and the events written longer ago
// than the retention, a thousand at a time so that no one transaction
// holds the database long.
func (s *Server) prune(ctx context.Context) {
	before := time.Now().Add(-s.retention)
	for _, p := range []struct {
		what  string
		prune func(context.Context, time.Time, int) (int, error)
	}{
		{"ended leases", s.st.PruneLeases},
		{"events", s.st.PruneEvents},
	} {
		total := 0
		for ctx.Err() == nil {
			n, err := p.prune(ctx, before, 1000)
			total += n
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("pruning "+p.what, "err", err)
				}
				break
			}
			if n < 1000 {
				break
			}
		}
		if total > 0 {
			s.log.Info("pruned "+p.what, "count", total, "older_than", before.Format(time.RFC3339))
		}
	}
}

// Run ends leases as they expire and requests as their deadline passes,
// until ctx ends. A lease's end reaches its backend at once, not at the
// next pass of a cron: the loop sleeps until the next lease is due, and is
// woken early when a lease due sooner appears.
func (s *Server) Run(ctx context.Context) error {
	go s.sampleHistory(ctx)
	if _, err := s.ClaimKey(ctx); err != nil && ctx.Err() == nil {
		// Made again at the first lease that needs it.
		s.log.Warn("making the provider's claim key", "err", err)
	}
	if s.st.Dialect() == "postgres" {
		go s.follow(ctx)
	} else {
		s.hearing.Store(true) // SQLite has one process: this one
	}
	var maintained, pruned time.Time
	for {
		if time.Since(maintained) > time.Minute {
			if err := s.st.Maintain(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("refreshing the database's statistics", "err", err)
			}
			maintained = time.Now()
		}
		if time.Since(pruned) > time.Hour {
			s.prune(ctx)
			pruned = time.Now()
		}
		ended, next, err := s.st.Expire(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("expiring leases", "err", err)
			next = time.Now().Add(5 * time.Second)
		}
		if len(ended) > 0 {
			s.m.outcomes.WithLabelValues("ended_by_time").Add(float64(len(ended)))
			for _, id := range ended {
				s.leaseTouched(id)
			}
			s.eventsAdded("") // "reclaimed", for the leases that had machines
		}
		// Look again at least every few seconds, for the leases other
		// replicas make.
		wait := 5 * time.Second
		if !next.IsZero() {
			wait = min(max(time.Until(next), 0), wait)
		}
		s.mu.Lock()
		s.wakeAt = time.Now().Add(wait)
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-s.wake:
			t.Stop()
		}
	}
}

// follow wakes long polls when other replicas on the same database commit
// a change, until ctx ends: only those of the lease that changed, or the
// event polls for new events.
func (s *Server) follow(ctx context.Context) {
	backoff := time.Second
	for {
		err := s.st.Listen(ctx, func(c store.Change) {
			s.hearing.Store(true)
			backoff = time.Second
			switch {
			case c.Lease != "":
				s.leaseTouched(c.Lease)
			case c.Events:
				s.eventsAdded(c.Backend)
			default:
				s.notify()
			}
		})
		s.hearing.Store(false)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("not hearing of other replicas' changes; long polls look every second until this recovers", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// due tells Run of a lease or request that ends at t.
func (s *Server) due(t time.Time) {
	if t.IsZero() {
		return
	}
	s.mu.Lock()
	sooner := t.Before(s.wakeAt)
	s.mu.Unlock()
	if sooner {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}
