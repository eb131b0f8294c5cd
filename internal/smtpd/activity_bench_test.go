package smtpd

import (
	"testing"
	"time"

	"submitd/internal/contain"
)

// BenchmarkAcceptActivity runs whole sessions on a server whose logins and
// messages go to nobody and on one where they go to the compromised-account
// detector (SPEC R20) with the default thresholds, in turn and swapping
// which goes first, so both meet the same load; it reports each one's time
// per session and the ratio (with the detector / without).
func BenchmarkAcceptActivity(b *testing.B) {
	det := contain.NewDetector(contain.Thresholds{
		LimitHits: 5, LimitWindow: time.Hour, BounceShare: 0.5, BounceMin: 20, BounceWindow: time.Hour,
		Networks: 10, NetworksWindow: time.Hour, RiseFactor: 10, RiseFloor: 150, RiseDays: 7,
	}, 0, nil, nil)
	var took [2]time.Duration
	servers := [2]*testEnv{newTestEnv(b), newTestEnv(b, withServer(func(s *Server) { s.Activity = det }))}
	b.ResetTimer()
	for n := range b.N {
		for turn := range 2 {
			k := (n + turn) % 2
			t0 := time.Now()
			acceptOne(b, servers[k])
			took[k] += time.Since(t0)
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(per(took[0]), "ns/session-off")
	b.ReportMetric(per(took[1]), "ns/session-detector")
	b.ReportMetric(float64(took[1])/float64(took[0]), "ratio")
}
