package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/store"
)

// CatalogInstances is the catalog-instances job. It adds every running instance of the configured groups
// to the provider's catalog, with its template's dimensions and where it
// stands. Cataloging is idempotent, so the job just runs again.
//
// A cataloged machine that is idle and no longer RUNNING in its group
// (preempted, or deleted behind the backend's back) leaves the catalog,
// so that nobody leases a machine that is gone.
func (j *Jobs) CatalogInstances(ctx context.Context) error {
	j.cataloging.Lock() // see DeleteIdleInstances
	defer j.cataloging.Unlock()
	gs, err := j.groups()
	if err != nil {
		return err
	}
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
		mis, err := j.fetchInstances(ctx, g.t.Project, g.m.Zone, g.rev)
		if err != nil {
			if gcecompute.Classify(err) == gcecompute.NotFound {
				return nil
			}
			return fmt.Errorf("instances of %s in %s: %w", g.rev, g.m.Zone, err)
		}
		var errs []error
		running := map[string]string{} // name -> instance id
		ids := map[string]string{}     // name -> instance id, whatever its status
		failing := ""
		for _, mi := range mis {
			if mi.GetId() != 0 {
				ids[gcecompute.LastSegment(mi.GetInstance())] = strconv.FormatUint(mi.GetId(), 10)
			}
			if mi.GetInstanceStatus() == "RUNNING" && mi.GetCurrentAction() == "NONE" {
				running[gcecompute.LastSegment(mi.GetInstance())] = strconv.FormatUint(mi.GetId(), 10)
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
			// A leased machine whose instance the group lists under
			// another id was deleted behind the backend's back, or
			// preempted, and recreated: the lease's machine is gone, and
			// its client learns it from the lease ending RECLAIMED. The
			// new instance is a new machine, cataloged below.
			if id, ok := ids[host]; ok && m.State == store.Leased && !slices.Contains(m.Dimensions["instance_id"], id) {
				lease, err := j.Provider.MachineGone(ctx, host)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					errs = append(errs, fmt.Errorf("reporting leased %s gone (instance %v replaced by %s): %w", host, m.Dimensions["instance_id"], id, err))
					continue
				}
				delete(mine, host)
				j.Log.Warn("a leased machine's instance was replaced behind the backend's back (deleted or preempted); its lease ended RECLAIMED", "instance", host,
					"old_id", m.Dimensions["instance_id"], "new_id", id, "lease", lease)
				continue
			}
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
			name := gcecompute.LastSegment(mi.GetInstance())
			if _, ok := mine[name]; running[name] != "" && st.Pending[name].IsZero() && !ok {
				// Only what the group made from this deployment's
				// template, whose contents were checked.
				if err := ofTemplate(mi, g.record()); err != nil {
					errs = append(errs, fmt.Errorf("%w: not cataloged", err))
					continue
				}
				add = append(add, name)
			}
		}
		instances, err := j.instances(ctx, g, add)
		if err != nil {
			errs = append(errs, err)
		}
		if g.t.GceBoot {
			// A pool machine is cataloged once it serves with its fleet
			// certificate (see EnrollInstances); before, nobody could
			// claim it.
			add = j.warm(ctx, g, add, instances)
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
			if g.t.GceBoot {
				j.poolAddr(name, net.JoinHostPort(m.Connection.Address, strconv.Itoa(m.Connection.Port)))
			}
			if err := j.sizeDims(ctx, g, m.Dimensions); err != nil {
				errs = append(errs, err)
				continue
			}
			batch = append(batch, m)
		}
		// One call for the group's new instances (a group holds at most
		// 1,000, a batch's limit), unless the configuration changed under
		// this pass: then the group drains.
		configured := false
		if len(batch) > 0 {
			if configured, err = j.configured(g); err != nil {
				errs = append(errs, err)
			}
		}
		if configured {
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
			s.Current, s.Leased, s.Idle, s.Failing, s.Booting = len(mis), leased, idle, failing, len(mis)-len(running)
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
			case gcecompute.Classify(err) != gcecompute.NotFound:
				return out, err
			}
		}
		return out, nil
	}
	var all []*computepb.Instance
	err := j.retry(ctx, g.t.Project, func() error {
		var err error
		all, err = gcecompute.All(j.Compute.Instances.List(ctx, &computepb.ListInstancesRequest{Project: g.t.Project, Zone: g.m.Zone,
			Filter: new(fmt.Sprintf("(labels.%s = %q) AND (labels.%s = %q)", RevisionLabel, revisionHash(g.rev), DeploymentLabel, g.deployment))}))
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

// groupDims are the dimensions every machine of g has: where and from
// what it is made, the template's own, and, for a gceboot template, the
// pool's. The catalog entry, the offer and the match of waiting requests
// to groups all start from them, so that what is offered is what comes.
func (g group) groupDims() store.Dimensions {
	dims := store.Dimensions{
		"project": {g.t.Project}, "zone": {g.m.Zone}, "template": {g.t.BaseName},
		"revision": {g.rev}, "machine_type": {g.t.MachineType},
	}
	for k, v := range g.t.Dimensions {
		dims[k] = append(dims[k], v)
	}
	if g.t.GceBoot {
		dims[PoolDimension] = []string{"true"}
	}
	return dims
}

// machine is the catalog entry of instance in of g.
func (g group) machine(in *computepb.Instance) store.Machine {
	dims := g.groupDims()
	dims["instance_id"] = []string{strconv.FormatUint(in.GetId(), 10)}
	m := store.Machine{Hostname: in.GetName(), Dimensions: dims, Policies: store.Policies{OnReclaim: "DELETE"}}
	if nics := in.GetNetworkInterfaces(); len(nics) > 0 {
		m.Connection.Address = nics[0].GetNetworkIP()
	}
	if g.t.GceBoot {
		// A driver verifies the machine by the fleet CA and claims it
		// on its gceboot's port.
		m.Connection.Port, m.Connection.CACert = PoolPort, string(g.t.fleetCA)
	}
	return m
}
