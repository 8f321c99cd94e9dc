package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// DeleteIdleInstances is the delete-idle-instances job. For each group
// whose manager sets idle_timeout, it takes out of the catalog the
// machines AVAILABLE for that long while the group holds more than it
// needs (its window's minimum_size, a tenth above what is leased, the
// requests waiting for it and its min_idle: see [Keep]), oldest first
// and no more than the surplus, and records them for deletion, which
// delete-instances-pending-deletion does by name through the group's
// deleteInstances. A group is never shrunk by lowering its target size.
//
// The provider removes a machine only while it is AVAILABLE, in one
// transaction: a machine leased meanwhile stays leased and is left
// alone, so no machine is ever deleted under a lease. The job holds the
// catalog lock that catalog-instances holds, so that a machine taken out
// is recorded for deletion before catalog-instances can see it running
// and uncataloged, and catalog it again.
//
// A machine is never AVAILABLE again once leased (a lease's end takes it
// out of the catalog, and the backend deletes it), so the time it was
// cataloged is how long it has been idle.
func (j *Jobs) DeleteIdleInstances(ctx context.Context) error {
	gs, err := j.groups()
	if err != nil {
		return err
	}
	// gceboot groups always: their warm machines go before their fleet
	// certificates expire (see stalePool).
	gs = slices.DeleteFunc(gs, func(g group) bool { return g.m.IdleTimeout <= 0 && !g.t.GceBoot })
	if len(gs) == 0 || j.Provider == nil {
		return nil // a fleet without idle_timeout costs nothing here
	}
	j.cataloging.Lock()
	defer j.cataloging.Unlock()
	all, err := j.Provider.Machines(ctx)
	if err != nil {
		return fmt.Errorf("the provider's catalog: %w", err)
	}
	byGroup := catalogByGroup(all)
	st := j.state()
	now := j.now()
	var errs []error
	for _, g := range gs {
		key := g.record().key()
		if _, made := st.Groups[key]; !made {
			continue
		}
		demand := j.Stats()[key].Demand
		victims, leased, size := g.idleSurplus(byGroup[key], st.Pending, demand, now)
		victims = append(victims, g.stalePool(byGroup[key], st.Pending, victims, now)...)
		if len(victims) == 0 {
			continue
		}
		var retired []string
		for _, m := range victims {
			err := j.Provider.DeleteMachine(ctx, m.Hostname)
			switch {
			case err == nil:
				retired = append(retired, m.Hostname)
			case errors.Is(err, store.ErrLeased), errors.Is(err, store.ErrNotFound):
				// Leased since the catalog was read, or gone: not idle.
			default:
				errs = append(errs, fmt.Errorf("taking idle %s out of the catalog: %w", m.Hostname, err))
			}
		}
		if len(retired) == 0 {
			continue
		}
		if err := j.update(ctx, func(s *State) {
			for _, h := range retired {
				s.Pending[h] = now
			}
		}); err != nil {
			// Out of the catalog but not recorded: catalog-instances
			// catalogs them again, idle from now.
			errs = append(errs, err)
			continue
		}
		j.setStats(key, func(s *GroupStats) { s.IdleDeleted += len(retired) })
		j.Log.Info("deleting idle instances", "group", g.rev, "zone", g.m.Zone, "count", len(retired), "leased", leased, "cataloged", size,
			"demand", demand, "keep", Keep(g.need(size, leased, demand, 0)), "idle_timeout", g.m.IdleTimeout, "window", g.w.Name)
	}
	return errors.Join(errs...)
}

// idleSurplus returns the machines of g, of catalog ms, that
// delete-idle-instances takes out at now: AVAILABLE for idle_timeout,
// oldest first, no more than the cataloged machines beyond [Keep]; and
// how many of g's are leased and cataloged. Machines pending deletion do
// not count; the waiting requests assigned to g (demand) keep machines
// for them.
func (g group) idleSurplus(ms []store.Machine, pending map[string]time.Time, demand int, now time.Time) (victims []store.Machine, leased, size int) {
	if g.m.IdleTimeout <= 0 {
		return nil, 0, 0
	}
	var idle []store.Machine
	for _, m := range ms {
		if !pending[m.Hostname].IsZero() {
			continue
		}
		size++
		switch {
		case m.State == store.Leased:
			leased++
		case m.State == store.Available && !m.Added.IsZero() && now.Sub(m.Added) >= g.m.IdleTimeout:
			idle = append(idle, m)
		}
	}
	// The cataloged machines, not the group's target: instances still
	// being made may be what the group grew for, and are not idle yet.
	surplus := size - Keep(g.need(size, leased, demand, 0))
	if surplus <= 0 || len(idle) == 0 {
		return nil, leased, size
	}
	slices.SortFunc(idle, func(a, b store.Machine) int { return a.Added.Compare(b.Added) })
	return idle[:min(surplus, len(idle))], leased, size
}

// poolMaxAge is how long a warm pool machine stays cataloged: half its
// fleet certificate's validity, which began before it was cataloged, so
// that a machine leased just before is claimed while its certificate
// holds. Its group makes a fresh one in its place.
const poolMaxAge = FleetCertValidity / 2

// stalePool returns the machines of gceboot group g, of catalog ms,
// AVAILABLE since poolMaxAge before now and not among taken or pending:
// a warm machine's fleet certificate is not renewed, so it is deleted
// before it expires, whatever the group needs.
func (g group) stalePool(ms []store.Machine, pending map[string]time.Time, taken []store.Machine, now time.Time) []store.Machine {
	if !g.t.GceBoot {
		return nil
	}
	var out []store.Machine
	for _, m := range ms {
		if m.State == store.Available && !m.Added.IsZero() && now.Sub(m.Added) >= poolMaxAge && pending[m.Hostname].IsZero() &&
			!slices.ContainsFunc(taken, func(t store.Machine) bool { return t.Hostname == m.Hostname }) {
			out = append(out, m)
		}
	}
	return out
}

// catalogByGroup sorts the backend's catalog by group key.
func catalogByGroup(ms []store.Machine) map[string][]store.Machine {
	out := map[string][]store.Machine{}
	for _, m := range ms {
		d := m.Dimensions
		if len(d["project"]) == 0 || len(d["zone"]) == 0 || len(d["revision"]) == 0 {
			continue
		}
		k := d["project"][0] + "/" + d["zone"][0] + "/" + d["revision"][0]
		out[k] = append(out[k], m)
	}
	return out
}

// PlanIdle returns what delete-idle-instances would do now with catalog
// ms (the provider's machines of this backend): a delete-idle change for
// each group with idle machines beyond what it needs.
func (j *Jobs) PlanIdle(ms []store.Machine) ([]Change, error) {
	gs, err := j.groups()
	if err != nil {
		return nil, err
	}
	byGroup := catalogByGroup(ms)
	st := j.state()
	now := j.now()
	var out []Change
	for _, g := range gs {
		// A preview knows no demand: the job keeps machines for the
		// requests waiting when it runs.
		victims, leased, size := g.idleSurplus(byGroup[g.record().key()], st.Pending, 0, now)
		if len(victims) == 0 {
			continue
		}
		names := make([]string, len(victims))
		for i, m := range victims {
			names[i] = m.Hostname
		}
		out = append(out, Change{"delete-idle", g.rev + " in " + g.m.Zone, fmt.Sprintf("%d idle past idle_timeout %v of %d cataloged (%d leased), the group needing %d: %s",
			len(victims), g.m.IdleTimeout, size, leased, Keep(g.need(size, leased, 0, 0)), strings.Join(names, ", "))})
	}
	return out, nil
}
