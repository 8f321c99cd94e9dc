package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// DeleteInstancesPendingDeletion is the delete-instances-pending-deletion
// job. It deletes the instances pending deletion through their groups'
// deleteInstances (so that the group does not replace them until
// it is resized), again on each run until they are gone, and forgets them
// then. An instance of no group of the backend's is left alone.
func (j *Jobs) DeleteInstancesPendingDeletion(ctx context.Context) error {
	st := j.state()
	if len(st.Pending) == 0 {
		return nil
	}
	groups := make([]GroupRecord, 0, len(st.Groups))
	for _, g := range st.Groups {
		groups = append(groups, g)
	}
	return j.each(ctx, len(groups), func(ctx context.Context, i int) error {
		g := groups[i]
		mine := 0
		for host := range st.Pending {
			if strings.HasPrefix(host, g.prefix()) {
				mine++
			}
		}
		if mine == 0 {
			return nil
		}
		mis, err := j.fetchInstances(ctx, g.Project, g.Zone, g.Name)
		if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
			return fmt.Errorf("instances of %s in %s: %w", g.Name, g.Zone, err)
		}
		present := map[string]bool{}
		var urls []string
		var errs []error
		for _, mi := range mis {
			name := gcecompute.LastSegment(mi.GetInstance())
			if st.Pending[name].IsZero() {
				continue
			}
			present[name] = true
			if err := ofTemplate(mi, g); err != nil {
				errs = append(errs, err)
				continue
			}
			if mi.GetCurrentAction() != "DELETING" && mi.GetCurrentAction() != "ABANDONING" {
				urls = append(urls, mi.GetInstance())
			}
		}
		if err := j.forgetGone(ctx, g, st, present); err != nil {
			return err
		}
		if len(urls) == 0 {
			return errors.Join(errs...)
		}
		req := &computepb.DeleteInstancesInstanceGroupManagerRequest{Project: g.Project, Zone: g.Zone, InstanceGroupManager: g.Name,
			RequestId: new(gcecompute.RequestID()),
			InstanceGroupManagersDeleteInstancesRequestResource: &computepb.InstanceGroupManagersDeleteInstancesRequest{Instances: urls}}
		err = j.mutate(ctx, g.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.DeleteInstances(ctx, req) })
		if err != nil {
			return fmt.Errorf("deleting %d instances of %s in %s: %w", len(urls), g.Name, g.Zone, err)
		}
		j.changes.Add(1)
		// The group is smaller now; resize-instance-groups reads this.
		j.setStats(g.key(), func(s *GroupStats) { s.Current = max(0, len(mis)-len(urls)) })
		j.Log.Info("deleted instances", "group", g.Name, "zone", g.Zone, "count", len(urls))
		return errors.Join(errs...)
	})
}

// forgetGone forgets the pending instances of g that it no longer holds.
// Instance names carry their group's zone, so no other group has them.
func (j *Jobs) forgetGone(ctx context.Context, g GroupRecord, st State, present map[string]bool) error {
	var gone []string
	for host := range st.Pending {
		if strings.HasPrefix(host, g.prefix()) && !present[host] {
			gone = append(gone, host)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return j.update(ctx, func(s *State) {
		for _, h := range gone {
			delete(s.Pending, h)
		}
	})
}
