package rpc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts calls per method: how many, how they ended, bytes each way
// and latency. One Metrics serves a client or a server; register it once.
type Metrics struct {
	calls   *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewMetrics returns metrics for one side ("client" or "server") and
// registers them with reg, if reg is not nil.
func NewMetrics(reg prometheus.Registerer, side string) *Metrics {
	labels := prometheus.Labels{"side": side}
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bigmachine_rpc_calls_total", Help: "RPC calls by method and outcome.", ConstLabels: labels,
		}, []string{"method", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bigmachine_rpc_bytes_total", Help: "RPC body bytes by method and direction (sent, received).", ConstLabels: labels,
		}, []string{"method", "direction"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bigmachine_rpc_latency_seconds", Help: "RPC latency by method, to the end of the reply's headers.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(25e-6, 4, 10),
		}, []string{"method"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.bytes, m.latency)
	}
	return m
}

func (m *Metrics) observe(method string, start time.Time, err error, sent, received int64) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if k := KindOf(err); k != 0 {
			outcome = kindLabel(k)
		}
	}
	m.calls.WithLabelValues(method, outcome).Inc()
	m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	if sent > 0 {
		m.bytes.WithLabelValues(method, "sent").Add(float64(sent))
	}
	if received > 0 {
		m.bytes.WithLabelValues(method, "received").Add(float64(received))
	}
}

func kindLabel(k Kind) string {
	switch k {
	case Remote:
		return "remote"
	case Network:
		return "network"
	case Invalid:
		return "invalid"
	case Unavailable:
		return "unavailable"
	}
	return "error"
}
