package smtpd

import (
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"submitd/internal/metrics"
	"submitd/internal/testutil"
)

// The node hands its metrics to the server as the Observer.
var _ Observer = (*metrics.Metrics)(nil)

// scrapeMetrics reads m's /metrics page.
func scrapeMetrics(t testing.TB, m *metrics.Metrics) testutil.Metrics {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(w.Result().Body)
	p, err := testutil.ParseMetrics(string(body))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestObserverCounts: each way a session can go is counted once, under the
// reply key the client was answered with.
func TestObserverCounts(t *testing.T) {
	m := metrics.New()
	e := newTestEnv(t, withServer(func(s *Server) { s.Metrics = m }))
	before := scrapeMetrics(t, m)
	// The series that exist before any event carry smtpd's own reply keys.
	for _, key := range []string{ReplyAuthOK, ReplyAuthFailed, ReplyAuthRejected, ReplyAuthDisabled, ReplyBlocked} {
		if _, ok := before[`submitd_smtp_auth_total{outcome="`+key+`"}`]; !ok {
			t.Errorf("no AUTH series for %s before any AUTH", key)
		}
	}
	for _, s := range []string{`submitd_smtp_refusals_total{command="mail",reason="` + ReplySenderRejected + `"}`,
		`submitd_smtp_refusals_total{command="data",reason="` + ReplyHeaderRejected + `"}`} {
		if _, ok := before[s]; !ok {
			t.Errorf("no series %s before any refusal", s)
		}
	}

	c := e.open("submissions")
	c.expect(plain("jan@firma.cz", "wrong"), "535 ")
	c.expect(plain("nikdo@firma.cz", testPassword), "535 ")
	c.expect(plain("zakazany@firma.cz", testPassword), "535 ")
	c.expect("AUTH CRAM-MD5", "504 ")
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	c.expect("MAIL FROM:<eva@jina.cz>", "550 ")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<not an address>", "501 ")
	c.expect("RSET", "250 ")
	if got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: boss@gmail.com")); got[:3] != "550" {
		t.Fatalf("foreign From: accepted: %q", got)
	}
	if got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("Subject: no From")); got[:3] != "550" {
		t.Fatalf("no From: accepted: %q", got)
	}
	if got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: jan@firma.cz")); got[:3] != "250" {
		t.Fatalf("good message: %q", got)
	}
	c.expect("QUIT", "221 ")
	// AUTH before TLS on a listener that needs it.
	p := e.session("smtp", nil)
	p.expect(plain("jan@firma.cz", testPassword), "538 ")
	p.expect("QUIT", "221 ")

	var after testutil.Metrics
	testutil.WaitFor(t, 10*time.Second, "both sessions to be closed", func() bool {
		after = scrapeMetrics(t, m)
		return after.Since(before, `submitd_smtp_connections_total{listener="smtp",outcome="accepted"}`) == 1 &&
			after[`submitd_smtp_connections_open{listener="submissions"}`] == 0 &&
			after[`submitd_smtp_connections_open{listener="smtp"}`] == 0
	})
	for series, want := range map[string]float64{
		`submitd_smtp_connections_total{listener="submissions",outcome="accepted"}`:   1,
		`submitd_smtp_auth_total{outcome="auth_failed"}`:                              1,
		`submitd_smtp_auth_total{outcome="auth_rejected"}`:                            1,
		`submitd_smtp_auth_total{outcome="auth_disabled"}`:                            1,
		`submitd_smtp_auth_total{outcome="auth_mechanism"}`:                           1,
		`submitd_smtp_auth_total{outcome="auth_needs_tls"}`:                           1,
		`submitd_smtp_auth_total{outcome="auth_ok"}`:                                  1,
		`submitd_smtp_refusals_total{command="auth",reason="auth_needs_tls"}`:         1,
		`submitd_smtp_refusals_total{command="mail",reason="sender_rejected"}`:        1,
		`submitd_smtp_refusals_total{command="rcpt",reason="bad_recipient"}`:          1,
		`submitd_smtp_refusals_total{command="data",reason="header_sender_rejected"}`: 1,
		`submitd_smtp_refusals_total{command="data",reason="no_from"}`:                1,
		`submitd_messages_accepted_total`:                                             1,
		`submitd_spool_commit_duration_seconds_count`:                                 1,
	} {
		if got := after.Since(before, series); got != want {
			t.Errorf("%s moved by %v, want %v", series, got, want)
		}
	}
	if b := after.Since(before, "submitd_messages_accepted_bytes_total"); b < float64(len(msg("From: jan@firma.cz"))) {
		t.Errorf("accepted bytes moved by %v", b)
	}
}

// TestObserverRefusedConnection: a connection over the per-IP limit is
// counted under its reply key, and never as open.
func TestObserverRefusedConnection(t *testing.T) {
	m := metrics.New()
	e := newTestEnv(t, withServer(func(s *Server) { s.Metrics = m; s.Limits.MaxConnsPerIP = 1 }))
	first := e.session("smtp", nil)
	second := e.dial("smtp")
	if got := second.last(); got[:3] != "421" {
		t.Fatalf("second connection: %q", got)
	}
	got := scrapeMetrics(t, m)
	if got[`submitd_smtp_connections_total{listener="smtp",outcome="too_many_connections"}`] != 1 ||
		got[`submitd_smtp_connections_total{listener="smtp",outcome="accepted"}`] != 1 ||
		got[`submitd_smtp_connections_open{listener="smtp"}`] != 1 {
		t.Fatalf("connection series: %v", got)
	}
	first.expect("QUIT", "221 ")
}
