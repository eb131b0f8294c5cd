package metrics

import "github.com/prometheus/client_golang/prometheus"

// ConfigReloads adds the counts of configuration reloads and returns what
// a reload reports to: ok is false when the file did not load and nothing
// changed. The gauge tells an alert that the file on disk is not the one
// in force, as Prometheus's own prometheus_config_last_reload_successful
// does.
func (m *Metrics) ConfigReloads() (reloaded func(ok bool)) {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "submitd_config_reloads_total",
		Help: "Reloads of the config file (SIGHUP, submitd reload, the API), by result: applied, or failed (nothing changed).",
	}, []string{"result"})
	last := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "submitd_config_last_reload_successful",
		Help: "1 when the last reload of the config file was applied (or none was made), 0 when it failed and the file on disk is not in force.",
	})
	total.WithLabelValues("applied")
	total.WithLabelValues("failed")
	last.Set(1)
	m.reg.MustRegister(total, last)
	return func(ok bool) {
		if ok {
			total.WithLabelValues("applied").Inc()
			last.Set(1)
			return
		}
		total.WithLabelValues("failed").Inc()
		last.Set(0)
	}
}
