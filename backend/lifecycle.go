package backend

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// Options say how Run finds its configuration and state.
type Options struct {
	// ConfigPath is the configuration file, read again when it changes
	// and on Reload; a file that does not parse leaves the last good
	// configuration in force.
	ConfigPath string
	// Reload asks for the file to be read now (SIGHUP).
	Reload <-chan struct{}
	// Store keeps the backend's state and elects its leader among
	// replicas; nil keeps the state in memory, for one replica.
	Store *store.Store
	// Replica names this replica in the election.
	Replica string
	// LeaderTTL is how long a leader that stops renewing keeps its
	// leadership (default 15s); others take over after it.
	LeaderTTL time.Duration
	// Registry, if set, gets the backend's metrics.
	Registry prometheus.Registerer
	// StartErr is why the file was refused at start, when the backend
	// runs on the last good configuration from the store instead.
	StartErr error
	// Deployment is the deployment's identity, as Deployment returned it
	// from Store; empty: Run gets it from Store when it first leads (or,
	// without a Store, it is the jobs' own; see NewJobs).
	Deployment string
}

// Backend is a running GCE Backend.
type Backend struct {
	jobs  *Jobs
	sched *Scheduler
	log   *slog.Logger
	opts  Options

	mu        sync.Mutex
	leader    bool
	configErr error
	loaded    time.Time
	hash      [32]byte
	good      []byte // the last good file, kept in the store by the leader
	running   sync.WaitGroup

	convergedAt time.Time // first convergence since the configuration was loaded

	m struct {
		configOK  prometheus.Gauge
		leader    prometheus.Gauge
		converge  prometheus.Gauge
		converged prometheus.Gauge
	}
}

// Run runs the backend for cfg until ctx ends: while this replica leads,
// the reconcile jobs run on their interval and at once when their input
// changes (a lease reclaimed, the configuration changed), so that a
// reclaimed machine is deleted and replaced within seconds.
func Run(ctx context.Context, cfg Config, compute *gcecompute.Client, prov *client.Client, opts Options, log *slog.Logger) *Backend {
	if opts.LeaderTTL == 0 {
		opts.LeaderTTL = 15 * time.Second
	}
	if opts.Replica == "" {
		host, _ := os.Hostname()
		opts.Replica = fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano())
	}
	b := &Backend{jobs: NewJobs(compute, prov, cfg, log), log: log, opts: opts, loaded: time.Now(), configErr: opts.StartErr}
	if opts.Deployment != "" {
		b.jobs.SetDeployment(opts.Deployment)
	}
	if opts.ConfigPath != "" {
		if data, err := os.ReadFile(opts.ConfigPath); err == nil {
			b.hash = sha256.Sum256(data)
			if opts.StartErr == nil {
				b.good = data
			}
		}
	}
	b.sched = b.schedule()
	b.metrics(compute)
	b.running.Go(func() { b.watchConfig(ctx) })
	b.running.Go(func() { b.lead(ctx) })
	return b
}

// Wait waits, once ctx has ended, until the backend has stopped: its jobs
// ended and its leadership given up, so that another replica takes over
// at once. Call it before closing the store.
func (b *Backend) Wait() { b.running.Wait() }

// runLeader loads the state and runs the jobs and the event follower
// until ctx ends.
func (b *Backend) runLeader(ctx context.Context) {
	defer b.setLeader(false)
	if st := b.opts.Store; st != nil {
		for {
			err := b.identify(ctx, st)
			if err == nil {
				err = b.jobs.LoadState(ctx, st, store.Fence{Name: leaderName, Holder: b.opts.Replica})
			}
			if err == nil {
				err = b.jobs.LoadPool(ctx, st)
			}
			if err == nil {
				break
			}
			b.log.Error("loading the backend's state", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}
	if b.opts.Store == nil {
		// Failing, the enroll job tries again.
		if err := b.jobs.LoadPool(ctx, nil); err != nil {
			b.log.Error("loading what gceboot templates need", "err", err)
		}
	}
	b.saveGood(ctx)
	b.setLeader(true) // with the state loaded
	var wg sync.WaitGroup
	wg.Go(func() { b.sched.Run(ctx) })
	wg.Go(func() { b.follow(ctx) })
	wg.Wait()
}

// identify makes the jobs work for the deployment whose database st is,
// unless Options named it.
func (b *Backend) identify(ctx context.Context, st *store.Store) error {
	if b.opts.Deployment != "" {
		return nil
	}
	id, err := Deployment(ctx, st, b.jobs.Config().Settings.Deployment)
	if err != nil {
		return err
	}
	b.jobs.SetDeployment(id)
	b.mu.Lock()
	b.opts.Deployment = id
	b.mu.Unlock()
	return nil
}

// Jobs returns the backend's jobs.
func (b *Backend) Jobs() *Jobs { return b.jobs }

// Scheduler returns the backend's scheduler.
func (b *Backend) Scheduler() *Scheduler { return b.sched }

// ConfigError returns why the configuration file was last refused, or nil.
func (b *Backend) ConfigError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.configErr
}
