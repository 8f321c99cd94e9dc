package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// AuditInstances is the audit-instances job. It finds instances labelled
// as this deployment's (they carry its DeploymentLabel) that none of its groups explains, in every zone where
// it has or had a group: leaked by a crash between steps, or left by a
// group deleted behind its back. Each is deleted once it has been seen
// for the configured grace; an instance without the label is never
// touched, whatever its name and other labels: another deployment's, a
// person's, or one made before deployments had identities. A pass that
// saw every zone ends with cleanup-entities.
func (j *Jobs) AuditInstances(ctx context.Context) error {
	st := j.state()
	gs, err := j.groups()
	if err != nil {
		return err
	}
	type place struct{ project, zone string }
	places := map[place]bool{}
	for _, g := range st.Groups {
		places[place{g.Project, g.Zone}] = true
	}
	for _, g := range gs {
		places[place{g.t.Project, g.m.Zone}] = true
	}
	list := make([]place, 0, len(places))
	for p := range places {
		list = append(list, p)
	}
	now, grace, id := j.now(), j.Config().Settings.AuditGrace, j.Deployment()
	seen := map[string]bool{}
	var mu sync.Mutex
	err = j.each(ctx, len(list), func(ctx context.Context, i int) error {
		p := list[i]
		var found []*computepb.Instance
		err := j.retry(ctx, p.project, func() error {
			var err error
			found, err = gcecompute.All(j.Compute.Instances.List(ctx, &computepb.ListInstancesRequest{Project: p.project, Zone: p.zone,
				Filter: new(fmt.Sprintf("labels.%s = %q", DeploymentLabel, id))}))
			return err
		})
		if err != nil {
			return fmt.Errorf("auditing %s: %w", p.zone, err)
		}
		var errs []error
		for _, in := range found {
			if !j.ownInstance(in) || in.GetLabels()[TemplateLabel] == "" || explained(st, p.project, p.zone, in.GetName()) {
				continue
			}
			key := p.project + "/" + p.zone + "/" + in.GetName()
			mu.Lock()
			seen[key] = true
			mu.Unlock()
			first, ok := st.Leftovers[key]
			if !ok {
				j.Log.Warn("audit: instance labelled as ours that no group explains; deleting it after the grace", "instance", in.GetName(), "zone", p.zone, "grace", grace)
				if err := j.update(ctx, func(s *State) { s.Leftovers[key] = now }); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if now.Sub(first) < grace {
				continue
			}
			req := &computepb.DeleteInstanceRequest{Project: p.project, Zone: p.zone, Instance: in.GetName(), RequestId: new(gcecompute.RequestID())}
			err := j.mutate(ctx, p.project, func() (*computeapi.Operation, error) { return j.Compute.Instances.Delete(ctx, req) })
			if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
				errs = append(errs, fmt.Errorf("deleting leftover %s in %s: %w", in.GetName(), p.zone, err))
				continue
			}
			j.Log.Warn("audit: deleted a leftover instance", "instance", in.GetName(), "zone", p.zone, "seen", first)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	return j.cleanupEntities(ctx, seen)
}

// explained says whether an instance belongs to one of the backend's
// groups in its zone: a group names its instances after itself.
func explained(st State, project, zone, name string) bool {
	for _, g := range st.Groups {
		if g.Project == project && g.Zone == zone && strings.HasPrefix(name, g.prefix()) {
			return true
		}
	}
	return false
}
