package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"html/template"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	gceapi "github.com/gcefleet/gcefleet/gce"
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

// configKey is where the last good configuration file is kept in the
// store, so that a replica started on a bad file runs on it.
const configKey = "gce-backend/config"

// LastGoodConfig returns the last configuration file a backend ran on,
// from st, or store.ErrNotFound.
func LastGoodConfig(ctx context.Context, st *store.Store) ([]byte, error) {
	v, err := st.Get(ctx, configKey)
	return []byte(v), err
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

// leaderName is the backend's name in the store's leader table.
const leaderName = "gce-backend"

// Run runs the backend for cfg until ctx ends: while this replica leads,
// the reconcile jobs run on their interval and at once when their input
// changes (a lease reclaimed, the configuration changed), so that a
// reclaimed machine is deleted and replaced within seconds.
func Run(ctx context.Context, cfg Config, compute *gceapi.Client, prov *client.Client, opts Options, log *slog.Logger) *Backend {
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
	b.m.configOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "gcefleet_backend_config_ok",
		Help: "1 if the configuration file parsed at its last reading, 0 if the last good one is in force instead."})
	b.m.leader = prometheus.NewGauge(prometheus.GaugeOpts{Name: "gcefleet_backend_leader",
		Help: "1 while this replica runs the backend's jobs."})
	b.m.converge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "gcefleet_backend_converge_seconds",
		Help: "How long the fleet took to match the configuration after it was last loaded (or the backend started)."})
	b.m.converged = prometheus.NewGauge(prometheus.GaugeOpts{Name: "gcefleet_backend_converged",
		Help: "1 when every configured group is made, at its size, fully cataloged, and nothing drains or waits for deletion."})
	b.m.configOK.Set(1)
	if opts.StartErr != nil {
		b.m.configOK.Set(0)
	}
	if opts.Registry != nil {
		opts.Registry.MustRegister(b.m.configOK, b.m.leader, b.m.converge, b.m.converged, b.sched.durations, collector{b})
		compute.Register(opts.Registry)
	}
	b.running.Go(func() { b.watchConfig(ctx) })
	b.running.Go(func() { b.lead(ctx) })
	return b
}

// Wait waits, once ctx has ended, until the backend has stopped: its jobs
// ended and its leadership given up, so that another replica takes over
// at once. Call it before closing the store.
func (b *Backend) Wait() { b.running.Wait() }

// schedule registers the jobs; each kicks the ones that wait for it.
func (b *Backend) schedule() *Scheduler {
	j, s := b.jobs, NewScheduler(b.log)
	every := j.Config().Settings.Interval
	// then runs job and, if it changed anything on Compute Engine (or
	// failed), kicks next: a fleet at rest kicks nothing.
	then := func(job func(context.Context) error, next ...string) func(context.Context) error {
		return func(ctx context.Context) error {
			before := j.changes.Load()
			err := job(ctx)
			if err != nil || j.changes.Load() != before {
				for _, n := range next {
					s.Kick(n)
				}
			}
			return err
		}
	}
	s.Add("create-instance-templates", every, then(j.CreateInstanceTemplates, "create-instance-group-managers"))
	s.Add("create-instance-group-managers", every, then(j.CreateInstanceGroupManagers, "catalog-instances"))
	s.Add("resize-instance-groups", every, then(j.ResizeGroups, "catalog-instances"))
	s.Add("catalog-instances", every, func(ctx context.Context) error {
		err := j.CatalogInstances(ctx)
		b.checkConverged()
		return err
	})
	s.Add("delete-instances-pending-deletion", every, then(j.DeletePending, "catalog-instances", "resize-instance-groups"))
	s.Add("remove-cataloged-instances", every, func(ctx context.Context) error {
		pending := len(j.state().Pending)
		err := j.RemoveDrained(ctx)
		if len(j.state().Pending) != pending {
			s.Kick("delete-instances-pending-deletion")
		}
		return err
	})
	s.Add("delete-instance-group-managers", every, then(j.DeleteDrainedGroups, "delete-instance-templates"))
	s.Add("delete-instance-templates", every, j.DeleteDrainedTemplates)
	// The audit lists every instance of its zones: rarely, so that a
	// fleet at rest costs a list per group per interval and little more.
	s.Add("audit-instances", 10*every, j.Audit)
	return s
}

// lead takes part in the election, and runs the jobs while it leads.
func (b *Backend) lead(ctx context.Context) {
	st := b.opts.Store
	if st == nil {
		b.runLeader(ctx)
		return
	}
	ttl := b.opts.LeaderTTL
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		if b.elected(ctx) {
			b.log.Info("backend replica leads; running the jobs", "replica", b.opts.Replica)
			lctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); b.runLeader(lctx) }()
			b.keepLeading(ctx, tick.C)
			stop()
			<-done
			if ctx.Err() != nil {
				st.Resign(context.WithoutCancel(ctx), leaderName, b.opts.Replica)
				return
			}
			b.log.Warn("backend replica lost the leadership; jobs stopped", "replica", b.opts.Replica)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// elected asks the store for the leadership, or to renew it.
func (b *Backend) elected(ctx context.Context) bool {
	ok, err := b.opts.Store.Lead(ctx, leaderName, b.opts.Replica, b.opts.LeaderTTL)
	if err != nil && ctx.Err() == nil {
		b.log.Warn("backend leader election", "err", err)
	}
	return ok
}

// keepLeading renews the leadership on every tick until it is lost (or
// cannot be renewed in time: the jobs stop before another replica may
// take over) or ctx ends.
func (b *Backend) keepLeading(ctx context.Context, tick <-chan time.Time) {
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		ok, err := b.opts.Store.Lead(ctx, leaderName, b.opts.Replica, b.opts.LeaderTTL)
		switch {
		case ok:
			renewed = time.Now()
		case err == nil:
			return // another replica leads
		default:
			if ctx.Err() == nil {
				b.log.Warn("backend leader election", "err", err)
			}
			if time.Since(renewed) > b.opts.LeaderTTL*2/3 {
				return
			}
		}
	}
}

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

func (b *Backend) setLeader(on bool) {
	b.mu.Lock()
	b.leader = on
	b.mu.Unlock()
	if on {
		b.m.leader.Set(1)
	} else {
		b.m.leader.Set(0)
	}
}

// follow reads the provider's event feed from the state's cursor and
// records reclaimed instances for deletion.
func (b *Backend) follow(ctx context.Context) {
	j := b.jobs
	for ctx.Err() == nil {
		evs, err := j.Provider.Events(ctx, j.state().Cursor, 30*time.Second)
		if err == nil {
			var any bool
			if any, err = j.Reclaimed(ctx, evs); any {
				b.sched.Kick("delete-instances-pending-deletion")
			}
		}
		if err != nil && ctx.Err() == nil {
			b.log.Warn("following the provider's events", "err", err)
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
			}
		}
	}
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

// Reload reads the configuration file; unless forced, only if it changed.
func (b *Backend) Reload(forced bool) {
	data, err := os.ReadFile(b.opts.ConfigPath)
	if err == nil {
		h := sha256.Sum256(data)
		b.mu.Lock()
		same := h == b.hash && b.configErr == nil
		b.hash = h
		b.mu.Unlock()
		if same && !forced {
			return
		}
	}
	var cfg Config
	if err == nil {
		cfg, err = ParseConfig(b.opts.ConfigPath, data)
	}
	if err == nil && b.identified() {
		// Another name would orphan everything the deployment made.
		err = sameDeployment(b.jobs.Deployment(), cfg.Settings.Deployment)
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

// collector reports the groups as the last passes saw them.
type collector struct{ b *Backend }

var (
	instancesDesc = prometheus.NewDesc("gcefleet_backend_instances",
		"Instances of each group of the backend's by state: target (the group's target size), current (in the group), leased and idle (cataloged).",
		[]string{"group", "zone", "state"}, nil)
	failingDesc = prometheus.NewDesc("gcefleet_backend_group_failing",
		"1 for a group that cannot create instances (stockout or quota); it is not grown until it can.",
		[]string{"group", "zone"}, nil)
	pendingDesc = prometheus.NewDesc("gcefleet_backend_pending_deletions",
		"Instances the backend is deleting (reclaimed, or idle in a drained group).", nil, nil)
	drainingDesc = prometheus.NewDesc("gcefleet_backend_draining_groups",
		"Groups of old revisions or removed managers not yet deleted.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- failingDesc
	ch <- pendingDesc
	ch <- drainingDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.jobs.state()
	for k, s := range c.b.jobs.Stats() {
		g, ok := st.Groups[k]
		if !ok {
			continue
		}
		for state, n := range map[string]int{"target": s.Target, "current": s.Current, "leased": s.Leased, "idle": s.Idle} {
			ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(n), g.Name, g.Zone, state)
		}
		failing := 0.0
		if s.Failing != "" {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(failingDesc, prometheus.GaugeValue, failing, g.Name, g.Zone)
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(len(st.Pending)))
	ch <- prometheus.MustNewConstMetric(drainingDesc, prometheus.GaugeValue, float64(len(c.b.jobs.drained())))
}

// identified says whether the jobs' deployment is the store's (or there
// is no store).
func (b *Backend) identified() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts.Deployment != "" || b.opts.Store == nil
}

// Leader reports whether this replica runs the jobs now.
func (b *Backend) Leader() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leader
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

// checkConverged notes when the fleet first matches the configuration.
func (b *Backend) checkConverged() {
	j := b.jobs
	st, stats := j.state(), j.Stats()
	ok := len(st.Pending) == 0 && len(j.drained()) == 0
	for _, g := range j.groups() {
		s, seen := stats[g.record().key()]
		_, made := st.Groups[g.record().key()]
		if !made || !seen || s.Failing != "" || s.Current < g.m.MinimumSize || s.Idle+s.Leased != s.Current {
			ok = false
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !ok {
		b.m.converged.Set(0)
		return
	}
	b.m.converged.Set(1)
	if b.convergedAt.IsZero() {
		b.convergedAt = time.Now()
		b.m.converge.Set(b.convergedAt.Sub(b.loaded).Seconds())
		b.log.Info("the fleet matches the configuration", "after", b.convergedAt.Sub(b.loaded).Round(time.Millisecond))
	}
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

var statusSection = template.Must(template.New("backend").Parse(`
<h2>GCE Backend</h2>
<p>{{if .Leader}}This replica leads and runs the jobs.{{else}}This replica stands by; another leads.{{end}}
Deployment {{.Deployment}}. Configuration loaded {{.Loaded.UTC.Format "2006-01-02 15:04:05Z"}}.</p>
{{with .ConfigErr}}<p style="color:#b00"><b>The configuration file was refused; the last good one stays in force:</b><br><pre>{{.}}</pre></p>{{end}}
<h3>Groups</h3>
<table><tr><th>group (revision)</th><th>template</th><th>project</th><th>zone</th><th>state</th><th>target</th><th>current</th><th>leased</th><th>idle</th><th>problem</th></tr>
{{range .Groups}}<tr><td>{{.Name}}</td><td>{{.BaseName}}</td><td>{{.Project}}</td><td>{{.Zone}}</td><td>{{.State}}</td><td>{{.Target}}</td><td>{{.Current}}</td><td>{{.Leased}}</td><td>{{.Idle}}</td><td>{{.Failing}}</td></tr>
{{end}}</table>
<p>Instances pending deletion: {{.Pending}}. Events read up to {{.Cursor}}.</p>
<h3>Jobs</h3>
<table><tr><th>job</th><th>runs</th><th>last run</th><th>last error</th></tr>
{{range .Jobs}}<tr><td>{{.Name}}</td><td>{{.Runs}}</td><td>{{if .LastRun.IsZero}}—{{else}}{{.LastRun.UTC.Format "15:04:05Z"}}{{end}}</td><td>{{.LastErr}}</td></tr>
{{end}}</table>`))

// StatusHTML renders the backend's part of the provider's status page.
func (b *Backend) StatusHTML() template.HTML {
	st := b.jobs.state()
	current := map[string]bool{}
	for _, g := range b.jobs.groups() {
		current[g.record().key()] = true
	}
	type row struct {
		GroupRecord
		GroupStats
		State string
	}
	stats := b.jobs.Stats()
	var groups []row
	for k, g := range st.Groups {
		state := "current"
		if !current[k] {
			state = "draining"
		}
		groups = append(groups, row{g, stats[k], state})
	}
	slices.SortFunc(groups, func(a, b row) int { return strings.Compare(a.key(), b.key()) })
	b.mu.Lock()
	data := map[string]any{"Deployment": b.jobs.Deployment(), "Leader": b.leader, "Loaded": b.loaded, "ConfigErr": b.configErr, "Groups": groups,
		"Pending": len(st.Pending), "Cursor": st.Cursor, "Jobs": b.sched.Status()}
	b.mu.Unlock()
	var buf bytes.Buffer
	if err := statusSection.Execute(&buf, data); err != nil {
		return template.HTML(template.HTMLEscapeString(err.Error()))
	}
	return template.HTML(buf.String())
}
