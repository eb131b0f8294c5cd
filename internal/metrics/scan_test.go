package metrics

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestScan: the content scanner's verdicts by action, the unscanned
// messages by reason (every series there from the start, so an alert's
// rate() sees the first one), their latency, rspamd's own part of it (time_real) and the breaker's state.
func TestScan(t *testing.T) {
	m := New()
	var open atomic.Bool
	o := m.Scan(open.Load)
	p := scrape(t, m)
	for _, s := range []string{`submitd_scan_total{action="reject"}`, `submitd_scan_unscanned_total{reason="breaker_open"}`, `submitd_scan_breaker_open`} {
		if v, ok := p[s]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) before any scan", s, v, ok)
		}
	}
	o.Scanned("reject", 20*time.Millisecond, 15*time.Millisecond)
	o.Scanned("no action", 5*time.Millisecond, 2*time.Millisecond)
	o.Unscanned("timeout")
	open.Store(true)
	p = scrape(t, m)
	for s, want := range map[string]float64{
		`submitd_scan_total{action="reject"}`:            1,
		`submitd_scan_total{action="no action"}`:         1,
		`submitd_scan_unscanned_total{reason="timeout"}`: 1,
		`submitd_scan_duration_seconds_count`:            2,
		`submitd_scan_duration_seconds_sum`:              0.025,
		`submitd_scan_rspamd_seconds_count`:              2,
		`submitd_scan_rspamd_seconds_sum`:                0.017,
		`submitd_scan_breaker_open`:                      1,
	} {
		if p[s] != want {
			t.Errorf("%s = %v, want %v", s, p[s], want)
		}
	}
}
