package backend

import (
	"context"

	"cloud.google.com/go/compute/apiv1/computepb"

	gceapi "github.com/gcefleet/gcefleet/gce"
)

// managed lists a group's instances with their status and action
// (fetch-instances).
func (j *Jobs) managed(ctx context.Context, project, zone, name string) ([]*computepb.ManagedInstance, error) {
	var out []*computepb.ManagedInstance
	err := j.retry(ctx, project, func() error {
		var err error
		out, err = gceapi.All(j.Compute.Groups.ListManagedInstances(ctx, &computepb.ListManagedInstancesInstanceGroupManagersRequest{
			Project: project, Zone: zone, InstanceGroupManager: name}))
		return err
	})
	return out, err
}
