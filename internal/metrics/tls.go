package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"submitd/internal/certs"
)

// TLS adds the certificates' metrics, read at every scrape: when each
// certificate served expires, by its first name (the names come from the
// configured files and [acme] hostnames, not from clients), and the
// counters of reloads and ACME renewals.
func (m *Metrics) TLS(set *certs.Set) {
	c := &statsCollector[certs.Stats]{stats: set.Stats}
	c.counter("submitd_tls_reloads_total", "Changed certificate files loaded without a restart.", func(s certs.Stats) float64 { return float64(s.Reloads) })
	c.counter("submitd_tls_reload_errors_total", "Changed certificate files refused, the previous certificate kept: a file that does not parse, or a key that does not match its certificate (the log names the file).", func(s certs.Stats) float64 { return float64(s.ReloadErrors) })
	c.counter("submitd_tls_acme_renewals_total", "Certificates obtained or renewed by ACME.", func(s certs.Stats) float64 { return float64(s.ACMERenewals) })
	c.counter("submitd_tls_acme_errors_total", "Failed attempts to obtain or renew a certificate by ACME, the certificate in use kept (the log says why).", func(s certs.Stats) float64 { return float64(s.ACMEErrors) })
	c.gauge("submitd_tls_files_refused", "Certificate files refused as they are now (not parsed, or a key that does not match), the previous certificate served in their place.", func(s certs.Stats) float64 { return float64(s.Refused) })
	c.gauge("submitd_tls_acme_failing", "ACME names whose last attempt to obtain or renew a certificate failed.", func(s certs.Stats) float64 { return float64(s.ACMEFailing) })
	m.reg.MustRegister(c, expiryCollector{set})
}

// expiryDesc describes the expiry series.
var expiryDesc = prometheus.NewDesc("submitd_tls_certificate_expiry_timestamp_seconds",
	"When each certificate served expires, in Unix seconds, by its first name.", []string{"name"}, nil)

// expiryCollector reports the expiry of the certificates served now, which
// change with reloads and renewals.
type expiryCollector struct {
	// set is the node's certificates.
	set *certs.Set
}

// Describe implements prometheus.Collector.
func (e expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

// Collect implements prometheus.Collector. Two certificates of one name
// report the earlier expiry, the one to act on, as one series.
func (e expiryCollector) Collect(ch chan<- prometheus.Metric) {
	first := map[string]float64{}
	var order []string
	for _, c := range e.set.Served() {
		t := float64(c.NotAfter.Unix())
		if old, ok := first[c.Name]; !ok {
			order = append(order, c.Name)
			first[c.Name] = t
		} else if t < old {
			first[c.Name] = t
		}
	}
	for _, n := range order {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, first[n], n)
	}
}
