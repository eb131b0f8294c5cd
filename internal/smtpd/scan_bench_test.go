package smtpd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
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

// BenchmarkScanLargeMessage sends 3 MiB messages from 8 clients at once to
// a server that scans each with a test scanner on loopback (it reads the
// whole body, then answers "no action"), and reports what the server and
// the test's own ends allocate per message (B/op): the message's bytes
// the session keeps for its scan show here. The clients log in before the
// clock starts.
//
//	go test -run '^$' -bench ScanLargeMessage -benchtime 100x ./internal/smtpd/
func BenchmarkScanLargeMessage(b *testing.B) {
	const size = 3 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, err := io.Copy(io.Discard, r.Body); err != nil || n != r.ContentLength {
			http.Error(w, "short body", http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	b.Cleanup(srv.Close)
	c, err := scan.New(scan.Config{URL: srv.URL, Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	e := newTestEnv(b, withServer(func(s *Server) {
		s.Scanner = c
		s.Limits.MaxMessageSize = 8 << 20
	}))
	data := []byte(bigSpamMsg(size, "the end\r\n") + ".\r\n")
	// The clients log in first: AUTH's password hashing would otherwise
	// be counted with the messages.
	par := (8 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	clients := make(chan *client, par*runtime.GOMAXPROCS(0))
	for range cap(clients) {
		clients <- e.login("smtp", "jan@firma.cz")
	}
	b.SetBytes(int64(len(data)))
	b.SetParallelism(par)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cl := <-clients
		for pb.Next() {
			cl.expect("MAIL FROM:<jan@firma.cz>", "250 ")
			cl.expect("RCPT TO:<eva@example.org>", "250 ")
			cl.expect("DATA", "354 ")
			if _, err := cl.conn.Write(data); err != nil {
				b.Error(err)
				return
			}
			if got := cl.last(); !strings.HasPrefix(got, "250 ") {
				b.Errorf("after DATA: %q", got)
				return
			}
		}
		cl.send("QUIT")
		cl.last()
	})
}
