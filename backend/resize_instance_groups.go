package backend

import (
	"context"
	"fmt"
	"math"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/store"
)

// Need is what a group's Target is reckoned from.
type Need struct {
	// Size is the group's target size now.
	Size int
	// Leased is how many of the group's machines are leased.
	Leased int
	// Pending is how many waiting lease requests are assigned to the
	// group: each grows exactly one group by one.
	Pending int
	// MinIdle is how many machines the group keeps AVAILABLE beyond
	// what is leased and waited for.
	MinIdle int
	// Minimum and Maximum are the group's bounds (the manager's, or its
	// schedule window's minimum).
	Minimum, Maximum int
	// Others is what older revisions of the template in the zone still
	// hold of the maximum.
	Others int
}

// Target is the size a group should have (the LUCI GCE Backend's rule,
// with demand): room for a tenth more than its leased machines, plus the
// requests waiting for it, plus its idle spare, at least the minimum, at
// most the maximum less what older revisions in the zone still hold (so a
// rollout grows the new revision as the old drains), growing by at most
// 100 at a time. It never shrinks a group: shrinking deletes instances
// GCE picks, leased ones among them; a group loses instances only by
// deleteInstances of ones known idle.
func Target(n Need) int {
	want := min(Keep(n), n.Maximum-n.Others, n.Size+100)
	return max(want, n.Size)
}

// Keep is how many machines a group needs: at least the minimum, room
// for a tenth more than its leased machines, plus the requests waiting
// for it, plus its idle spare. A group grows to it (see [Target]), and
// its machines idle beyond it are what delete-idle-instances may delete.
func Keep(n Need) int {
	return max(n.Minimum, int(math.Ceil(float64(n.Leased)*1.1))+n.Pending+n.MinIdle)
}

// ResizeInstanceGroups is the resize-instance-groups job: it grows each
// configured group to its Target.
func (j *Jobs) ResizeInstanceGroups(ctx context.Context) error {
	leased, err := j.leasedByGroup(ctx)
	if err != nil {
		return err
	}
	gs, err := j.groups()
	if err != nil {
		return err
	}
	drained, err := j.drained()
	if err != nil {
		return err
	}
	st := j.state()
	demand := j.assignDemand(gs, leased)
	defer j.publishOffers(ctx, gs)
	return j.each(ctx, len(gs), func(ctx context.Context, i int) error {
		g := gs[i]
		key := g.record().key()
		if _, made := st.Groups[key]; !made {
			return nil
		}
		j.setStats(key, func(s *GroupStats) { s.Demand = demand[key] })
		// The catalog pass counted the group's instances (a group lists
		// one per unit of its target size, CREATING ones included): a
		// group at rest, with no demand assigned, costs no call here.
		if seen, ok := j.Stats()[key]; ok && seen.Current > 0 && len(drained) == 0 &&
			Target(g.need(seen.Current, leased[key], demand[key], 0)) == seen.Current {
			// The list has one instance per unit of target size, so the
			// group's target is what it holds.
			j.setStats(key, func(s *GroupStats) { s.Target = seen.Current })
			return nil
		}
		mig, err := j.getGroup(ctx, g.t.Project, g.m.Zone, g.rev)
		if err != nil {
			if gcecompute.Classify(err) == gcecompute.NotFound {
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
		want := Target(g.need(size, leased[key], demand[key], others))
		j.setStats(key, func(s *GroupStats) { s.Target = size })
		if want == size {
			return nil
		}
		if failing := j.Stats()[key].Failing; failing != "" && want > g.w.MinimumSize {
			// The zone has no room (stockout, quota): asking for more
			// would only queue more failures. Back off until it has.
			return nil
		}
		req := &computepb.ResizeInstanceGroupManagerRequest{Project: g.t.Project, Zone: g.m.Zone, InstanceGroupManager: g.rev,
			Size: int32(want), RequestId: new(gcecompute.RequestID())}
		err = j.mutate(ctx, g.t.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.Resize(ctx, req) })
		if err != nil {
			return fmt.Errorf("resizing %s in %s: %w", g.rev, g.m.Zone, err)
		}
		j.changes.Add(1)
		j.setStats(key, func(s *GroupStats) { s.Target = want })
		j.Log.Info("resized group", "group", g.rev, "zone", g.m.Zone, "from", size, "to", want, "leased", leased[key], "demand", demand[key])
		return nil
	})
}

// need is what group g's Target is reckoned from, given its size, its
// leased machines, the waiting requests assigned to it and what older
// revisions in its zone hold: the minimum and idle spare are those of the
// manager's window in force.
func (g group) need(size, leased, pending, others int) Need {
	return Need{Size: size, Leased: leased, Pending: pending, Others: others, Minimum: g.w.MinimumSize, MinIdle: g.w.MinIdle, Maximum: g.m.MaximumSize}
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
