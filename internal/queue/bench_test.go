package queue

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/delivery"
	"submitd/internal/spool"
	"submitd/internal/testutil"
)

// sink is a receiving MX that counts and discards what it gets.
type sink struct {
	// n counts messages, conns connections.
	n, conns atomic.Int64
}

type sinkSession struct{ s *sink }

func (s sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s sinkSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	s.s.n.Add(1)
	return err
}
func (s sinkSession) Reset()        {}
func (s sinkSession) Logout() error { return nil }

// peakRSS returns the process's peak resident set size in MiB (VmHWM).
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkDeliverSpool measures how fast the queue empties a spool of
// 10 000 messages (2 KiB, one recipient each, spread over 20 domains) into a
// receiver on loopback, through the real MX sender and a DNS server on
// loopback, with the default limits (50 workers, 5 per domain). It reports
// messages per second, the connections the receiver saw per run and the
// peak RSS of the whole test process (receiver and DNS server included).
// Run it with
//
//	go test -run '^$' -bench DeliverSpool -benchtime 1x ./internal/queue
func BenchmarkDeliverSpool(b *testing.B) {
	const n, domains = 10000, 20
	dns := testutil.NewDNSServer(b)
	lns := testutil.ListenSamePort(b, "127.0.0.10")
	sk := &sink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		sk.conns.Add(1)
		return sinkSession{sk}, nil
	}))
	srv.Domain = "mx.bench.test"
	go srv.Serve(lns[0])
	b.Cleanup(func() { srv.Close() })
	for d := 0; d < domains; d++ {
		dns.AddMX(fmt.Sprintf("d%d.bench.test", d), 10, "mx.bench.test")
	}
	dns.AddA("mx.bench.test", "127.0.0.10")
	body := "From: <jan@firma.test>\r\nTo: <x@bench.test>\r\nSubject: benchmark\r\n\r\n" +
		strings.Repeat(strings.Repeat("x", 76)+"\r\n", 26)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sp, err := spool.Open(b.TempDir(), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		for m := 0; m < n; m++ {
			env := &spool.Envelope{From: "jan@firma.test", To: []string{fmt.Sprintf("u%d@d%d.bench.test", m, m%domains)},
				SessionID: "benchAAAAAAAAAAAAAAAAA", Received: time.Now()}
			w, err := sp.Create(env)
			if err != nil {
				b.Fatal(err)
			}
			io.WriteString(w, body)
			if err := w.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		q, err := New(Config{
			Spool: sp,
			Sender: delivery.NewMX(delivery.MXConfig{SessionConfig: delivery.SessionConfig{Hostname: "submit.test"},
				Resolver: &delivery.Resolver{Addr: dns.Addr}, Port: lns[0].Addr().(*net.TCPAddr).Port}),
			Hostname: "submit.test", Workers: 50, PerDomain: 5,
		})
		if err != nil {
			b.Fatal(err)
		}
		envs, err := sp.Load()
		if err != nil {
			b.Fatal(err)
		}
		before, conns := sk.n.Load(), sk.conns.Load()
		b.StartTimer()
		start := time.Now()
		q.Load(envs)
		q.RunDue(context.Background())
		total += time.Since(start)
		b.StopTimer()
		q.Close()
		q.cfg.Sender.(delivery.IdleCloser).CloseIdle()
		b.ReportMetric(float64(sk.conns.Load()-conns), "conns")
		if got := sk.n.Load() - before; got != n {
			b.Fatalf("receiver got %d of %d messages", got, n)
		}
		if left, _ := sp.List(); len(left) != 0 {
			b.Fatalf("%d messages left in the spool", len(left))
		}
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "msgs/s")
	b.ReportMetric(peakRSS(), "peakRSS-MiB")
}
