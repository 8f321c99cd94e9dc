package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/store"
)

// RemoveCatalogedInstances is the remove-cataloged-instances job. It takes
// the idle instances of drained groups out of the catalog and records them
// for deletion. A
// leased instance stays until its lease ends; the provider then reclaims
// it and it is deleted like any other.
//
// Entries of a drained group's machines that are no longer in the group
// (cataloged by a pass that began before the configuration changed, then
// deleted) leave the catalog too.
func (j *Jobs) RemoveCatalogedInstances(ctx context.Context) error {
	ds, err := j.drained()
	if err != nil {
		return err
	}
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
		mis, err := j.fetchInstances(ctx, d.Project, d.Zone, d.Name)
		if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
			return fmt.Errorf("instances of drained %s in %s: %w", d.Name, d.Zone, err)
		}
		var idle []string
		var errs []error
		member := map[string]bool{}
		for _, mi := range mis {
			member[gcecompute.LastSegment(mi.GetInstance())] = true
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
			name := gcecompute.LastSegment(mi.GetInstance())
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
