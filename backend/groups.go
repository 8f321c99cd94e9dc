package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	gceapi "github.com/gcefleet/gcefleet/gce"
	"github.com/gcefleet/gcefleet/store"
)

// CreateInstanceGroupManagers makes, for each configured manager, the
// managed instance group of its template's current revision in its zone,
// once that revision's template exists, and records it. A new revision's
// group starts within what the manager's maximum leaves beside the
// revisions it replaces; resize-instance-groups takes it from there.
func (j *Jobs) CreateInstanceGroupManagers(ctx context.Context) error {
	gs, drained := j.groups(), j.drained()
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
		if err := j.ownTemplate(tmpl, g.t.Project, false); err != nil {
			return err
		}
		others, err := j.othersSize(ctx, g, drained)
		if err != nil {
			return err
		}
		size := max(0, min(g.m.MinimumSize, g.m.MaximumSize-others))
		req := &computepb.InsertInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, RequestId: new(gceapi.RequestID()),
			InstanceGroupManagerResource: &computepb.InstanceGroupManager{
				Name:             new(g.rev),
				BaseInstanceName: new(baseInstanceName(g.rev, g.m.Zone)),
				InstanceTemplate: tmpl.SelfLink,
				TargetSize:       new(int32(size)),
				Description:      new(groupDescription(g.t.BaseName, g.deployment)),
			}}
		err = j.mutate(ctx, g.t.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.Insert(ctx, req) })
		switch {
		case err == nil:
			j.changes.Add(1)
			j.Log.Info("created instance group manager", "group", g.rev, "zone", g.m.Zone, "size", size)
		case gceapi.Classify(err) == gceapi.Exists:
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

// baseInstanceName names a group's instances: its revision and a code of
// its zone. Instance names are unique only within a zone in GCE, but they
// are the catalog's hostnames, which are unique across the fleet; groups
// of one revision in several zones would otherwise draw the same names.
func baseInstanceName(rev, zone string) string {
	sum := sha256.Sum256([]byte(zone))
	return rev + "-" + hex.EncodeToString(sum[:2])
}

func (j *Jobs) getGroup(ctx context.Context, project, zone, name string) (*computepb.InstanceGroupManager, error) {
	var mig *computepb.InstanceGroupManager
	err := j.retry(ctx, project, func() error {
		var err error
		mig, err = j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: project, Zone: zone, InstanceGroupManager: name})
		return err
	})
	return mig, err
}

// othersSize is the target size of the backend's other groups of g's
// template in g's zone: the drained revisions g replaces.
func (j *Jobs) othersSize(ctx context.Context, g group, drained []GroupRecord) (int, error) {
	n := 0
	for _, d := range drained {
		if d.Project != g.t.Project || d.Zone != g.m.Zone || d.BaseName != g.t.BaseName {
			continue
		}
		mig, err := j.getGroup(ctx, d.Project, d.Zone, d.Name)
		if gceapi.Classify(err) == gceapi.NotFound {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("group %s in %s: %w", d.Name, d.Zone, err)
		}
		n += int(mig.GetTargetSize())
	}
	return n, nil
}

// Target is the size a group should have (the LUCI GCE Backend's rule):
// room for a tenth more than its leased machines, at least the minimum,
// at most the maximum less what older revisions in the zone still hold
// (so a rollout grows the new revision as the old drains), growing by at
// most 100 at a time. It never shrinks a group: shrinking deletes
// instances GCE picks, leased ones among them; a group loses instances
// only by deleteInstances of ones known idle.
func Target(m Manager, size, leased, others int) int {
	want := max(m.MinimumSize, int(math.Ceil(float64(leased)*1.1)))
	want = min(want, m.MaximumSize-others, size+100)
	return max(want, size)
}

// ResizeGroups grows each configured group to its Target.
func (j *Jobs) ResizeGroups(ctx context.Context) error {
	leased, err := j.leasedByGroup(ctx)
	if err != nil {
		return err
	}
	gs, drained := j.groups(), j.drained()
	st := j.state()
	return j.each(ctx, len(gs), func(ctx context.Context, i int) error {
		g := gs[i]
		key := g.record().key()
		if _, made := st.Groups[key]; !made {
			return nil
		}
		// The catalog pass counted the group's instances (a group lists
		// one per unit of its target size, CREATING ones included): a
		// group at rest costs no call here.
		if seen, ok := j.Stats()[key]; ok && seen.Current > 0 && len(drained) == 0 &&
			Target(g.m, seen.Current, leased[key], 0) == seen.Current {
			return nil
		}
		mig, err := j.getGroup(ctx, g.t.Project, g.m.Zone, g.rev)
		if err != nil {
			if gceapi.Classify(err) == gceapi.NotFound {
				return nil
			}
			return fmt.Errorf("group %s in %s: %w", g.rev, g.m.Zone, err)
		}
		if err := j.ownGroup(mig, g.record()); err != nil {
			return err
		}
		others, err := j.othersSize(ctx, g, drained)
		if err != nil {
			return err
		}
		size := int(mig.GetTargetSize())
		want := Target(g.m, size, leased[key], others)
		j.setStats(key, func(s *GroupStats) { s.Target = size })
		if want == size {
			return nil
		}
		if failing := j.Stats()[key].Failing; failing != "" && want > g.m.MinimumSize {
			// The zone has no room (stockout, quota): asking for more
			// would only queue more failures. Back off until it has.
			return nil
		}
		req := &computepb.ResizeInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev,
			Size: int32(want), RequestId: new(gceapi.RequestID())}
		err = j.mutate(ctx, g.t.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.Resize(ctx, req) })
		if err != nil {
			return fmt.Errorf("resizing %s in %s: %w", g.rev, g.m.Zone, err)
		}
		j.changes.Add(1)
		j.setStats(key, func(s *GroupStats) { s.Target = want })
		j.Log.Info("resized group", "group", g.rev, "zone", g.m.Zone, "from", size, "to", want, "leased", leased[key])
		return nil
	})
}

// leasedByGroup counts the backend's leased machines by group.
func (j *Jobs) leasedByGroup(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	if j.Provider == nil {
		return out, nil
	}
	ms, err := j.Provider.Machines(ctx)
	if err != nil {
		return nil, fmt.Errorf("the provider's catalog: %w", err)
	}
	for _, m := range ms {
		if m.State != store.Leased || len(m.Dimensions["project"]) == 0 || len(m.Dimensions["zone"]) == 0 || len(m.Dimensions["revision"]) == 0 {
			continue
		}
		out[m.Dimensions["project"][0]+"/"+m.Dimensions["zone"][0]+"/"+m.Dimensions["revision"][0]]++
	}
	return out, nil
}

// DeleteDrainedGroups deletes the drained groups that hold no instance
// any more, and forgets those already gone.
func (j *Jobs) DeleteDrainedGroups(ctx context.Context) error {
	ds := j.drained()
	return j.each(ctx, len(ds), func(ctx context.Context, i int) error {
		d := ds[i]
		mig, err := j.getGroup(ctx, d.Project, d.Zone, d.Name)
		if gceapi.Classify(err) == gceapi.NotFound {
			return j.update(ctx, func(s *State) { delete(s.Groups, d.key()) })
		}
		if err != nil {
			return fmt.Errorf("drained group %s in %s: %w", d.Name, d.Zone, err)
		}
		if err := j.ownGroup(mig, d); err != nil {
			return fmt.Errorf("drained group: %w", err)
		}
		mis, err := j.managed(ctx, d.Project, d.Zone, d.Name)
		if err != nil {
			return err
		}
		if mig.GetTargetSize() > 0 || len(mis) > 0 {
			return nil // remove-cataloged-instances is emptying it
		}
		req := &computepb.DeleteInstanceGroupManagerRequest{Project: d.Project, Zone: d.Zone, InstanceGroupManager: d.Name, RequestId: new(gceapi.RequestID())}
		err = j.mutate(ctx, d.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.Delete(ctx, req) })
		if err != nil && gceapi.Classify(err) != gceapi.NotFound {
			return fmt.Errorf("deleting drained group %s in %s: %w", d.Name, d.Zone, err)
		}
		j.changes.Add(1)
		j.Log.Info("deleted drained instance group manager", "group", d.Name, "zone", d.Zone)
		return j.update(ctx, func(s *State) {
			delete(s.Groups, d.key())
			// It held no instance: those pending deletion are gone.
			for host := range s.Pending {
				if !ofAnyGroup(s, host) {
					delete(s.Pending, host)
				}
			}
		})
	})
}
