// Package metrics exposes what a submitd node does as Prometheus metrics:
// the registry, the metric definitions and the HTTP handler that serves
// them. Counters the other packages keep already (the guard's, the queue's,
// the session log writer's) are read when Prometheus scrapes; events they do
// not count are reported through the small observer interfaces of smtpd and
// queue, which Metrics implements, so that those packages need not import
// Prometheus.
//
// Every name starts with submitd_ and carries its unit. Labels take only
// values from a fixed set (listener names, reply keys, delivery results),
// never an IP, an address or a session id, so the number of series stays
// small whatever clients send.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"submitd/internal/delivery"
	"submitd/internal/guard"
	"submitd/internal/queue"
	"submitd/internal/sessionlog"
	"submitd/internal/trace"
)

// Metrics is one node's registry and the metrics that are counted as events
// happen. It implements smtpd.Observer and queue.Observer.
type Metrics struct {
	// reg holds every metric of the node, the Go runtime's and the
	// process's included.
	reg *prometheus.Registry

	// connections counts connections by listener and outcome; open is the
	// number of accepted connections not yet closed, by listener.
	connections *prometheus.CounterVec
	open        *prometheus.GaugeVec
	// auth counts AUTH commands by how they ended.
	auth *prometheus.CounterVec
	// refusals counts refused commands by command and reply key.
	refusals *prometheus.CounterVec
	// messages and bytes count what the spool accepted; commit is how long
	// its commits took.
	messages prometheus.Counter
	bytes    prometheus.Counter
	commit   prometheus.Histogram
	// attempts counts delivery results per recipient; attemptTime is how
	// long one attempt at one destination took; latency is how long after
	// acceptance a recipient was delivered.
	attempts    *prometheus.CounterVec
	attemptTime prometheus.Histogram
	latency     prometheus.Histogram
}

// Metrics is what the queue reports to. That it is an smtpd.Observer too
// is checked where the node hands it to the SMTP server: this package does
// not import smtpd, so that smtpd's own benchmarks can measure the SMTP path
// with these metrics and without.
var _ queue.Observer = (*Metrics)(nil)

// New makes a registry with the Go runtime and process collectors and the
// event metrics. The collectors that read other components' counters are
// added with Guard, Queue and SessionLog.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "submitd_smtp_connections_total",
			Help: `SMTP connections by listener and outcome: "accepted", "proxy_refused", or the reply key they were refused with (blocked, server_busy, too_many_connections, shutting_down).`,
		}, []string{"listener", "outcome"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "submitd_smtp_connections_open",
			Help: "Accepted SMTP connections open now, by listener.",
		}, []string{"listener"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "submitd_smtp_auth_total",
			Help: `AUTH commands by outcome: auth_ok, the reply key of the failure (auth_failed: wrong password, auth_rejected: unknown login, auth_disabled, auth_busy, ...), "blocked" (refused at the guard's limit) or "abandoned".`,
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "submitd_smtp_refusals_total",
			Help: "Refused MAIL, RCPT, DATA, BDAT and AUTH commands, by command and reason (the reply key): sender_rejected and header_sender_rejected are the sender policy's (SPEC R8).",
		}, []string{"command", "reason"}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "submitd_messages_accepted_total",
			Help: "Messages accepted: committed to the spool and answered 250.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "submitd_messages_accepted_bytes_total",
			Help: "Bytes of the messages accepted, as stored in the spool.",
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "submitd_spool_commit_duration_seconds",
			Help:    "Time a message's spool commit took, the client waiting for the disk before its 250 (SPEC R15).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "submitd_delivery_attempts_total",
			Help: "Delivery attempts per recipient, by result: delivered, deferred (temporary failure, retried) or failed (permanent).",
		}, []string{"result"}),
		attemptTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "submitd_delivery_attempt_duration_seconds",
			Help:    "Time one delivery attempt to one destination domain took, DNS and every host tried included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "submitd_delivery_latency_seconds",
			Help:    "Time from a message's acceptance to its delivery, per delivered recipient.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.connections, m.open, m.auth, m.refusals, m.messages, m.bytes, m.commit,
		m.attempts, m.attemptTime, m.latency,
	)
	// The outcomes alert rules divide by exist from the start, at zero, so
	// that a rate over them is defined before the first event.
	// The words are smtpd's reply keys.
	for _, o := range []string{"auth_ok", "auth_failed", "auth_rejected", "auth_disabled", "blocked"} {
		m.auth.WithLabelValues(o)
	}
	for _, s := range []delivery.Status{delivery.Delivered, delivery.Temporary, delivery.Permanent} {
		m.attempts.WithLabelValues(s.String())
	}
	m.refusals.WithLabelValues("mail", "sender_rejected")
	m.refusals.WithLabelValues("data", "header_sender_rejected")
	return m
}

// Listeners makes the connection series of the named listeners exist at
// zero, for rates over them from the start.
func (m *Metrics) Listeners(names ...string) {
	for _, l := range names {
		m.connections.WithLabelValues(l, "accepted")
		m.connections.WithLabelValues(l, "blocked")
		m.open.WithLabelValues(l)
	}
}

// Registry is the node's registry, for a caller that adds its own metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format. At most a few
// scrapes run at once, each bounded in time, so a client that may reach the
// handler cannot make the node spend more than that on it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Connection implements smtpd.Observer.
func (m *Metrics) Connection(listener, outcome string) {
	m.connections.WithLabelValues(listener, outcome).Inc()
	if outcome == "accepted" {
		m.open.WithLabelValues(listener).Inc()
	}
}

// Closed implements smtpd.Observer.
func (m *Metrics) Closed(listener string) { m.open.WithLabelValues(listener).Dec() }

// Auth implements smtpd.Observer.
func (m *Metrics) Auth(outcome string) { m.auth.WithLabelValues(outcome).Inc() }

// Refused implements smtpd.Observer.
func (m *Metrics) Refused(command, key string) { m.refusals.WithLabelValues(command, key).Inc() }

// Queued implements smtpd.Observer.
func (m *Metrics) Queued(size int64, commit time.Duration) {
	m.messages.Inc()
	m.bytes.Add(float64(size))
	m.commit.Observe(commit.Seconds())
}

// Attempted implements queue.Observer.
func (m *Metrics) Attempted(results []delivery.Result, took, age time.Duration) {
	m.attemptTime.Observe(took.Seconds())
	for _, r := range results {
		m.attempts.WithLabelValues(r.Status.String()).Inc()
		if r.Status == delivery.Delivered {
			m.latency.Observe(age.Seconds())
		}
	}
}

// Guard adds the guard's counters (SPEC R11), read from stats at every
// scrape.
func (m *Metrics) Guard(stats func() guard.Stats) {
	c := &statsCollector[guard.Stats]{stats: stats}
	c.counter("submitd_guard_failures_total", "AUTH failures counted towards blocks.", func(s guard.Stats) float64 { return float64(s.Failures) })
	c.counter("submitd_guard_exempt_failures_total", "AUTH failures from exempt networks, not counted towards blocks.", func(s guard.Stats) float64 { return float64(s.ExemptFailures) })
	c.counter("submitd_guard_blocks_total", "Blocks the guard made.", func(s guard.Stats) float64 { return float64(s.Blocks) })
	c.counter("submitd_guard_refusals_total", "Connections, sessions and AUTH attempts refused because of a block.", func(s guard.Stats) float64 { return float64(s.Refusals) })
	c.counter("submitd_guard_at_limit_total", "AUTH attempts refused without a block yet, the failures and the attempts in flight making the limit.", func(s guard.Stats) float64 { return float64(s.AtLimit) })
	c.counter("submitd_guard_unblocks_total", "Blocks support lifted before they ran out.", func(s guard.Stats) float64 { return float64(s.Unblocks) })
	c.counter("submitd_guard_expired_blocks_total", "Blocks that ran out by themselves.", func(s guard.Stats) float64 { return float64(s.Expired) })
	c.counter("submitd_guard_evicted_keys_total", "Client keys forgotten because guard.max_keys was reached.", func(s guard.Stats) float64 { return float64(s.Evicted) })
	c.counter("submitd_guard_store_errors_total", "Guard store operations that failed.", func(s guard.Stats) float64 { return float64(s.StoreErrors) })
	c.gauge("submitd_guard_blocked_keys", "Client keys (addresses or prefixes) blocked now.", func(s guard.Stats) float64 { return float64(s.BlockedKeys) })
	c.gauge("submitd_guard_tracked_keys", "Client keys with failures held in memory.", func(s guard.Stats) float64 { return float64(s.TrackedKeys) })
	c.gauge("submitd_guard_auth_in_flight", "AUTH attempts holding a place with the guard now.", func(s guard.Stats) float64 { return float64(s.InFlight) })
	if stats().Shared {
		// Only a guard with a shared store has one to lose; an alert on 0
		// must not fire on nodes that count alone by design.
		c.gauge("submitd_guard_shared_store_up", "1 while the guard's shared store (Redis) answers; 0 while the node counts AUTH failures and blocks on its own.", func(s guard.Stats) float64 {
			if s.SharedUp {
				return 1
			}
			return 0
		})
	}
	m.reg.MustRegister(c)
}

// Queue adds the queue's size by state, the age of its oldest message and
// its outcome counters (SPEC R17, R18), read at every scrape.
func (m *Metrics) Queue(q *queue.Queue) {
	c := &statsCollector[queueStats]{stats: func() queueStats { return queueStats{q.Sizes(), q.Stats()} }}
	for _, st := range []string{queue.StateActive, queue.StateDue, queue.StateDeferred, queue.StateHeld} {
		c.gaugeLabel("submitd_queue_messages", "Messages in the queue, by state: active (an attempt under way or waiting for a worker), due (due, not yet started) , deferred (waiting for a retry) or held (with a held account, SPEC R20).", "state", st,
			func(s queueStats) float64 { return float64(s.sizes.Messages[st]) })
	}
	c.gauge("submitd_queue_oldest_message_age_seconds", "Age of the oldest message in the queue; 0 when it is empty.", func(s queueStats) float64 {
		if s.sizes.Oldest.IsZero() {
			return 0
		}
		return time.Since(s.sizes.Oldest).Seconds()
	})
	c.counter("submitd_queue_messages_finished_total", "Messages removed from the spool because every recipient was delivered or failed.", func(s queueStats) float64 { return float64(s.stats.Finished) })
	c.counter("submitd_queue_reports_total", "Delivery status notifications (bounces and delay warnings) made.", func(s queueStats) float64 { return float64(s.stats.Reports) })
	m.reg.MustRegister(c)
}

// queueStats is what one scrape reads from the queue.
type queueStats struct {
	sizes queue.Sizes
	stats queue.Stats
}

// Trace exports the delivery history's backlog and losses, and the
// refused connections whose ids name no record (SPEC R13a).
func (m *Metrics) Trace(stats func() trace.RecorderStats, unrecorded func() uint64) {
	c := &statsCollector[trace.RecorderStats]{stats: stats}
	c.gauge("submitd_trace_backlog_items", "Delivery history entries waiting to be written to the database.", func(s trace.RecorderStats) float64 { return float64(s.Backlog) })
	c.counter("submitd_trace_dropped_items_total", "Delivery history entries dropped because the backlog was full (the log lines still have their facts).", func(s trace.RecorderStats) float64 { return float64(s.Dropped) })
	c.counter("submitd_trace_failed_items_total", "Delivery history entries the database failed to store.", func(s trace.RecorderStats) float64 { return float64(s.Failed) })
	c.counter("submitd_refusals_unrecorded_total", "Connections refused at the greeting whose session ids name no record, because too many clients were being refused at once.", func(trace.RecorderStats) float64 { return float64(unrecorded()) })
	m.reg.MustRegister(c)
}

// SessionLog adds the session log writer's backlog and losses (SPEC R13),
// read at every scrape.
func (m *Metrics) SessionLog(stats func() sessionlog.WriterStats) {
	c := &statsCollector[sessionlog.WriterStats]{stats: stats}
	c.gauge("submitd_sessionlog_backlog_records", "Session records waiting to be written to the database.", func(s sessionlog.WriterStats) float64 { return float64(s.Backlog) })
	c.gauge("submitd_sessionlog_backlog_capacity_records", "The most session records that can wait; past it records are dropped.", func(s sessionlog.WriterStats) float64 { return float64(s.Capacity) })
	c.counter("submitd_sessionlog_dropped_records_total", "Session records dropped because the backlog was full (the log line still has their facts).", func(s sessionlog.WriterStats) float64 { return float64(s.Dropped) })
	c.counter("submitd_sessionlog_failed_records_total", "Session records the database failed to store.", func(s sessionlog.WriterStats) float64 { return float64(s.Failed) })
	m.reg.MustRegister(c)
}
