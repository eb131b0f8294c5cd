package main

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/metrics"
	"submitd/internal/scan"
)

// scanningServer is the test SMTP server reporting a scan of every message
// to submitd's own metrics, served at the URL it returns: each message's
// scan is what verdict says, taking 3 ms of which rspamd's time_real is
// 1 ms.
func scanningServer(t *testing.T, verdict func(o scan.Observer, n int64)) (*testServer, string) {
	t.Helper()
	m := metrics.New()
	o := m.Scan(func() bool { return false })
	// Scans before the load (another run's) must not count.
	o.Scanned("no action", time.Second, time.Second)
	o.Unscanned(scan.ReasonError)
	hs := httptest.NewServer(m.Handler())
	t.Cleanup(hs.Close)
	var n atomic.Int64
	ts := startTestServer(t, testServerOptions{onData: func() { verdict(o, n.Add(1)) }})
	return ts, hs.URL + "/metrics"
}

func TestScanFigures(t *testing.T) {
	ts, url := scanningServer(t, func(o scan.Observer, _ int64) { o.Scanned("no action", 3*time.Millisecond, time.Millisecond) })
	res, line := runCLI(t, "-addr", ts.addr, "-c", "2", "-n", "6", "-duration", "1m", "-user", "user%d@test.server",
		"-password", testPassword, "-src", "127.0.0.1", "-scan-metrics", url, "-strict")
	for _, r := range []*result{res, line} {
		s := r.Scan
		if s == nil || s.Scanned != 6 || s.Actions["no action"] != 6 || len(s.Actions) != 1 || s.Unscanned != nil {
			t.Fatalf("scan figures %+v, want the 6 scans of the load only", s)
		}
		for _, f := range []struct {
			name      string
			got, want float64
		}{{"mean", s.MeanMs, 3}, {"rspamd", s.RspamdMs, 1}, {"beyond rspamd", s.BeyondMs, 2}} {
			if math.Abs(f.got-f.want) > 1e-6 {
				t.Errorf("%s = %v ms, want %v", f.name, f.got, f.want)
			}
		}
	}
}

func TestScanFaults(t *testing.T) {
	args := func(url, addr string) []string {
		return []string{"-addr", addr, "-c", "1", "-n", "6", "-duration", "1m", "-user", "user%d@test.server",
			"-password", testPassword, "-src", "127.0.0.1", "-scan-metrics", url, "-strict"}
	}
	// A bench message rspamd flags would count towards the account's
	// spam signal: the run no longer measures plain submissions.
	ts, url := scanningServer(t, func(o scan.Observer, n int64) {
		action := "no action"
		if n%3 == 0 {
			action = "add header"
		}
		o.Scanned(action, time.Millisecond, time.Millisecond)
	})
	_, err := run(context.Background(), args(url, ts.addr), io.Discard)
	if !errors.Is(err, errFaults) || !strings.Contains(err.Error(), `unexpected replies: scan "add header"×2`) {
		t.Errorf("err = %v, want the 2 flagged messages named", err)
	}
	if _, err := run(context.Background(), append(args(url, ts.addr), "-expect", "scan=add header"), io.Discard); err != nil {
		t.Errorf("with -expect scan=add header: %v", err)
	}
	// Messages that went on unscanned (on_error = "accept") were accepted
	// without the scan's cost.
	ts, url = scanningServer(t, func(o scan.Observer, n int64) {
		if n%2 == 0 {
			o.Unscanned(scan.ReasonTimeout)
		} else {
			o.Scanned("no action", time.Millisecond, time.Millisecond)
		}
	})
	_, err = run(context.Background(), args(url, ts.addr), io.Discard)
	if !errors.Is(err, errFaults) || !strings.Contains(err.Error(), `scan "unscanned timeout"×3`) ||
		!strings.Contains(err.Error(), "missing: 3 scans for 6 accepted messages") {
		t.Errorf("err = %v, want the unscanned messages named", err)
	}
	// No metrics there: the run fails rather than giving no scan figures.
	ts = startTestServer(t, testServerOptions{})
	if _, err := run(context.Background(), args("http://127.0.0.1:1/metrics", ts.addr), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "-scan-metrics") {
		t.Errorf("err = %v, want the scrape's failure", err)
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader("# HELP x y\n# TYPE x counter\n" +
		"submitd_scan_total{action=\"no action\"} 4\nsubmitd_scan_duration_seconds_sum 0.25 1700000000000\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[`submitd_scan_total{action="no action"}`] != 4 || m["submitd_scan_duration_seconds_sum"] != 0.25 {
		t.Errorf("parsed %v", m)
	}
	if got := m.byLabel("submitd_scan_total", "action"); len(got) != 1 || got["no action"] != 4 {
		t.Errorf("byLabel = %v", got)
	}
	for _, bad := range []string{"novalue\n", "{a=\"b\"} 1\n", "x{a=\"b\"} one\n"} {
		if _, err := parseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
