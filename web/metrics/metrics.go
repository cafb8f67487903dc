// Package metrics is Switchboard's Prometheus instrumentation, served at
// /metrics (metrics.enabled, metrics.addr): what the transport reports
// (web.Metrics), invitation outcomes (a signaling.Observer), calls
// (calls.Metrics), webhook deliveries (webhook.Metrics), the store's write latency (InstrumentStore) and gauges
// read from the running components (Watch). The composition root, web/stack,
// builds it and hands it to each of them; no other package imports
// Prometheus.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/turnserver"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

// Metrics holds the registry and every Switchboard metric. A nil *Metrics
// records nothing.
type Metrics struct {
	reg *prometheus.Registry

	connections prometheus.Gauge
	requests    *prometheus.CounterVec
	overflows   prometheus.Counter
	rejected    prometheus.Counter
	invitations *prometheus.CounterVec
	callSetup   prometheus.Histogram
	callsEnded  *prometheus.CounterVec
	storeApply  *prometheus.HistogramVec
	webhooks    *prometheus.CounterVec
	webhookTime prometheus.Histogram
	roomRelay   *prometheus.CounterVec
}

var (
	_ signaling.Observer = (*Metrics)(nil)
	_ calls.Metrics      = (*Metrics)(nil)
	_ web.Metrics        = (*Metrics)(nil)
	_ webhook.Metrics    = (*Metrics)(nil)
)

// New makes a registry with the Go runtime and process collectors and every
// Switchboard metric.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "switchboard", Name: "connections",
			Help: "Open WebSocket connections."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "switchboard", Name: "requests_total",
			Help: "Requests by op and result (ok, or the error reason)."}, []string{"op", "result"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "switchboard", Name: "http_connections_rejected_total",
			Help: "TCP connections answered 503 and closed because server.max_connections were open."}),
		overflows: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "switchboard", Name: "send_queue_overflows_total",
			Help: "Connections closed because their send queue was full."}),
		invitations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "switchboard", Name: "invitations_total",
			Help: "Invitations created, and invitee outcomes (accepted, rejected, timed_out, cancelled)."}, []string{"outcome"}),
		callSetup: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "switchboard", Name: "call_setup_seconds",
			Help:    "Time from a call's first ring to its second participant's media connecting.",
			Buckets: []float64{.25, .5, 1, 2, 3, 5, 8, 13, 21, 34, 60}}),
		callsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "switchboard", Name: "calls_ended_total",
			Help: "Calls ended, by result."}, []string{"result"}),
		storeApply: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "switchboard", Name: "store_apply_seconds",
			Help:    "Latency of writes to the signaling store, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"outcome"}),
		roomRelay: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "switchboard", Name: "room_relay_messages_total",
			Help: "Cluster mode: messages of the room relay (rooms/cluster) by kind (request, reply, event, closed) and direction (sent, received)."},
			[]string{"kind", "dir"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "switchboard", Name: "webhook_deliveries_total",
			Help: "Webhook delivery attempts by result (ok, failed, expired), and events dropped before being queued (dropped)."}, []string{"result"}),
		webhookTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "switchboard", Name: "webhook_delivery_seconds",
			Help:    "Duration of webhook requests, whatever their result.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
	}
	reg.MustRegister(m.connections, m.rejected, m.requests, m.overflows, m.invitations, m.callSetup, m.callsEnded, m.storeApply,
		m.webhooks, m.webhookTime, m.roomRelay)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// RoomRelayMessage implements rooms/cluster's Metrics.
func (m *Metrics) RoomRelayMessage(kind, dir string) { m.roomRelay.WithLabelValues(kind, dir).Inc() }

// Watch adds gauges read from the running components: active calls, rooms,
// room members, and the SFU's forwarded packets and bytes.
func (m *Metrics) Watch(c *calls.Manager, r *rooms.Manager, sfu *media.SFU) {
	if c != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "switchboard", Name: "active_calls",
			Help: "Calls ringing or running."}, func() float64 { return float64(c.Active()) }))
	}
	if r != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "switchboard", Name: "rooms",
			Help: "Media rooms."}, func() float64 { n, _ := r.Counts(); return float64(n) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "switchboard", Name: "rooms_hosted",
			Help: "Media rooms hosted by this node's SFU (in cluster mode, the rooms whose media node it is)."}, func() float64 { n, _ := r.Counts(); return float64(n) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "switchboard", Name: "room_participants",
			Help: "Participants in media rooms."}, func() float64 { _, n := r.Counts(); return float64(n) }))
	}
	if sfu != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: "forwarded_packets_total",
			Help: "RTP packets written to subscribers."}, func() float64 { return float64(sfu.Stats().PacketsOut) }))
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: "forwarded_bytes_total",
			Help: "RTP bytes written to subscribers."}, func() float64 { return float64(sfu.Stats().BytesOut) }))
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: "received_packets_total",
			Help: "RTP packets read from publishers."}, func() float64 { return float64(sfu.Stats().PacketsIn) }))
	}
}

// WatchSharedTx adds the counters of a cluster node's shared transactions
// (cluster.op_lanes): operations that ran in one, the MULTI/EXECs sent for
// them, and those sent back to run again alone.
func (m *Metrics) WatchSharedTx(stats func() (members, execs, refused int64)) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: "cluster_shared_tx_ops_total",
		Help: "Cluster mode: operation attempts that ran in a shared transaction (cluster.op_lanes)."},
		func() float64 { n, _, _ := stats(); return float64(n) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: "cluster_shared_tx_execs_total",
		Help: "Cluster mode: MULTI/EXECs of shared transactions, each committing one or more operations."},
		func() float64 { _, n, _ := stats(); return float64(n) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: "cluster_shared_tx_refused_total",
		Help: "Cluster mode: operation attempts a shared transaction sent back to run again alone (they read what another one wrote, or were late)."},
		func() float64 { _, _, n := stats(); return float64(n) }))
}

// WatchWebhooks adds the gauge of the webhook deliveries queued.
func (m *Metrics) WatchWebhooks(w interface{ QueueLen() int }) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "switchboard", Name: "webhook_queue_length",
		Help: "Webhook deliveries queued (waiting, in flight or waiting to be retried)."}, func() float64 { return float64(w.QueueLen()) }))
}

// WebhookDelivery implements webhook.Metrics.
func (m *Metrics) WebhookDelivery(result string, latency time.Duration) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(result).Inc()
	if result != webhook.ResultDropped {
		m.webhookTime.Observe(latency.Seconds())
	}
}

// WatchTURN adds the embedded TURN server's allocations and TCP/TLS
// connections, and what it refused, read from its Stats.
func (m *Metrics) WatchTURN(t *turnserver.Server) {
	if m == nil || t == nil {
		return
	}
	gauge := func(name, help string, f func(turnserver.Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "switchboard", Name: name, Help: help},
			func() float64 { return float64(f(t.Stats())) })
	}
	counter := func(name, help string, labels prometheus.Labels, f func(turnserver.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f(t.Stats())) })
	}
	const refusedHelp = "TURN allocations refused, by reason: user_quota (turn.max_allocations_per_user, 486), server_cap (turn.max_allocations, 508)."
	m.reg.MustRegister(
		gauge("turn_allocations", "TURN allocations alive.", func(s turnserver.Stats) int { return s.Allocations }),
		counter("turn_allocations_refused_total", refusedHelp, prometheus.Labels{"reason": "user_quota"},
			func(s turnserver.Stats) uint64 { return s.AllocationsRefusedUser }),
		counter("turn_allocations_refused_total", refusedHelp, prometheus.Labels{"reason": "server_cap"},
			func(s turnserver.Stats) uint64 { return s.AllocationsRefusedServer }),
		gauge("turn_connections", "TURN TCP and TLS connections open.", func(s turnserver.Stats) int { return s.Connections }),
		counter("turn_connections_refused_total", "TURN TCP and TLS connections closed at once because turn.max_connections were open.", nil,
			func(s turnserver.Stats) uint64 { return s.ConnectionsRefused }),
		counter("turn_connections_timed_out_total",
			"TURN TCP and TLS connections closed without an allocation after turn.allocate_timeout, or by turn.tls_handshake_timeout.", nil,
			func(s turnserver.Stats) uint64 { return s.ConnectionsTimedOut }),
		counter("turn_connections_refused_per_ip_total",
			"TURN TCP and TLS connections closed at once because their source IP had turn.max_connections_per_ip without an allocation.", nil,
			func(s turnserver.Stats) uint64 { return s.ConnectionsRefusedIP }),
		counter("turn_udp_rate_limited_total",
			"TURN UDP datagrams from addresses without an allocation dropped by the per-IP rate limit (turn.udp_request_rate, turn.udp_request_burst).", nil,
			func(s turnserver.Stats) uint64 { return s.UDPRateLimited }),
		gauge("turn_udp_rate_limit_ips", "Source IPs whose TURN UDP rate is tracked (at most turn.udp_rate_limit_ips).",
			func(s turnserver.Stats) int { return s.UDPRateLimitIPs }),
		counter("turn_udp_rate_limit_evictions_total",
			"Source IPs forgotten by the TURN UDP rate limit at turn.udp_rate_limit_ips (least recently seen first).", nil,
			func(s turnserver.Stats) uint64 { return s.UDPRateLimitEvictions }),
	)
}

// InvitationNote implements signaling.Observer: invitation outcomes.
func (m *Metrics) InvitationNote(n signaling.InvitationNote) {
	if m == nil {
		return
	}
	if n.Created {
		m.invitations.WithLabelValues("created").Inc()
	}
	for _, c := range n.Changes {
		m.invitations.WithLabelValues(c.State.String()).Inc()
	}
}

// CallBegan implements calls.Metrics.
func (m *Metrics) CallBegan(setup time.Duration) {
	if m != nil {
		m.callSetup.Observe(setup.Seconds())
	}
}

// CallEnded implements calls.Metrics.
func (m *Metrics) CallEnded(r calls.Result) {
	if m != nil {
		m.callsEnded.WithLabelValues(string(r)).Inc()
	}
}

// InstrumentStore wraps a store so that its write latency is measured.
func (m *Metrics) InstrumentStore(s signaling.Store) signaling.Store {
	if m == nil {
		return s
	}
	return timedStore{Store: s, h: m.storeApply}
}

type timedStore struct {
	signaling.Store
	h *prometheus.HistogramVec
}

func (t timedStore) Apply(ctx context.Context, muts ...signaling.Mutation) error {
	start := time.Now()
	err := t.Store.Apply(ctx, muts...)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	t.h.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	return err
}

// Request implements web.Metrics.
func (m *Metrics) Request(op, result string) {
	if m != nil {
		m.requests.WithLabelValues(op, result).Inc()
	}
}

// SendQueueOverflow implements web.Metrics.
func (m *Metrics) SendQueueOverflow() {
	if m != nil {
		m.overflows.Inc()
	}
}

// ConnRejected implements web.Metrics.
func (m *Metrics) ConnRejected() {
	if m != nil {
		m.rejected.Inc()
	}
}

// ConnOpened implements web.Metrics.
func (m *Metrics) ConnOpened() {
	if m != nil {
		m.connections.Inc()
	}
}

// ConnClosed implements web.Metrics.
func (m *Metrics) ConnClosed() {
	if m != nil {
		m.connections.Dec()
	}
}
