package backend

import (
	"context"
	"fmt"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// DeleteInstanceGroupManagers is the delete-instance-group-managers job:
// it deletes the drained groups that hold no instance any more, and
// forgets those already gone.
func (j *Jobs) DeleteInstanceGroupManagers(ctx context.Context) error {
	ds, err := j.drained()
	if err != nil {
		return err
	}
	return j.each(ctx, len(ds), func(ctx context.Context, i int) error {
		d := ds[i]
		mig, err := j.getGroup(ctx, d.Project, d.Zone, d.Name)
		if gcecompute.Classify(err) == gcecompute.NotFound {
			return j.update(ctx, func(s *State) { delete(s.Groups, d.key()) })
		}
		if err != nil {
			return fmt.Errorf("drained group %s in %s: %w", d.Name, d.Zone, err)
		}
		if err := j.ownGroup(mig, d); err != nil {
			return fmt.Errorf("drained group: %w", err)
		}
		mis, err := j.fetchInstances(ctx, d.Project, d.Zone, d.Name)
		if err != nil {
			return err
		}
		if mig.GetTargetSize() > 0 || len(mis) > 0 {
			return nil // remove-cataloged-instances is emptying it
		}
		req := &computepb.DeleteInstanceGroupManagerRequest{Project: d.Project, Zone: d.Zone, InstanceGroupManager: d.Name, RequestId: new(gcecompute.RequestID())}
		err = j.mutate(ctx, d.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.Delete(ctx, req) })
		if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
			return fmt.Errorf("deleting drained group %s in %s: %w", d.Name, d.Zone, err)
		}
		j.changes.Add(1)
		j.Log.Info("deleted drained instance group manager", "group", d.Name, "zone", d.Zone)
		return j.update(ctx, func(s *State) {
			delete(s.Groups, d.key())
			// It held no instance: those pending deletion are gone.
			forgetPendingOfNoGroup(s)
		})
	})
}
