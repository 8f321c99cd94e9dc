package backend

import (
	"context"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// UpdateCatalogedInstances is the update-cataloged-instances step, which
// the backend's event follower runs on each batch of the provider's
// events: it records for deletion the instances whose lease the provider
// reclaimed, and moves the cursor past the events. It reports whether any
// was recorded.
func (j *Jobs) UpdateCatalogedInstances(ctx context.Context, events []store.Event) (bool, error) {
	if len(events) == 0 {
		return false, nil
	}
	now := j.now()
	any := false
	err := j.update(ctx, func(s *State) {
		for _, e := range events {
			if e.Kind == "reclaimed" && e.OnReclaim != "RECYCLE" && s.Pending[e.Hostname].IsZero() {
				s.Pending[e.Hostname] = now
				any = true
			}
		}
		s.Cursor = events[len(events)-1].ID
	})
	if err == nil {
		j.retire(events)
	}
	return any, err
}

// follow reads the provider's event feed from the state's cursor and
// records reclaimed instances for deletion.
func (b *Backend) follow(ctx context.Context) {
	j := b.jobs
	for ctx.Err() == nil {
		evs, err := j.Provider.Events(ctx, j.state().Cursor, 30*time.Second)
		if err == nil {
			var any bool
			if any, err = j.UpdateCatalogedInstances(ctx, evs); any {
				b.sched.Kick("delete-instances-pending-deletion")
			}
		}
		if err != nil && ctx.Err() == nil {
			b.log.Warn("following the provider's events", "err", err)
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
			}
		}
	}
}
