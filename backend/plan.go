package backend

import (
	"context"
	"fmt"

	"cloud.google.com/go/compute/apiv1/computepb"

	gceapi "github.com/gcefleet/gcefleet/gce"
)

// Change is one thing the backend would do.
type Change struct {
	Action string // create-template, create-group, resize-group, drain-revision, drain-group
	What   string
	Detail string
}

func (c Change) String() string {
	s := c.Action + " " + c.What
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// Plan returns what the jobs would change to make Compute Engine match the
// configuration, without changing anything.
func (j *Jobs) Plan(ctx context.Context) ([]Change, error) {
	var out []Change
	current := map[string]bool{}
	projects := map[string]bool{}
	for _, t := range j.Config().Templates {
		rev := t.Revision()
		current[rev] = true
		projects[t.Project] = true
		_, err := j.Compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: t.Project, InstanceTemplate: rev})
		switch {
		case gceapi.Classify(err) == gceapi.NotFound:
			out = append(out, Change{"create-template", rev, fmt.Sprintf("%s in %s", t.MachineType, t.Project)})
		case err != nil:
			return nil, fmt.Errorf("instance template %s: %w", rev, err)
		}
	}
	for _, g := range j.groups() {
		mig, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev})
		switch {
		case gceapi.Classify(err) == gceapi.NotFound:
			out = append(out, Change{"create-group", g.rev + " in " + g.m.Zone, fmt.Sprintf("size %d, at most %d", g.m.MinimumSize, g.m.MaximumSize)})
		case err != nil:
			return nil, fmt.Errorf("group %s in %s: %w", g.rev, g.m.Zone, err)
		case mig.GetTargetSize() < int32(g.m.MinimumSize):
			out = append(out, Change{"resize-group", g.rev + " in " + g.m.Zone, fmt.Sprintf("%d to %d", mig.GetTargetSize(), g.m.MinimumSize)})
		}
	}
	// Revisions of ours that the configuration no longer names: their
	// groups in the configured zones drain, then they are deleted.
	zones := map[string]bool{}
	for _, g := range j.groups() {
		zones[g.m.Zone] = true
	}
	for project := range projects {
		tms, err := gceapi.All(j.Compute.Templates.List(ctx, &computepb.ListInstanceTemplatesRequest{Project: project}))
		if err != nil {
			return nil, fmt.Errorf("instance templates of %s: %w", project, err)
		}
		for _, t := range tms {
			if t.GetProperties().GetLabels()[TemplateLabel] == "" || current[t.GetName()] {
				continue
			}
			out = append(out, Change{"drain-revision", t.GetName(), "no longer configured: its groups are drained, then it is deleted"})
			for zone := range zones {
				mig, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: project, Zone: zone, InstanceGroupManager: t.GetName()})
				switch {
				case gceapi.Classify(err) == gceapi.NotFound:
				case err != nil:
					return nil, fmt.Errorf("group %s in %s: %w", t.GetName(), zone, err)
				default:
					out = append(out, Change{"drain-group", t.GetName() + " in " + zone,
						fmt.Sprintf("%d instances: idle ones deleted now, leased ones when their lease ends; then the group is deleted", mig.GetTargetSize())})
				}
			}
		}
	}
	return out, nil
}
