package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	gceapi "github.com/gcefleet/gcefleet/gce"
	"github.com/gcefleet/gcefleet/store"
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

// CatalogInstances adds every running instance of the configured groups
// to the provider's catalog, with its template's dimensions and where it
// stands. Cataloging is idempotent, so the job just runs again.
//
// A cataloged machine that is idle and no longer RUNNING in its group
// (preempted, or deleted behind the backend's back) leaves the catalog,
// so that nobody leases a machine that is gone.
func (j *Jobs) CatalogInstances(ctx context.Context) error {
	gs := j.groups()
	st := j.state()
	all, err := j.Provider.Machines(ctx)
	if err != nil {
		return fmt.Errorf("the provider's catalog: %w", err)
	}
	cataloged := map[string]map[string]store.Machine{} // by group key, hostname
	for _, m := range all {
		d := m.Dimensions
		if len(d["project"]) == 0 || len(d["zone"]) == 0 || len(d["revision"]) == 0 {
			continue
		}
		k := d["project"][0] + "/" + d["zone"][0] + "/" + d["revision"][0]
		if cataloged[k] == nil {
			cataloged[k] = map[string]store.Machine{}
		}
		cataloged[k][m.Hostname] = m
	}
	return j.each(ctx, len(gs), func(ctx context.Context, i int) error {
		g := gs[i]
		if _, made := st.Groups[g.record().key()]; !made {
			return nil
		}
		mis, err := j.managed(ctx, g.t.Project, g.m.Zone, g.rev)
		if err != nil {
			if gceapi.Classify(err) == gceapi.NotFound {
				return nil
			}
			return fmt.Errorf("instances of %s in %s: %w", g.rev, g.m.Zone, err)
		}
		var errs []error
		running := map[string]string{} // name -> instance id
		failing := ""
		for _, mi := range mis {
			if mi.GetInstanceStatus() == "RUNNING" && mi.GetCurrentAction() == "NONE" {
				running[gceapi.LastSegment(mi.GetInstance())] = strconv.FormatUint(mi.GetId(), 10)
			}
			for _, e := range mi.GetLastAttempt().GetErrors().GetErrors() {
				if mi.GetCurrentAction() == "CREATING" {
					failing = e.GetCode() + ": " + e.GetMessage()
				}
			}
		}
		mine := cataloged[g.record().key()]
		if failing != "" {
			j.Log.Warn("group cannot create instances; not growing it until it can", "group", g.rev, "zone", g.m.Zone, "err", failing)
		}

		for host, m := range mine {
			// A group recreates a lost instance under its name: the id
			// tells the new one from the entry of the old.
			if id, ok := running[host]; (!ok || !slices.Contains(m.Dimensions["instance_id"], id)) && m.State == store.Available {
				delete(mine, host)
				if err := j.Provider.DeleteMachine(ctx, host); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrLeased) {
					errs = append(errs, fmt.Errorf("removing gone %s from the catalog: %w", host, err))
				} else if err == nil {
					j.Log.Info("removed a machine that is no longer running from the catalog", "instance", host)
				}
			}
		}
		leased, idle := 0, 0
		for _, m := range mine {
			if m.State == store.Leased {
				leased++
			} else {
				idle++
			}
		}
		var add []string
		for _, mi := range mis {
			name := gceapi.LastSegment(mi.GetInstance())
			if _, ok := mine[name]; running[name] != "" && st.Pending[name].IsZero() && !ok {
				add = append(add, name)
			}
		}
		instances, err := j.instances(ctx, g, add)
		if err != nil {
			errs = append(errs, err)
		}
		var batch []store.Machine
		for _, name := range add {
			in, ok := instances[name]
			if !ok {
				continue // gone since it was listed
			}
			if !j.ownInstance(in) {
				errs = append(errs, fmt.Errorf("instance %s in %s of group %s carries %s=%q, not this deployment's %q: not cataloged", name, g.m.Zone, g.rev,
					DeploymentLabel, in.GetLabels()[DeploymentLabel], g.deployment))
				continue
			}
			m := g.machine(in)
			if err := j.sizeDims(ctx, g, m.Dimensions); err != nil {
				errs = append(errs, err)
				continue
			}
			batch = append(batch, m)
		}
		// One call for the group's new instances (a group holds at most
		// 1,000, a batch's limit), unless the configuration changed under
		// this pass: then the group drains.
		if len(batch) > 0 && j.configured(g) {
			added, addErrs, err := j.Provider.AddMachines(ctx, batch)
			if err != nil {
				errs = append(errs, fmt.Errorf("cataloging %d instances: %w", len(batch), err))
			}
			for i, err := range addErrs {
				switch {
				case err == nil && added[i].State == store.Leased:
					leased++ // at once, to a waiting request
				case err == nil:
					idle++
				// A reclaimed instance still running until its deletion
				// is refused by the provider: it is on its way out.
				case !errors.Is(err, store.ErrReclaimed):
					errs = append(errs, fmt.Errorf("cataloging %s: %w", batch[i].Hostname, err))
				}
			}
		}
		j.setStats(g.record().key(), func(s *GroupStats) {
			s.Current, s.Leased, s.Idle, s.Failing = len(mis), leased, idle, failing
		})
		return errors.Join(errs...)
	})
}

// instances reads the named instances of g: one by one when they are
// few, else in one filtered list of the zone (a fleet growing by a
// hundred costs a call, not a hundred).
func (j *Jobs) instances(ctx context.Context, g group, names []string) (map[string]*computepb.Instance, error) {
	out := map[string]*computepb.Instance{}
	if len(names) <= 2 {
		for _, name := range names {
			var in *computepb.Instance
			err := j.retry(ctx, g.t.Project, func() error {
				var err error
				in, err = j.Compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: g.t.Project, Zone: g.m.Zone, Instance: name})
				return err
			})
			switch {
			case err == nil:
				out[name] = in
			case gceapi.Classify(err) != gceapi.NotFound:
				return out, err
			}
		}
		return out, nil
	}
	var all []*computepb.Instance
	err := j.retry(ctx, g.t.Project, func() error {
		var err error
		all, err = gceapi.All(j.Compute.Instances.List(ctx, &computepb.ListInstancesRequest{Project: g.t.Project, Zone: g.m.Zone,
			Filter: new(fmt.Sprintf("(labels.%s = %q) AND (labels.%s = %q)", RevisionLabel, g.t.hash(g.deployment), DeploymentLabel, g.deployment))}))
		return err
	})
	for _, in := range all {
		out[in.GetName()] = in
	}
	return out, err
}

// sizeDims adds the machine type's cpus and memory_gb, and the disk's
// disk_gb, to dims. Machine types are read once per zone.
func (j *Jobs) sizeDims(ctx context.Context, g group, dims store.Dimensions) error {
	key := g.m.Zone + "/" + g.t.MachineType
	j.mu.Lock()
	mt, ok := j.machineTypes[key]
	j.mu.Unlock()
	if !ok {
		err := j.retry(ctx, g.t.Project, func() error {
			var err error
			mt, err = j.Compute.MachineTypes.Get(ctx, &computepb.GetMachineTypeRequest{Project: g.t.Project, Zone: g.m.Zone, MachineType: g.t.MachineType})
			return err
		})
		if err != nil {
			return fmt.Errorf("machine type %s in %s: %w", g.t.MachineType, g.m.Zone, err)
		}
		j.mu.Lock()
		if j.machineTypes == nil {
			j.machineTypes = map[string]*computepb.MachineType{}
		}
		j.machineTypes[key] = mt
		j.mu.Unlock()
	}
	// What the template declares itself wins.
	set := func(k, v string) {
		if _, ok := dims[k]; !ok {
			dims[k] = []string{v}
		}
	}
	set("cpus", strconv.Itoa(int(mt.GetGuestCpus())))
	set("memory_gb", strconv.FormatFloat(float64(mt.GetMemoryMb())/1024, 'f', -1, 64))
	if g.t.Disk.SizeGB > 0 {
		set("disk_gb", strconv.FormatInt(g.t.Disk.SizeGB, 10))
	}
	return nil
}

// machine is the catalog entry of instance in of g.
func (g group) machine(in *computepb.Instance) store.Machine {
	dims := store.Dimensions{
		"project": {g.t.Project}, "zone": {g.m.Zone}, "template": {g.t.BaseName},
		"revision": {g.rev}, "machine_type": {g.t.MachineType},
		"instance_id": {strconv.FormatUint(in.GetId(), 10)},
	}
	for k, v := range g.t.Dimensions {
		dims[k] = append(dims[k], v)
	}
	m := store.Machine{Hostname: in.GetName(), Dimensions: dims, Policies: store.Policies{OnReclaim: "DELETE"}}
	if nics := in.GetNetworkInterfaces(); len(nics) > 0 {
		m.Connection.Address = nics[0].GetNetworkIP()
	}
	return m
}

// Reclaimed records for deletion the instances whose lease the provider
// reclaimed, from its events, and moves the cursor past them
// (update-cataloged-instances). It reports whether any was recorded.
func (j *Jobs) Reclaimed(ctx context.Context, events []store.Event) (bool, error) {
	if len(events) == 0 {
		return false, nil
	}
	now := j.now()
	any := false
	err := j.update(ctx, func(s *State) {
		for _, e := range events {
			if e.Kind == "reclaimed" && e.OnReclaim != "RECYCLE" && s.Pending[e.Hostname].IsZero() {
				s.Pending[e.Hostname] = now
				any = true
			}
		}
		s.Cursor = events[len(events)-1].ID
	})
	return any, err
}

// DeletePending deletes the instances pending deletion through their
// groups' deleteInstances (so that the group does not replace them until
// it is resized), again on each run until they are gone, and forgets them
// then. An instance of no group of the backend's is left alone.
func (j *Jobs) DeletePending(ctx context.Context) error {
	st := j.state()
	if len(st.Pending) == 0 {
		return nil
	}
	groups := make([]GroupRecord, 0, len(st.Groups))
	for _, g := range st.Groups {
		groups = append(groups, g)
	}
	return j.each(ctx, len(groups), func(ctx context.Context, i int) error {
		g := groups[i]
		mine := 0
		for host := range st.Pending {
			if strings.HasPrefix(host, g.prefix()) {
				mine++
			}
		}
		if mine == 0 {
			return nil
		}
		mis, err := j.managed(ctx, g.Project, g.Zone, g.Name)
		if err != nil && gceapi.Classify(err) != gceapi.NotFound {
			return fmt.Errorf("instances of %s in %s: %w", g.Name, g.Zone, err)
		}
		present := map[string]bool{}
		var urls []string
		var errs []error
		for _, mi := range mis {
			name := gceapi.LastSegment(mi.GetInstance())
			if st.Pending[name].IsZero() {
				continue
			}
			present[name] = true
			if err := ofTemplate(mi, g); err != nil {
				errs = append(errs, err)
				continue
			}
			if mi.GetCurrentAction() != "DELETING" && mi.GetCurrentAction() != "ABANDONING" {
				urls = append(urls, mi.GetInstance())
			}
		}
		if err := j.forgetGone(ctx, g, st, present); err != nil {
			return err
		}
		if len(urls) == 0 {
			return errors.Join(errs...)
		}
		req := &computepb.DeleteInstancesInstanceGroupManagerRequest{Project: g.Project, Zone: g.Zone, InstanceGroupManager: g.Name,
			RequestId: new(gceapi.RequestID()),
			InstanceGroupManagersDeleteInstancesRequestResource: &computepb.InstanceGroupManagersDeleteInstancesRequest{Instances: urls}}
		err = j.mutate(ctx, g.Project, func() (*computeapi.Operation, error) { return j.Compute.Groups.DeleteInstances(ctx, req) })
		if err != nil {
			return fmt.Errorf("deleting %d instances of %s in %s: %w", len(urls), g.Name, g.Zone, err)
		}
		j.changes.Add(1)
		// The group is smaller now; resize-instance-groups reads this.
		j.setStats(g.key(), func(s *GroupStats) { s.Current = max(0, len(mis)-len(urls)) })
		j.Log.Info("deleted instances", "group", g.Name, "zone", g.Zone, "count", len(urls))
		return errors.Join(errs...)
	})
}

// ofTemplate checks, before an instance of g is deleted, that g made it
// from g's template, which carries the deployment's label: a group's
// instance lists say which template each instance was made from.
func ofTemplate(mi *computepb.ManagedInstance, g GroupRecord) error {
	if t := gceapi.LastSegment(mi.GetVersion().GetInstanceTemplate()); t != g.Template {
		return fmt.Errorf("instance %s of group %s in %s was made from template %q, not the group's %s: %w, left alone",
			gceapi.LastSegment(mi.GetInstance()), g.Name, g.Zone, t, g.Template, errNotOurs)
	}
	return nil
}

// forgetGone forgets the pending instances of g that it no longer holds.
// Instance names carry their group's zone, so no other group has them.
func (j *Jobs) forgetGone(ctx context.Context, g GroupRecord, st State, present map[string]bool) error {
	var gone []string
	for host := range st.Pending {
		if strings.HasPrefix(host, g.prefix()) && !present[host] {
			gone = append(gone, host)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return j.update(ctx, func(s *State) {
		for _, h := range gone {
			delete(s.Pending, h)
		}
	})
}

// RemoveDrained takes the idle instances of drained groups out of the
// catalog and records them for deletion (remove-cataloged-instances). A
// leased instance stays until its lease ends; the provider then reclaims
// it and it is deleted like any other.
//
// Entries of a drained group's machines that are no longer in the group
// (cataloged by a pass that began before the configuration changed, then
// deleted) leave the catalog too.
func (j *Jobs) RemoveDrained(ctx context.Context) error {
	ds := j.drained()
	if len(ds) == 0 {
		return nil
	}
	st := j.state()
	catalog, err := j.Provider.Machines(ctx)
	if err != nil {
		return fmt.Errorf("the provider's catalog: %w", err)
	}
	return j.each(ctx, len(ds), func(ctx context.Context, i int) error {
		d := ds[i]
		mis, err := j.managed(ctx, d.Project, d.Zone, d.Name)
		if err != nil && gceapi.Classify(err) != gceapi.NotFound {
			return fmt.Errorf("instances of drained %s in %s: %w", d.Name, d.Zone, err)
		}
		var idle []string
		var errs []error
		member := map[string]bool{}
		for _, mi := range mis {
			member[gceapi.LastSegment(mi.GetInstance())] = true
		}
		for _, m := range catalog {
			if !strings.HasPrefix(m.Hostname, d.prefix()) || member[m.Hostname] || m.State != store.Available {
				continue
			}
			if err := j.Provider.DeleteMachine(ctx, m.Hostname); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrLeased) {
				errs = append(errs, fmt.Errorf("removing gone %s from the catalog: %w", m.Hostname, err))
			}
		}
		for _, mi := range mis {
			name := gceapi.LastSegment(mi.GetInstance())
			if !st.Pending[name].IsZero() {
				continue
			}
			if err := ofTemplate(mi, d); err != nil {
				errs = append(errs, err)
				continue
			}
			err := j.Provider.DeleteMachine(ctx, name)
			switch {
			case err == nil, errors.Is(err, store.ErrNotFound):
				idle = append(idle, name)
			case errors.Is(err, store.ErrLeased):
			default:
				errs = append(errs, fmt.Errorf("removing %s from the catalog: %w", name, err))
			}
		}
		if len(idle) > 0 {
			now := j.now()
			if err := j.update(ctx, func(s *State) {
				for _, h := range idle {
					s.Pending[h] = now
				}
			}); err != nil {
				return err
			}
			j.Log.Info("draining group", "group", d.Name, "zone", d.Zone, "idle", len(idle), "instances", len(mis))
		}
		return errors.Join(errs...)
	})
}
