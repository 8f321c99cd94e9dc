package backend

import (
	"context"
	"fmt"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// CreateInstanceGroupManagers is the create-instance-group-managers job.
// It makes, for each configured manager, the
// managed instance group of its template's current revision in its zone,
// once that revision's template exists, and records it. A new revision's
// group starts within what the manager's maximum leaves beside the
// revisions it replaces; resize-instance-groups takes it from there.
func (j *Jobs) CreateInstanceGroupManagers(ctx context.Context) error {
	gs, err := j.groups()
	if err != nil {
		return err
	}
	drained, err := j.drained()
	if err != nil {
		return err
	}
	st := j.state()
	return j.each(ctx, len(gs), func(ctx context.Context, i int) error {
		g := gs[i]
		rec := g.record()
		if _, made := st.Groups[rec.key()]; made {
			return nil
		}
		if _, made := st.Templates[g.t.Project+"/"+g.rev]; !made {
			return nil // create-instance-templates has not made it yet
		}
		var tmpl *computepb.InstanceTemplate
		err := j.retry(ctx, g.t.Project, func() error {
			var err error
			tmpl, err = j.Compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: g.t.Project, InstanceTemplate: g.rev})
			return err
		})
		if err != nil {
			return fmt.Errorf("instance template %s: %w", g.rev, err)
		}
		if err := j.ownTemplateOf(tmpl, g.t); err != nil {
			return err
		}
		others, err := j.othersSize(ctx, g, drained)
		if err != nil {
			return err
		}
		// Made at what it needs with nothing leased yet: its window's
		// minimum, or its idle spare if that is more.
		size := max(0, min(Keep(g.need(0, 0, 0, others)), g.m.MaximumSize-others))
		req := &computepb.InsertInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, RequestId: new(gcecompute.RequestID()),
			InstanceGroupManagerResource: &computepb.InstanceGroupManager{
				Name:             new(g.rev),
				BaseInstanceName: new(baseInstanceName(g.rev, g.m.Zone)),
				InstanceTemplate: tmpl.SelfLink,
				TargetSize:       new(int32(size)),
				Description:      new(groupDescription(g.t.BaseName, g.deployment, j.Database())),
			}}
		err = j.mutate(ctx, g.t.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.Insert(ctx, req) })
		switch {
		case err == nil:
			j.changes.Add(1)
			j.Log.Info("created instance group manager", "group", g.rev, "zone", g.m.Zone, "size", size)
		case gcecompute.Classify(err) == gcecompute.Exists:
			// Ours if it uses our template and says it is this
			// deployment's (a MIG has no labels).
			mig, err := j.getGroup(ctx, g.t.Project, g.m.Zone, g.rev)
			if err != nil {
				return err
			}
			if err := j.ownGroup(mig, rec); err != nil {
				return err
			}
		default:
			return fmt.Errorf("instance group manager %s in %s: %w", g.rev, g.m.Zone, err)
		}
		return j.update(ctx, func(s *State) { s.Groups[rec.key()] = rec })
	})
}
