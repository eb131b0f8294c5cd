package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/guard"
	"submitd/internal/redisconn"
	"submitd/internal/sessionlog"
	"submitd/internal/testutil"
)

// get runs one request through h from remote and returns the status and
// body.
func get(t *testing.T, h http.Handler, remote, auth string) (int, string) {
	t.Helper()
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.RemoteAddr = remote
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body)
}

// scrape parses what the handler serves.
func scrape(t *testing.T, m *Metrics) testutil.Metrics {
	t.Helper()
	code, body := get(t, m.Handler(), "127.0.0.1:40000", "")
	if code != http.StatusOK {
		t.Fatalf("scrape: %d\n%s", code, body)
	}
	p, err := testutil.ParseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEvents: what the SMTP server and the queue report shows in the
// series docs/operations.md lists.
func TestEvents(t *testing.T) {
	m := New()
	before := scrape(t, m)
	for _, series := range []string{`submitd_smtp_auth_total{outcome="auth_failed"}`, `submitd_delivery_attempts_total{result="failed"}`} {
		if v, ok := before[series]; !ok || v != 0 {
			t.Errorf("%s before any event: %v %v; want 0", series, v, ok)
		}
	}
	m.Connection("submission", "accepted")
	m.Connection("submission", "accepted")
	m.Connection("submissions", "blocked")
	m.Closed("submission")
	m.Auth("auth_failed")
	m.Refused("mail", "sender_rejected")
	m.Queued(2048, 3*time.Millisecond)
	m.Attempted([]delivery.Result{{Status: delivery.Delivered}, {Status: delivery.Temporary}}, 40*time.Millisecond, time.Minute)
	got := scrape(t, m)
	for series, want := range map[string]float64{
		`submitd_smtp_connections_total{listener="submission",outcome="accepted"}`: 2,
		`submitd_smtp_connections_total{listener="submissions",outcome="blocked"}`: 1,
		`submitd_smtp_connections_open{listener="submission"}`:                     1,
		`submitd_smtp_auth_total{outcome="auth_failed"}`:                           1,
		`submitd_smtp_refusals_total{command="mail",reason="sender_rejected"}`:     1,
		`submitd_messages_accepted_total`:                                          1,
		`submitd_messages_accepted_bytes_total`:                                    2048,
		`submitd_spool_commit_duration_seconds_count`:                              1,
		`submitd_spool_commit_duration_seconds_bucket{le="0.005"}`:                 1,
		`submitd_spool_commit_duration_seconds_bucket{le="0.0025"}`:                0,
		`submitd_delivery_attempts_total{result="delivered"}`:                      1,
		`submitd_delivery_attempts_total{result="deferred"}`:                       1,
		`submitd_delivery_attempt_duration_seconds_count`:                          1,
		`submitd_delivery_latency_seconds_count`:                                   1,
		`submitd_delivery_latency_seconds_sum`:                                     60,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
	if got["go_goroutines"] == 0 || got["process_resident_memory_bytes"] == 0 {
		t.Errorf("no Go runtime or process metrics: go_goroutines %v, process_resident_memory_bytes %v",
			got["go_goroutines"], got["process_resident_memory_bytes"])
	}
}

// TestReadAtScrape: the guard's and the session log's counters are read at
// every scrape, not copied once.
func TestReadAtScrape(t *testing.T) {
	m := New()
	var gs guard.Stats
	var ws sessionlog.WriterStats
	m.Guard(func() guard.Stats { return gs })
	m.SessionLog(func() sessionlog.WriterStats { return ws })
	gs = guard.Stats{Failures: 7, Blocks: 2, Refusals: 5, BlockedKeys: 1}
	ws = sessionlog.WriterStats{Backlog: 12, Capacity: 4096, Dropped: 3}
	got := scrape(t, m)
	for series, want := range map[string]float64{
		"submitd_guard_failures_total":                7,
		"submitd_guard_blocks_total":                  2,
		"submitd_guard_refusals_total":                5,
		"submitd_guard_blocked_keys":                  1,
		"submitd_sessionlog_backlog_records":          12,
		"submitd_sessionlog_backlog_capacity_records": 4096,
		"submitd_sessionlog_dropped_records_total":    3,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
	gs.Failures = 8
	if got := scrape(t, m)["submitd_guard_failures_total"]; got != 8 {
		t.Errorf("second scrape: submitd_guard_failures_total = %v, want 8", got)
	}
}

// TestGate: the metrics networks read freely; anyone else needs a token
// the check accepts, or is refused outright when there is no check.
func TestGate(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "submitd_up 1\n") })
	nets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	token := func(s string) bool { return s == "s3cret" }
	withToken, withoutToken := Gate(ok, nets, token), Gate(ok, nets, nil)
	tests := []struct {
		name   string
		h      http.Handler
		remote string
		auth   string
		want   int
	}{
		{"from the networks", withoutToken, "10.1.2.3:5000", "", 200},
		{"IPv6 loopback", withoutToken, "[::1]:5000", "", 200},
		{"IPv4-mapped", withoutToken, "[::ffff:10.1.2.3]:5000", "", 200},
		{"outside, no token check", withoutToken, "192.0.2.1:5000", "Bearer s3cret", 403},
		{"outside, no token", withToken, "192.0.2.1:5000", "", 401},
		{"outside, wrong token", withToken, "192.0.2.1:5000", "Bearer guess", 401},
		{"outside, other scheme", withToken, "192.0.2.1:5000", "Basic s3cret", 401},
		{"outside, empty token", withToken, "192.0.2.1:5000", "Bearer ", 401},
		{"outside, token", withToken, "192.0.2.1:5000", "Bearer s3cret", 200},
		{"outside, scheme in lower case", withToken, "192.0.2.1:5000", "bearer s3cret", 200},
	}
	for _, tc := range tests {
		code, body := get(t, tc.h, tc.remote, tc.auth)
		if code != tc.want || (code == 200) != strings.Contains(body, "submitd_up") {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.RemoteAddr = "192.0.2.1:5000"
	w := httptest.NewRecorder()
	withToken.ServeHTTP(w, r)
	if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("401 without a Bearer challenge: %q", got)
	}
}

// TestGuardSharedStoreGauge: a guard on Redis reports 1 while Redis answers
// and 0 once a step found it gone; a guard counting alone by design has no
// such series.
func TestGuardSharedStoreGauge(t *testing.T) {
	r := testutil.StartRedis(t)
	rc, err := redisconn.Open(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	st, err := guard.NewRedis(rc, "guard", guard.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g, err := guard.New(ctx, guard.Config{}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	m.Guard(g.Stats)
	if got := scrape(t, m)["submitd_guard_shared_store_up"]; got != 1 {
		t.Fatalf("submitd_guard_shared_store_up = %v with Redis up, want 1", got)
	}
	r.Stop()
	g.Failure(netip.MustParseAddr("192.0.2.1"), "s")
	if got := scrape(t, m)["submitd_guard_shared_store_up"]; got != 0 {
		t.Fatalf("submitd_guard_shared_store_up = %v with Redis stopped, want 0", got)
	}

	alone, err := guard.New(ctx, guard.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m = New()
	m.Guard(alone.Stats)
	if _, ok := scrape(t, m)["submitd_guard_shared_store_up"]; ok {
		t.Fatal("a guard without a shared store reports submitd_guard_shared_store_up")
	}
}
