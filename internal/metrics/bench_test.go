package metrics

import (
	"testing"
	"time"
)

// BenchmarkSessionEvents measures what the metrics add to one accepted
// session: the Observer calls a connect, a good AUTH, a queued message and
// the close make. Set against BenchmarkAccept's time per session in
// internal/smtpd it is the metrics' share of the SMTP path.
func BenchmarkSessionEvents(b *testing.B) {
	m := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Connection("submission", "accepted")
			m.Auth("auth_ok")
			m.Queued(4096, time.Millisecond)
			m.Closed("submission")
		}
	})
}
