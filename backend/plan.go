package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// Change is one thing the backend would do.
type Change struct {
	Action string // create-template, create-group, resize-group, drain-revision, drain-group, conflict, delete-idle
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
// configuration, without changing anything. It looks in the configured
// projects, and in those the backend's state (if loaded) names, and shows
// only this deployment's resources: a resource of another's where one of
// its own would go is a conflict, which the jobs refuse.
func (j *Jobs) Plan(ctx context.Context) ([]Change, error) {
	var out []Change
	st := j.state()
	current := map[string]bool{}
	projects := map[string]bool{}
	gs, err := j.groups()
	if err != nil {
		return nil, err
	}
	for _, t := range j.Config().Templates {
		rev, err := j.Revision(t)
		if err != nil {
			return nil, err
		}
		current[rev] = true
		projects[t.Project] = true
		tm, err := j.Compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: t.Project, InstanceTemplate: rev})
		switch {
		case gcecompute.Classify(err) == gcecompute.NotFound:
			out = append(out, Change{"create-template", rev, fmt.Sprintf("%s in %s", t.MachineType, t.Project)})
		case err != nil:
			return nil, fmt.Errorf("instance template %s: %w", rev, err)
		default:
			if err := j.ownTemplateOf(tm, t); err != nil {
				out = append(out, Change{"conflict", rev, err.Error()})
			}
		}
	}
	for _, g := range gs {
		mig, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev})
		switch {
		case gcecompute.Classify(err) == gcecompute.NotFound:
			out = append(out, Change{"create-group", g.rev + " in " + g.m.Zone, fmt.Sprintf("size %d, at most %d", Keep(g.need(0, 0, 0, 0)), g.m.MaximumSize) + inWindow(g.w)})
		case err != nil:
			return nil, fmt.Errorf("group %s in %s: %w", g.rev, g.m.Zone, err)
		case j.ownGroup(mig, g.record()) != nil:
			out = append(out, Change{"conflict", g.rev + " in " + g.m.Zone, j.ownGroup(mig, g.record()).Error()})
		// What it needs with nothing leased (plan does not read the
		// catalog; leased machines only need more).
		case mig.GetTargetSize() < int32(Keep(g.need(0, 0, 0, 0))):
			out = append(out, Change{"resize-group", g.rev + " in " + g.m.Zone, fmt.Sprintf("%d to %d", mig.GetTargetSize(), Keep(g.need(0, 0, 0, 0))) + inWindow(g.w)})
		}
	}
	// A project the configuration no longer names may still hold what the
	// backend made there, as its state (when loaded) remembers.
	for _, t := range st.Templates {
		projects[t.Project] = true
	}
	// What the configuration no longer names: revisions of ours, which
	// are deleted once their groups are gone, and groups of ours (of an
	// old revision, or of a manager taken out of the configuration) in any
	// zone, which drain and are then deleted.
	configured := map[string]bool{}
	for _, g := range gs {
		configured[g.rev+"/"+g.m.Zone] = true
	}
	var drains []Change
	for project := range projects {
		tms, err := gcecompute.All(j.Compute.Templates.List(ctx, &computepb.ListInstanceTemplatesRequest{Project: project}))
		if err != nil {
			return nil, fmt.Errorf("instance templates of %s: %w", project, err)
		}
		ours := map[string]bool{}
		for _, t := range tms {
			if j.ownTemplate(t, project, st.Templates[project+"/"+t.GetName()].Legacy) != nil {
				continue // another deployment's, or not the backend's
			}
			ours[t.GetName()] = true
			if !current[t.GetName()] {
				out = append(out, Change{"drain-revision", t.GetName(), "no longer configured: its groups are drained, then it is deleted"})
			}
		}
		it := j.Compute.Groups.AggregatedList(ctx, &computepb.AggregatedListInstanceGroupManagersRequest{Project: project})
		for {
			pair, err := it.Next()
			if errors.Is(err, iterator.Done) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("instance groups of %s: %w", project, err)
			}
			for _, mig := range pair.Value.GetInstanceGroupManagers() {
				zone := gcecompute.LastSegment(mig.GetZone())
				tmpl := gcecompute.LastSegment(mig.GetInstanceTemplate())
				legacy := st.Groups[project+"/"+zone+"/"+mig.GetName()].Legacy
				if !ours[tmpl] || configured[mig.GetName()+"/"+zone] ||
					(!legacy && !ownDescription(mig.GetDescription(), j.Deployment(), j.Database())) {
					continue
				}
				why := "its manager was taken out of the configuration"
				if !current[gcecompute.LastSegment(mig.GetInstanceTemplate())] {
					why = "its revision is no longer configured"
				}
				drains = append(drains, Change{"drain-group", mig.GetName() + " in " + zone,
					fmt.Sprintf("%s; %d instances: idle ones deleted now, leased ones when their lease ends; then the group is deleted", why, mig.GetTargetSize())})
			}
		}
	}
	slices.SortFunc(drains, func(a, b Change) int { return strings.Compare(a.What, b.What) })
	out = append(out, drains...)
	return out, nil
}

// inWindow says, after a size, the schedule window it is of, if any.
func inWindow(w Window) string {
	if w.Index < 0 {
		return ""
	}
	return ", in window " + w.Name
}
