package backend

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"
	"golang.org/x/time/rate"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/identity"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// Jobs are the backend's reconcile steps, each idempotent: run again, it
// makes no change once GCE matches the configuration. They share the
// configuration in force and the backend's State.
type Jobs struct {
	Compute  *gcecompute.Client
	Provider *client.Client // nil: jobs that need the catalog fail
	Log      *slog.Logger

	// Concurrency bounds how many managers a job works on at once.
	Concurrency int
	// Now is the clock.
	Now func() time.Time

	mu         sync.Mutex
	cfg        Config
	deployment string // the identity everything it makes carries
	database   string // the identity of its provider database (DatabaseLabel)
	st         State
	save       func(context.Context, State) error
	limiters   map[string]*rate.Limiter
	stats      map[string]GroupStats // by group key, from the last passes
	changes    atomic.Int64          // Compute changes made, so that jobs kick others only then

	machineTypes map[string]*computepb.MachineType // by zone/name

	pool      *poolInfo          // what gceboot templates need; see LoadPool
	poolStore *store.Store       // where the fleet CA is kept
	verifier  *identity.Verifier // of pool machines' identity proofs
	enrolled  map[string]string  // pool machine -> instance id, enrolled by this replica
	poolAddrs map[string]string  // pool machine -> host:port, to retire it
	// silentSince is when each running pool instance (name/id) was first
	// found not serving its enrollment; zero once warned of.
	silentSince map[string]time.Time
}

// GroupStats is what the last passes saw of a group.
type GroupStats struct {
	Target  int // the group's target size
	Current int // instances in the group
	Leased  int // of them, leased in the catalog
	Idle    int // cataloged and available
	// Failing is why the group cannot create instances (a stockout or
	// quota, from its instances' last attempts), if it cannot; while it
	// is set the group is not grown.
	Failing string
}

// Stats returns the last seen state of each group the backend made, by
// project/zone/name.
func (j *Jobs) Stats() map[string]GroupStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return maps.Clone(j.stats)
}

func (j *Jobs) setStats(key string, change func(*GroupStats)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stats == nil {
		j.stats = map[string]GroupStats{}
	}
	gs := j.stats[key]
	change(&gs)
	j.stats[key] = gs
}

// NewJobs returns jobs for cfg with an empty state kept in memory, for
// the deployment settings.deployment names or, if it names none, for a
// deployment of their own (a random identity): SetDeployment sets the one
// a store keeps.
func NewJobs(compute *gcecompute.Client, prov *client.Client, cfg Config, log *slog.Logger) *Jobs {
	id := cfg.Settings.Deployment
	if id == "" {
		id = newDeploymentID()
	}
	return &Jobs{Compute: compute, Provider: prov, Log: log, Concurrency: 8, Now: time.Now, cfg: cfg, deployment: id, st: newState(), limiters: map[string]*rate.Limiter{}}
}

// Config returns the configuration in force.
func (j *Jobs) Config() Config {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cfg
}

// SetConfig puts cfg in force; the next run of each job works to it.
func (j *Jobs) SetConfig(cfg Config) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.cfg = j.withPool(cfg)
	for _, l := range j.limiters {
		l.SetLimit(rate.Limit(cfg.Settings.ComputeRate))
	}
}
