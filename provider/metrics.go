package provider

import (
	"context"

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

func (g *gauges) Describe(ch chan<- *prometheus.Desc) { ch <- machinesDesc; ch <- leasesDesc }

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
}
