package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"submitd/internal/scan"
)

// scanObserver counts the content scans (SPEC R22); it is a scan.Observer.
type scanObserver struct {
	// scans counts verdicts by action; unscanned the messages that passed
	// (or were deferred) without one, by reason; latency how long scans
	// with a verdict took, and inRspamd how much of it rspamd says was
	// its own.
	scans     *prometheus.CounterVec
	unscanned *prometheus.CounterVec
	latency   prometheus.Histogram
	inRspamd  prometheus.Histogram
}

func (o *scanObserver) Scanned(action string, took, inRspamd time.Duration) {
	o.scans.WithLabelValues(action).Inc()
	o.latency.Observe(took.Seconds())
	o.inRspamd.Observe(inRspamd.Seconds())
}

func (o *scanObserver) Unscanned(reason string) { o.unscanned.WithLabelValues(reason).Inc() }

// Scan registers the content scanner's metrics and returns what the
// scanner reports to; breakerOpen is read at each scrape.
func (m *Metrics) Scan(breakerOpen func() bool) scan.Observer {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	o := &scanObserver{
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "submitd_scan_total",
			Help: `Messages scanned by rspamd, by its action ("reject", "discard" and "quarantine" were refused, "soft reject" deferred, "add header" and "rewrite subject" flagged and sent, "no action" and "greylist" sent).`,
		}, []string{"action"}),
		unscanned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "submitd_scan_unscanned_total",
			Help: `Messages not scanned, by reason: too_large (over [scan] max_size), timeout, busy (no free slot of max_concurrent within the timeout), error (rspamd unreachable or its reply unusable), breaker_open (not waiting on rspamd after failures in a row). All but too_large follow on_error.`,
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "submitd_scan_duration_seconds",
			Help:    "How long a scan with a verdict took, the wait for a free slot included.",
			Buckets: buckets,
		}),
		// The difference of the two histograms' sums is what the scans
		// cost beyond rspamd's work: the wait for a slot, connecting, the
		// HTTP exchange, reading the reply.
		inRspamd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "submitd_scan_rspamd_seconds",
			Help:    "How long rspamd says it took itself (its reply's time_real) for the scans with a verdict; submitd_scan_duration_seconds less this is the wait for a slot and the HTTP exchange.",
			Buckets: buckets,
		}),
	}
	for _, a := range scan.Actions {
		o.scans.WithLabelValues(a)
	}
	for _, r := range scan.Reasons {
		o.unscanned.WithLabelValues(r)
	}
	m.reg.MustRegister(o.scans, o.unscanned, o.latency, o.inRspamd, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "submitd_scan_breaker_open",
		Help: "1 while the content scanner's circuit breaker is open: rspamd failed repeatedly and messages pass without waiting on it.",
	}, func() float64 {
		if breakerOpen() {
			return 1
		}
		return 0
	}))
	return o
}
