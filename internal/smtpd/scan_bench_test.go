package smtpd

import (
	"context"
	"sync"
	"testing"
	"time"

	"submitd/internal/scan"
	"submitd/internal/testutil"
)

// timedScanner is the real scanner, summing how long its scans took and
// what rspamd reported as its own time (time_real).
type timedScanner struct {
	*scan.Client
	mu             sync.Mutex
	n              int
	took, rspamdIn time.Duration
}

func (s *timedScanner) Scan(ctx context.Context, m *scan.Message) scan.Result {
	r := s.Client.Scan(ctx, m)
	if r.Verdict != nil {
		s.mu.Lock()
		s.n++
		s.took += r.Took
		s.rspamdIn += r.Verdict.TimeReal
		s.mu.Unlock()
	}
	return r
}

// BenchmarkAcceptScanPaired runs sessions (a 4 KiB message each) on a
// server without content scanning and on one scanning with a real rspamd
// in turn, swapping which goes first, and reports each one's time per
// session and their ratio; and of the scans, their mean time as submitd
// waits for them (ns/scan), rspamd's own time_real (ns/rspamd), and the
// difference (ns/beyond-rspamd): the HTTP exchange and submitd's share.
//
//	go test -run '^$' -bench AcceptScanPaired -benchtime 200x ./internal/smtpd/
func BenchmarkAcceptScanPaired(b *testing.B) {
	rs := testutil.StartRspamd(b)
	c, err := scan.New(scan.Config{URL: rs.URL})
	if err != nil {
		b.Fatal(err)
	}
	ts := &timedScanner{Client: c}
	scanning := newTestEnv(b, withServer(func(s *Server) { s.Scanner = ts }))
	acceptPaired(b, [2]*testEnv{newTestEnv(b), scanning}, "ns/session-off", "ns/session-scan")
	if ts.n != b.N {
		b.Fatalf("%d scans with a verdict of %d messages", ts.n, b.N)
	}
	n := float64(ts.n)
	b.ReportMetric(float64(ts.took.Nanoseconds())/n, "ns/scan")
	b.ReportMetric(float64(ts.rspamdIn.Nanoseconds())/n, "ns/rspamd")
	b.ReportMetric(float64((ts.took-ts.rspamdIn).Nanoseconds())/n, "ns/beyond-rspamd")
}
