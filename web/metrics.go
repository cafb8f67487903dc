package web

import "github.com/prometheus/client_golang/prometheus"

// metrics are the transport's Prometheus collectors; a nil *metrics records
// nothing.
type metrics struct {
	connections prometheus.Gauge
	requests    *prometheus.CounterVec
	overflows   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "switchboard", Name: "connections", Help: "Open WebSocket connections.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "requests_total", Help: "Requests by op and result (ok or the error reason).",
		}, []string{"op", "result"}),
		overflows: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "send_queue_overflows_total", Help: "Connections closed because their send queue was full.",
		}),
	}
	reg.MustRegister(m.connections, m.requests, m.overflows)
	return m
}

func (m *metrics) request(op, result string) {
	if m != nil {
		m.requests.WithLabelValues(op, result).Inc()
	}
}

func (m *metrics) sendQueueOverflow() {
	if m != nil {
		m.overflows.Inc()
	}
}

func (m *metrics) connOpened() {
	if m != nil {
		m.connections.Inc()
	}
}

func (m *metrics) connClosed() {
	if m != nil {
		m.connections.Dec()
	}
}
