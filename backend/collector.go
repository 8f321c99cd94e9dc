package backend

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// metrics makes the backend's gauges and, if Options name a registry,
// registers them, the scheduler's, the collector and compute's.
func (b *Backend) metrics(compute *gcecompute.Client) {
	opts := b.opts
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
	demandDesc = prometheus.NewDesc("gcefleet_backend_group_demand",
		"Waiting lease requests the last resize pass assigned to the group: each grows one group by one.",
		[]string{"group", "zone"}, nil)
	pendingDesc = prometheus.NewDesc("gcefleet_backend_pending_deletions",
		"Instances the backend is deleting (reclaimed, or idle in a drained group).", nil, nil)
	drainingDesc = prometheus.NewDesc("gcefleet_backend_draining_groups",
		"Groups of old revisions or removed managers not yet deleted.", nil, nil)
	minIdleDesc = prometheus.NewDesc("gcefleet_backend_min_idle",
		"Machines each configured group keeps available beyond those leased, as its schedule window in force says.",
		[]string{"group", "zone"}, nil)
	minimumDesc = prometheus.NewDesc("gcefleet_backend_minimum_size",
		"Each configured group's minimum size, as its schedule window in force says.",
		[]string{"group", "zone"}, nil)
	windowDesc = prometheus.NewDesc("gcefleet_backend_schedule_window",
		`1 for each configured group's schedule window in force ("default" outside every window), 0 for its others.`,
		[]string{"group", "zone", "window"}, nil)
	idleDeletedDesc = prometheus.NewDesc("gcefleet_backend_idle_deleted_total",
		"Machines of each group taken out of the catalog and deleted because they stayed idle past idle_timeout beyond what the group needs, since this replica started.",
		[]string{"group", "zone"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- failingDesc
	ch <- demandDesc
	ch <- pendingDesc
	ch <- drainingDesc
	ch <- minIdleDesc
	ch <- minimumDesc
	ch <- windowDesc
	ch <- idleDeletedDesc
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
		ch <- prometheus.MustNewConstMetric(demandDesc, prometheus.GaugeValue, float64(s.Demand), g.Name, g.Zone)
		ch <- prometheus.MustNewConstMetric(idleDeletedDesc, prometheus.CounterValue, float64(s.IdleDeleted), g.Name, g.Zone)
	}
	// The configured groups' windows; without the revisions (see below)
	// the groups are unknown and these are left out.
	if gs, err := c.b.jobs.groups(); err == nil {
		for _, g := range gs {
			ch <- prometheus.MustNewConstMetric(minIdleDesc, prometheus.GaugeValue, float64(g.w.MinIdle), g.rev, g.m.Zone)
			ch <- prometheus.MustNewConstMetric(minimumDesc, prometheus.GaugeValue, float64(g.w.MinimumSize), g.rev, g.m.Zone)
			names := []string{"default"}
			for _, s := range g.m.Schedules {
				names = append(names, s.name())
			}
			seen := map[string]bool{}
			for _, n := range names {
				if seen[n] {
					continue // two windows written alike: one series
				}
				seen[n] = true
				v := 0.0
				if n == g.w.Name {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(windowDesc, prometheus.GaugeValue, v, g.rev, g.m.Zone, n)
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(len(st.Pending)))
	// Without the configured revisions (a metadata file unreadable: the
	// jobs report it), what drains is unknown: the gauge is left out rather
	// than failing every metric of the registry.
	if drained, err := c.b.jobs.drained(); err == nil {
		ch <- prometheus.MustNewConstMetric(drainingDesc, prometheus.GaugeValue, float64(len(drained)))
	}
}

// checkConverged notes when the fleet first matches the configuration.
func (b *Backend) checkConverged() {
	j := b.jobs
	st, stats := j.state(), j.Stats()
	drained, err := j.drained()
	gs, gerr := j.groups()
	ok := err == nil && gerr == nil && len(st.Pending) == 0 && len(drained) == 0
	for _, g := range gs {
		s, seen := stats[g.record().key()]
		_, made := st.Groups[g.record().key()]
		if !made || !seen || s.Failing != "" || s.Current < g.w.MinimumSize || s.Idle+s.Leased != s.Current {
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
