package smtpd

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"submitd/internal/metrics"
	"submitd/internal/sending"
)

// benchMessage is a 4 KiB message.
var benchMessage = func() string {
	var b strings.Builder
	b.WriteString("From: Jan <jan@firma.cz>\r\nTo: eva@example.org\r\nSubject: benchmark\r\n\r\n")
	for b.Len() < 4096-80 {
		b.WriteString(strings.Repeat("lorem ipsum ", 6) + "\r\n")
	}
	return b.String()
}()

// acceptOne runs one whole session over implicit TLS: connect, EHLO, AUTH,
// MAIL, RCPT, 4 KiB DATA (fsynced to the spool before the 250), QUIT.
func acceptOne(b *testing.B, e *testEnv) {
	c := e.dial("submissions")
	c.last()
	c.expect("EHLO bench.example", "250 ")
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	if got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, benchMessage); !strings.HasPrefix(got, "250 ") {
		b.Fatalf("DATA: %q", got)
	}
	c.send("QUIT")
	c.last()
	c.conn.Close()
}

// BenchmarkAccept measures the accept path, one client after another.
func BenchmarkAccept(b *testing.B) { benchAccept(b) }

// BenchmarkAcceptMetrics is BenchmarkAccept with the node's metrics
// counting every connection, AUTH and message; run in one go with it, the
// two show what the metrics cost the SMTP path.
func BenchmarkAcceptMetrics(b *testing.B) { benchAccept(b, withMetrics()) }

// withMetrics makes the node's metrics the server's Observer.
func withMetrics() envOption {
	return withServer(func(s *Server) { s.Metrics = metrics.New() })
}

// BenchmarkAcceptPaired runs sessions on a server without metrics and on
// one with them in turn, swapping which goes first, so that both meet the
// same load on a shared machine; it reports each one's time per session and
// their ratio (with metrics / without).
func BenchmarkAcceptPaired(b *testing.B) {
	acceptPaired(b, [2]*testEnv{newTestEnv(b), newTestEnv(b, withMetrics())}, "ns/session-plain", "ns/session-metrics")
}

// acceptPaired runs sessions on the two servers in turn, swapping which
// goes first, and reports each one's time per session under its unit and
// their ratio (the second's over the first's).
func acceptPaired(b *testing.B, envs [2]*testEnv, unit0, unit1 string) {
	var took [2]time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range 2 {
			j := (i + k) % 2
			start := time.Now()
			acceptOne(b, envs[j])
			took[j] += time.Since(start)
		}
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(b.N), unit0)
	b.ReportMetric(float64(took[1].Nanoseconds())/float64(b.N), unit1)
	b.ReportMetric(float64(took[1])/float64(took[0]), "ratio")
}

// benchAccept runs whole sessions one after another on a server set up
// with opts.
func benchAccept(b *testing.B, opts ...envOption) {
	e := newTestEnv(b, opts...)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		acceptOne(b, e)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAcceptConcurrent measures the accept path with 50 clients at once.
func BenchmarkAcceptConcurrent(b *testing.B) { benchAcceptConcurrent(b) }

// BenchmarkAcceptConcurrentMetrics is BenchmarkAcceptConcurrent with the
// node's metrics.
func BenchmarkAcceptConcurrentMetrics(b *testing.B) { benchAcceptConcurrent(b, withMetrics()) }

// benchAcceptConcurrent runs whole sessions from 50 clients at once on a
// server set up with opts.
func benchAcceptConcurrent(b *testing.B, opts ...envOption) {
	e := newTestEnv(b, append(opts, withServer(func(s *Server) { s.Limits.MaxConnsPerIP = 200 }))...)
	b.SetParallelism((50 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			acceptOne(b, e)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// withLimits gives the server the sending limiter with all four limits on
// for accounts and domains, set high enough never to refuse, so every MAIL
// and RCPT is checked and counted, and the recipient history read and
// written, as in production; overrides come from the directory.
func withLimits() envOption {
	return func(e *testEnv) {
		h, err := sending.NewSQLiteHistory(context.Background(), e.db)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { h.Close() })
		all := sending.Limits{sending.MaxValue, sending.MaxValue, sending.MaxValue, sending.MaxValue}
		e.srv.Limiter = LimiterOf(sending.New(sending.Config{Account: all, Domain: all, Overrides: e.dir, History: h}))
	}
}

// BenchmarkAcceptLimitsPaired runs sessions on a server without sending
// limits and on one with them in turn, swapping which goes first, and
// reports each one's time per session and their ratio (limits / none):
// what counting costs the accept path.
func BenchmarkAcceptLimitsPaired(b *testing.B) {
	acceptPaired(b, [2]*testEnv{newTestEnv(b), newTestEnv(b, withLimits())}, "ns/session-off", "ns/session-limits")
}
