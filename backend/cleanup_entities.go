package backend

import (
	"context"
)

// cleanupEntities is the cleanup-entities step, run at the end of each
// audit pass that saw every zone: it forgets the leftovers the audit no
// longer sees (deleted, or explained by a group now), by their keys in
// State.Leftovers, and the pending deletions of groups that are gone.
// It changes only the backend's state, never Compute Engine.
func (j *Jobs) cleanupEntities(ctx context.Context, seen map[string]bool) error {
	return j.update(ctx, func(s *State) {
		for k := range s.Leftovers {
			if !seen[k] {
				delete(s.Leftovers, k)
			}
		}
		forgetPendingOfNoGroup(s)
	})
}
