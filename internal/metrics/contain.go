package metrics

import "github.com/prometheus/client_golang/prometheus"

// Contain registers the metrics of compromised-account detection (SPEC
// R20): trips by signal and action, and the accounts whose signals are
// tracked (tracked is read at each scrape). It returns the function that
// counts a trip.
func (m *Metrics) Contain(tracked func() int) func(signal, action string) {
	trips := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "submitd_contain_trips_total",
		Help: `Compromised-account signals that tripped, by signal (limits, bounces, networks, volume, spam) and action ("hold": the account and its mail were held; "warn": only notified).`,
	}, []string{"signal", "action"})
	m.reg.MustRegister(trips, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "submitd_contain_accounts_tracked",
		Help: "Accounts whose compromise signals are kept in memory ([contain] max_accounts bounds them).",
	}, func() float64 { return float64(tracked()) }))
	return func(signal, action string) { trips.WithLabelValues(signal, action).Inc() }
}
