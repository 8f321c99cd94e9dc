package backend

import (
	"context"
	"log/slog"
	"time"

	gceapi "github.com/gcefleet/gcefleet/gce"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// Run runs the backend's jobs for cfg against Compute Engine and the
// provider until ctx ends, and returns its scheduler for status. A
// reclaimed lease kicks the deletion of its instance, the resize that
// replaces it and the cataloging of the replacement, so a machine comes
// back within seconds.
func Run(ctx context.Context, cfg Config, compute *gceapi.Client, prov *client.Client, log *slog.Logger) *Scheduler {
	j := &Jobs{Compute: compute, Config: cfg, Log: log}
	s := NewScheduler(log)
	every := cfg.Settings.Interval
	// Each step kicks the one that waits for it.
	s.Add("create-instance-templates", every, func(ctx context.Context) error {
		err := j.CreateInstanceTemplates(ctx)
		s.Kick("create-instance-group-managers")
		return err
	})
	s.Add("create-instance-group-managers", every, func(ctx context.Context) error {
		err := j.CreateInstanceGroupManagers(ctx)
		s.Kick("catalog-instances")
		return err
	})
	s.Add("resize-instance-groups", every, j.ResizeGroups)
	s.Add("catalog-instances", every, func(ctx context.Context) error {
		return j.CatalogInstances(ctx, func(ctx context.Context, m store.Machine) error {
			_, err := prov.AddMachine(ctx, m)
			return err
		})
	})
	go s.Run(ctx)
	go follow(ctx, j, s, prov, log)
	return s
}

// follow reads the provider's event feed and acts on reclaimed leases.
// The cursor starts at the feed's beginning: deletions are idempotent, so
// replaying after a restart costs calls, not machines.
func follow(ctx context.Context, j *Jobs, s *Scheduler, prov *client.Client, log *slog.Logger) {
	var after int64
	for ctx.Err() == nil {
		evs, err := prov.Events(ctx, after, 30*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("reading the provider's events", "err", err)
				select {
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
				}
			}
			continue
		}
		if len(evs) == 0 {
			continue
		}
		if err := j.DeleteReclaimed(ctx, evs); err != nil {
			log.Error("deleting reclaimed instances", "err", err)
			continue // read the same events again
		}
		after = evs[len(evs)-1].ID
		s.Kick("resize-instance-groups")
		s.Kick("catalog-instances")
	}
}
