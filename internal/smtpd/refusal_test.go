package smtpd

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"submitd/internal/guard"
	"submitd/internal/sessionlog"
	"submitd/internal/testutil"
	"submitd/internal/trace"
)

// withRefusals records the refused connections' episodes (trace.Refusals)
// in the env's database, through a session log writer of their own.
func withRefusals(st **sessionlog.SQLite) envOption {
	return func(e *testEnv) {
		s, err := sessionlog.NewSQLite(context.Background(), e.db)
		if err != nil {
			e.t.Fatal(err)
		}
		w := sessionlog.NewWriter(s, time.Hour, slog.New(slog.DiscardHandler))
		r := trace.NewRefusals(w)
		e.t.Cleanup(func() { r.Close(); w.Close() })
		e.srv.Refusals = r
		*st = s
	}
}

// refusedID connects to listener, reads the refusal and returns its
// session id.
func refusedID(t testing.TB, addr string, implicit bool) string {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var r io.Reader = nc
	if implicit {
		r = tls.Client(nc, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.test"})
	}
	line, err := io.ReadAll(r)
	if err != nil && !strings.HasPrefix(string(line), "554 ") {
		t.Fatalf("refusal: %q, %v", line, err)
	}
	f := strings.Fields(string(line))
	if len(f) < 3 || f[0] != "554" {
		t.Fatalf("refusal line %q", line)
	}
	return f[2]
}

// TestRefusalIDsLookedUp: every connection refused because its IP is
// blocked gets its own session id, and each of them, whether the first or
// one of a flood, leads to the record of the refusals: who, why, how many,
// and the reply as that connection got it (SPEC R13a).
func TestRefusalIDsLookedUp(t *testing.T) {
	var st *sessionlog.SQLite
	e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 1}), withRefusals(&st))
	c := e.session("plain", nil)
	c.cmd(plain("jan@firma.cz", "wrong"))
	var sids []string
	for range 20 {
		sids = append(sids, refusedID(t, e.addrs["plain"], false))
	}
	tlsID := refusedID(t, e.addrs["submissions"], true)
	seen := map[string]bool{}
	for _, id := range append(sids, tlsID) {
		if seen[id] || len(id) != 22 {
			t.Fatalf("id %q repeated or malformed", id)
		}
		seen[id] = true
	}
	var rec *sessionlog.Record
	testutil.WaitFor(t, 10*time.Second, "the refusals recorded", func() bool {
		var err error
		rec, err = trace.Refusal(context.Background(), st, sids[0])
		return err == nil
	})
	if rec.ID != sids[0] || rec.ClientIP != "127.0.0.1" || rec.Listener != "plain" || len(rec.Events) != 1 ||
		rec.Events[0].Kind != "refused" || !strings.HasPrefix(rec.Events[0].Reply, "554 5.1.0 "+sids[0]+" Connection refused from 127.0.0.1") {
		t.Fatalf("record of the first refusal: %+v", rec)
	}
	last, err := trace.Refusal(context.Background(), st, sids[19])
	if err != nil || last.ID != sids[19] || !strings.Contains(last.Events[0].Reply, sids[19]) {
		t.Fatalf("record of the 20th refusal: %+v, %v", last, err)
	}
	// The count catches up at the next flush.
	testutil.WaitFor(t, 20*time.Second, "the count of 20 refusals saved", func() bool {
		r, err := trace.Refusal(context.Background(), st, sids[5])
		return err == nil && strings.Contains(r.Events[0].Detail, "20 connection(s) refused")
	})
	if r, err := trace.Refusal(context.Background(), st, tlsID); err != nil || r.Listener != "submissions" {
		t.Errorf("refusal on the implicit-TLS listener: %+v, %v", r, err)
	}
	if _, err := trace.Refusal(context.Background(), st, "AAAAAAAAAAAAAAAAAAAAAA"); err == nil {
		t.Error("an unknown id was explained")
	}
}

// BenchmarkRefusalRecorded measures the refusal path of a blocked client
// on a server without refusal records and on one with them
// (trace.Refusals), in turn, so that both meet the same load on a shared
// machine, over plain TCP and over implicit TLS. It reports each one's
// refusals per second and their ratio (recorded / plain): the W6
// workload's figure, side by side.
func BenchmarkRefusalRecorded(b *testing.B) {
	for _, lc := range []struct {
		name     string
		listener string
		implicit bool
	}{{"plain", "plain", false}, {"implicit-tls", "submissions", true}} {
		b.Run(lc.name, func(b *testing.B) {
			var st *sessionlog.SQLite
			envs := [2]*testEnv{
				newTestEnv(b, withGuard(guard.Config{MaxFailures: 1})),
				newTestEnv(b, withGuard(guard.Config{MaxFailures: 1}), withRefusals(&st)),
			}
			for _, e := range envs {
				c := e.session("plain", nil)
				c.cmd(plain("jan@firma.cz", "wrong"))
			}
			var took [2]time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range 2 {
					j := (i + k) % 2
					start := time.Now()
					refusedID(b, envs[j].addrs[lc.listener], lc.implicit)
					took[j] += time.Since(start)
				}
			}
			b.ReportMetric(float64(b.N)/took[0].Seconds(), "refusals/s-plain")
			b.ReportMetric(float64(b.N)/took[1].Seconds(), "refusals/s-recorded")
			b.ReportMetric(float64(took[0])/float64(took[1]), "ratio")
		})
	}
}
