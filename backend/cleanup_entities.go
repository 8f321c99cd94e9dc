package backend

import (
	"context"
	"strings"
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

// forgetPendingOfNoGroup forgets the instances pending deletion that no
// group of the backend's holds any more: their group is gone, and they
// with it.
func forgetPendingOfNoGroup(s *State) {
	for host := range s.Pending {
		if !ofAnyGroup(s, host) {
			delete(s.Pending, host)
		}
	}
}

// ofAnyGroup says whether host is named as an instance of one of the
// backend's groups.
func ofAnyGroup(st *State, host string) bool {
	for _, g := range st.Groups {
		if strings.HasPrefix(host, g.prefix()) {
			return true
		}
	}
	return false
}
