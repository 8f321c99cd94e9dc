package provider

import (
	"context"
	"sort"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	inFlight prometheus.Gauge
	outcomes *prometheus.CounterVec
	wait     prometheus.Histogram
	latency  *prometheus.HistogramVec
	wakeups  *prometheus.CounterVec
}

// gauges reads machines and leases by state from the store at scrape time.
type gauges struct{ s *Server }

var (
	machinesDesc = prometheus.NewDesc("gcefleet_provider_machines", "Cataloged machines by state.", []string{"state"}, nil)
	leasesDesc   = prometheus.NewDesc("gcefleet_provider_leases", "Active leases by state; PENDING is the queue's length. (Ended leases are counted by gcefleet_provider_lease_outcomes_total.)", []string{"state"}, nil)
)

var (
	queueDesc = prometheus.NewDesc("gcefleet_provider_queue_length",
		"Pending requests by the set of dimensions they ask for (the 20 longest queues; the rest as \"other\").", []string{"dimensions"}, nil)
	queueWaitDesc = prometheus.NewDesc("gcefleet_provider_queue_oldest_wait_seconds",
		"How long the oldest pending request of each set of dimensions has waited (sets as for gcefleet_provider_queue_length).", []string{"dimensions"}, nil)
)

// queueSets is how many sets of dimensions the queue metrics name; the
// rest are summed as "other", so that clients asking for ever new
// dimensions cannot grow the metrics without bound.
const queueSets = 20

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- machinesDesc
	ch <- leasesDesc
	ch <- queueDesc
	ch <- queueWaitDesc
}

// collectQueue reports the queue by set of dimensions.
func (g *gauges) collectQueue(ch chan<- prometheus.Metric) {
	sets, err := g.s.st.Demand(context.Background())
	if err != nil {
		return
	}
	sort.SliceStable(sets, func(a, b int) bool { return sets[a].Pending > sets[b].Pending })
	now := time.Now()
	var other api.DemandSet
	for i, d := range sets {
		if i >= queueSets {
			other.Pending += d.Pending
			if other.Oldest.IsZero() || d.Oldest.Before(other.Oldest) {
				other.Oldest = d.Oldest
			}
			continue
		}
		name := dimsText(d.Dimensions)
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(d.Pending), name)
		ch <- prometheus.MustNewConstMetric(queueWaitDesc, prometheus.GaugeValue, now.Sub(d.Oldest).Seconds(), name)
	}
	if other.Pending > 0 {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(other.Pending), "other")
		ch <- prometheus.MustNewConstMetric(queueWaitDesc, prometheus.GaugeValue, now.Sub(other.Oldest).Seconds(), "other")
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	ms, ls, err := g.s.st.Counts(context.Background())
	if err != nil {
		return
	}
	for _, st := range []string{api.Available, api.Leased} {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(ms[st]), st)
	}
	for _, st := range []string{api.Pending, api.Fulfilled} {
		ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(ls[st]), st)
	}
	g.collectQueue(ch)
}
