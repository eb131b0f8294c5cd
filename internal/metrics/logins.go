package metrics

import "submitd/internal/loginwatch"

// Logins adds the per-login failure count's counters and gauges (SPEC
// R21), read at every scrape.
func (m *Metrics) Logins(stats func() loginwatch.Stats) {
	c := &statsCollector[loginwatch.Stats]{stats: stats}
	c.counter("submitd_login_guard_failures_total", "Wrong passwords counted per login, from networks without an earlier success.", func(s loginwatch.Stats) float64 { return float64(s.Failures) })
	c.counter("submitd_login_guard_trusted_failures_total", "Wrong passwords from networks with an earlier success of the login, not counted towards an attack.", func(s loginwatch.Stats) float64 { return float64(s.TrustedFailures) })
	c.counter("submitd_login_guard_attacks_total", "Logins put under attack.", func(s loginwatch.Stats) float64 { return float64(s.Attacks) })
	c.counter("submitd_login_guard_refused_total", "AUTH attempts refused unchecked because their login was under attack and their network had no earlier success.", func(s loginwatch.Stats) float64 { return float64(s.Refused) })
	c.counter("submitd_login_guard_cleared_total", "Attack states support cleared.", func(s loginwatch.Stats) float64 { return float64(s.Cleared) })
	c.counter("submitd_login_guard_evicted_logins_total", "Logins forgotten because login_guard.max_logins was reached.", func(s loginwatch.Stats) float64 { return float64(s.Evicted) })
	c.counter("submitd_login_guard_dropped_failures_total", "Failures not counted because every login held was under attack.", func(s loginwatch.Stats) float64 { return float64(s.Dropped) })
	c.counter("submitd_login_guard_store_errors_total", "Login history reads and writes that failed.", func(s loginwatch.Stats) float64 { return float64(s.StoreErrors) })
	c.gauge("submitd_login_guard_tracked_logins", "Logins with failures held in memory.", func(s loginwatch.Stats) float64 { return float64(s.Tracked) })
	c.gauge("submitd_login_guard_logins_under_attack", "Logins under attack now.", func(s loginwatch.Stats) float64 { return float64(s.UnderAttack) })
	m.reg.MustRegister(c)
}
