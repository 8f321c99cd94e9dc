package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"

	gceapi "github.com/gcefleet/gcefleet/gce"
	"github.com/gcefleet/gcefleet/store"
)

// group is a manager's current revision.
type group struct {
	m   Manager
	t   Template
	rev string
}

func (j *Jobs) groups() []group {
	templates := map[string]Template{}
	for _, t := range j.Config.Templates {
		templates[t.BaseName] = t
	}
	var out []group
	for _, m := range j.Config.Managers {
		t := templates[m.TemplateBaseName]
		out = append(out, group{m: m, t: t, rev: t.Revision()})
	}
	return out
}

// managed lists a group's instances with their status and action.
func (j *Jobs) managed(ctx context.Context, g group) ([]*computepb.ManagedInstance, error) {
	var out []*computepb.ManagedInstance
	err := gceapi.Retry(ctx, func() error {
		out = out[:0]
		it := j.Compute.Groups.ListManagedInstances(ctx, &computepb.ListManagedInstancesInstanceGroupManagersRequest{
			Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev})
		for {
			mi, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, mi)
		}
	})
	return out, err
}

// CatalogInstances adds every running instance of the managed groups to
// the provider's catalog, with its template's dimensions and where it
// stands. Cataloging is idempotent, so the job just runs again.
func (j *Jobs) CatalogInstances(ctx context.Context, add func(context.Context, store.Machine) error) error {
	var errs []error
	for _, g := range j.groups() {
		mis, err := j.managed(ctx, g)
		if err != nil {
			if gceapi.Classify(err) != gceapi.NotFound {
				errs = append(errs, fmt.Errorf("instances of %s in %s: %w", g.rev, g.m.Zone, err))
			}
			continue
		}
		for _, mi := range mis {
			if mi.GetInstanceStatus() != "RUNNING" || mi.GetCurrentAction() != "NONE" {
				continue
			}
			name := gceapi.LastSegment(mi.GetInstance())
			in, err := j.Compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: g.t.Project, Zone: g.m.Zone, Instance: name})
			if err != nil {
				if gceapi.Classify(err) != gceapi.NotFound {
					errs = append(errs, err)
				}
				continue
			}
			dims := store.Dimensions{
				"project": {g.t.Project}, "zone": {g.m.Zone}, "template": {g.t.BaseName},
				"revision": {g.rev}, "machine_type": {g.t.MachineType},
			}
			for k, v := range g.t.Dimensions {
				dims[k] = append(dims[k], v)
			}
			m := store.Machine{Hostname: name, Dimensions: dims, Policies: store.Policies{OnReclaim: "DELETE"},
				Connection: store.Connection{Address: in.GetNetworkInterfaces()[0].GetNetworkIP()}}
			// A reclaimed instance still running until its deletion is
			// refused by the provider: it is on its way out.
			if err := add(ctx, m); err != nil && !errors.Is(err, store.ErrReclaimed) {
				errs = append(errs, fmt.Errorf("cataloging %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// DeleteReclaimed deletes, through their groups, the instances whose lease
// the provider reclaimed; the group lowers its target size with each, and
// ResizeGroups raises it again, so a reclaimed machine is replaced by a
// fresh one. An instance of no configured group is left alone.
func (j *Jobs) DeleteReclaimed(ctx context.Context, events []store.Event) error {
	var errs []error
	for _, e := range events {
		if e.Kind != "reclaimed" || e.OnReclaim == "RECYCLE" {
			continue
		}
		deleted := false
		for _, g := range j.groups() {
			// Instances are named after their group's revision; the same
			// revision has a group in each of its zones.
			if !strings.HasPrefix(e.Hostname, g.rev+"-") {
				continue
			}
			member, err := j.deleteFromGroup(ctx, g, e.Hostname)
			if err != nil {
				errs = append(errs, fmt.Errorf("deleting reclaimed %s: %w", e.Hostname, err))
			}
			if member {
				deleted = err == nil
				j.Log.Info("deleted reclaimed instance", "instance", e.Hostname, "group", g.rev, "zone", g.m.Zone)
				break
			}
		}
		if !deleted {
			j.Log.Warn("reclaimed machine is in no configured group; left alone", "instance", e.Hostname)
		}
	}
	return errors.Join(errs...)
}

// deleteFromGroup deletes instance name if it is a member of g, and says
// whether it was.
func (j *Jobs) deleteFromGroup(ctx context.Context, g group, name string) (bool, error) {
	mis, err := j.managed(ctx, g)
	if err != nil {
		if gceapi.Classify(err) == gceapi.NotFound {
			return false, nil
		}
		return false, err
	}
	url := ""
	for _, mi := range mis {
		if gceapi.LastSegment(mi.GetInstance()) == name {
			url = mi.GetInstance()
		}
	}
	if url == "" {
		return false, nil
	}
	req := &computepb.DeleteInstancesInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev,
		RequestId: new(gceapi.RequestID()),
		InstanceGroupManagersDeleteInstancesRequestResource: &computepb.InstanceGroupManagersDeleteInstancesRequest{Instances: []string{url}}}
	return true, gceapi.Retry(ctx, func() error {
		op, err := j.Compute.Groups.DeleteInstances(ctx, req)
		if err != nil {
			return err
		}
		return j.Compute.Wait(ctx, g.t.Project, op)
	})
}

// ResizeGroups brings each group whose target size fell below its
// manager's minimum back up to it.
func (j *Jobs) ResizeGroups(ctx context.Context) error {
	var errs []error
	for _, g := range j.groups() {
		mig, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev})
		if err != nil {
			if gceapi.Classify(err) != gceapi.NotFound {
				errs = append(errs, err)
			}
			continue
		}
		want := int32(g.m.MinimumSize)
		if mig.GetTargetSize() >= want {
			continue
		}
		req := &computepb.ResizeInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev, Size: want, RequestId: new(gceapi.RequestID())}
		err = gceapi.Retry(ctx, func() error {
			op, err := j.Compute.Groups.Resize(ctx, req)
			if err != nil {
				return err
			}
			return j.Compute.Wait(ctx, g.t.Project, op)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("resizing %s in %s: %w", g.rev, g.m.Zone, err))
			continue
		}
		j.Log.Info("resized group", "group", g.rev, "zone", g.m.Zone, "from", mig.GetTargetSize(), "to", want)
	}
	return errors.Join(errs...)
}
