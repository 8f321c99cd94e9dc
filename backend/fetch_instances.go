package backend

import (
	"context"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// fetchInstances is the fetch-instances step: it lists a group's
// instances with their status, current action, template and last attempt.
// The jobs that work on a group's instances (catalog-instances,
// delete-instances-pending-deletion, remove-cataloged-instances,
// delete-instance-group-managers) each begin with it, so that each acts on
// what the group holds now; it is not scheduled on its own, which would
// add a list per group per interval and still leave each job a stale one.
func (j *Jobs) fetchInstances(ctx context.Context, project, zone, name string) ([]*computepb.ManagedInstance, error) {
	var out []*computepb.ManagedInstance
	err := j.retry(ctx, project, func() error {
		var err error
		out, err = gcecompute.All(j.Compute.Groups.ListManagedInstances(ctx, &computepb.ListManagedInstancesInstanceGroupManagersRequest{
			Project: project, Zone: zone, InstanceGroupManager: name}))
		return err
	})
	return out, err
}
