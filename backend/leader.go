package backend

import (
	"context"
	"time"
)

// leaderName is the backend's name in the store's leader table.
const leaderName = "gce-backend"

// lead takes part in the election, and runs the jobs while it leads.
func (b *Backend) lead(ctx context.Context) {
	st := b.opts.Store
	if st == nil {
		b.runLeader(ctx)
		return
	}
	ttl := b.opts.LeaderTTL
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		if b.elected(ctx) {
			b.log.Info("backend replica leads; running the jobs", "replica", b.opts.Replica)
			lctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); b.runLeader(lctx) }()
			b.keepLeading(ctx, tick.C)
			stop()
			<-done
			if ctx.Err() != nil {
				st.Resign(context.WithoutCancel(ctx), leaderName, b.opts.Replica)
				return
			}
			b.log.Warn("backend replica lost the leadership; jobs stopped", "replica", b.opts.Replica)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// elected asks the store for the leadership, or to renew it.
func (b *Backend) elected(ctx context.Context) bool {
	ok, err := b.opts.Store.Lead(ctx, leaderName, b.opts.Replica, b.opts.LeaderTTL)
	if err != nil && ctx.Err() == nil {
		b.log.Warn("backend leader election", "err", err)
	}
	return ok
}

// keepLeading renews the leadership on every tick until it is lost (or
// cannot be renewed in time: the jobs stop before another replica may
// take over) or ctx ends.
func (b *Backend) keepLeading(ctx context.Context, tick <-chan time.Time) {
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		ok, err := b.opts.Store.Lead(ctx, leaderName, b.opts.Replica, b.opts.LeaderTTL)
		switch {
		case ok:
			renewed = time.Now()
		case err == nil:
			return // another replica leads
		default:
			if ctx.Err() == nil {
				b.log.Warn("backend leader election", "err", err)
			}
			if time.Since(renewed) > b.opts.LeaderTTL*2/3 {
				return
			}
		}
	}
}

func (b *Backend) setLeader(on bool) {
	b.mu.Lock()
	b.leader = on
	b.mu.Unlock()
	if on {
		b.m.leader.Set(1)
	} else {
		b.m.leader.Set(0)
	}
}

// Leader reports whether this replica runs the jobs now.
func (b *Backend) Leader() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leader
}
