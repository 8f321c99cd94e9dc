package backend

import (
	"context"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// configKey is where the last good configuration file is kept in the
// store, so that a replica started on a bad file runs on it.
const configKey = "gce-backend/config"

// LastGoodConfig returns the last configuration file a backend ran on,
// from st, or store.ErrNotFound.
func LastGoodConfig(ctx context.Context, st *store.Store) ([]byte, error) {
	v, err := st.Get(ctx, configKey)
	return []byte(v), err
}

// watchConfig reads the configuration file again when it changes or on
// Reload. A file that does not parse leaves the last good configuration
// in force; the error shows on the status page and in metrics.
func (b *Backend) watchConfig(ctx context.Context) {
	if b.opts.ConfigPath == "" {
		return
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-b.opts.Reload:
			forced = true
		}
		b.Reload(forced)
	}
}

// Reload reads the configuration file (import-config); unless forced,
// only if it changed, it checks it (process-config) and puts it in force:
// the jobs work to it from their next run, which is now.
func (b *Backend) Reload(forced bool) {
	data, changed, err := b.importConfig()
	if err == nil && !changed && !forced {
		return
	}
	var cfg Config
	if err == nil {
		cfg, err = b.processConfig(data)
	}
	b.mu.Lock()
	b.configErr = err
	leader := b.leader
	if err == nil {
		b.loaded, b.convergedAt, b.good = time.Now(), time.Time{}, data
	}
	b.mu.Unlock()
	if err != nil {
		b.m.configOK.Set(0)
		b.log.Error("backend configuration not loaded; the last good one stays in force", "err", err)
		return
	}
	b.m.configOK.Set(1)
	b.jobs.SetConfig(cfg)
	if leader {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b.saveGood(ctx)
		cancel()
	}
	b.log.Info("backend configuration loaded", "templates", len(cfg.Templates), "managers", len(cfg.Managers))
	for _, st := range b.sched.Status() {
		b.sched.Kick(st.Name)
	}
}

// saveGood keeps the last good file in the store.
func (b *Backend) saveGood(ctx context.Context) {
	b.mu.Lock()
	good := b.good
	b.mu.Unlock()
	if b.opts.Store == nil || good == nil {
		return
	}
	if err := b.opts.Store.Put(ctx, configKey, string(good), store.Fence{Name: leaderName, Holder: b.opts.Replica}); err != nil {
		b.log.Warn("keeping the configuration in the store", "err", err)
	}
}
