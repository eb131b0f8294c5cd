package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// curlMetrics reads the server's /metrics page with curl.
func curlMetrics(t *testing.T, curl string, s *server) (testutil.Metrics, string) {
	t.Helper()
	out, err := exec.Command(curl, "-sS", "--fail", "--max-time", "10", "http://"+s.admin+"/metrics").CombinedOutput()
	if err != nil {
		t.Fatalf("curl /metrics: %v\n%s", err, out)
	}
	m, err := testutil.ParseMetrics(string(out))
	if err != nil {
		t.Fatal(err)
	}
	return m, string(out)
}

// TestMetricsCurl: curl reads /metrics from the running binary before and
// after a failed AUTH, a refused sender and a submission that the smarthost
// receives, and the counters have moved by exactly those events.
func TestMetricsCurl(t *testing.T) {
	curl := testutil.NeedTool(t, "curl")
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	s := newServer(t, fmt.Sprintf("[delivery]\nsmarthost = %q\nsmarthost_tls = \"none\"\n", rcv.Addr))
	s.setupFirma()
	s.start()
	before, _ := curlMetrics(t, curl, s)

	bad := openRaw(t, s.subs, nil, true)
	bad.expect(authPlain("jan@firma.cz", "wrong"), "535 5.1.0 ")
	bad.expect("QUIT", "221 ")

	c := openRaw(t, s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("MAIL FROM:<info@jina.cz>", "550 5.1.0 ")
	if got := c.send("jan@firma.cz", "eva@example.org", "From: jan@firma.cz\r\nTo: eva@example.org\r\nSubject: metrics\r\n\r\nCounted.\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("DATA: %q", got)
	}
	c.expect("QUIT", "221 ")
	testutil.WaitFor(t, 30*time.Second, "the smarthost to receive the message", func() bool { return len(rcv.Messages()) == 1 })

	var after testutil.Metrics
	var page string
	testutil.WaitFor(t, 30*time.Second, "the delivery and both sessions to be counted", func() bool {
		after, page = curlMetrics(t, curl, s)
		return after.Since(before, `submitd_delivery_attempts_total{result="delivered"}`) == 1 &&
			after[`submitd_smtp_connections_open{listener="submissions"}`] == 0
	})
	for series, want := range map[string]float64{
		`submitd_smtp_connections_total{listener="submissions",outcome="accepted"}`: 2,
		`submitd_smtp_auth_total{outcome="auth_failed"}`:                            1,
		`submitd_smtp_auth_total{outcome="auth_ok"}`:                                1,
		`submitd_smtp_refusals_total{command="mail",reason="sender_rejected"}`:      1,
		`submitd_messages_accepted_total`:                                           1,
		`submitd_spool_commit_duration_seconds_count`:                               1,
		`submitd_guard_failures_total`:                                              1,
		`submitd_delivery_latency_seconds_count`:                                    1,
	} {
		if got := after.Since(before, series); got != want {
			t.Errorf("%s moved by %v, want %v", series, got, want)
		}
	}
	if after["process_start_time_seconds"] == 0 || after["go_goroutines"] == 0 {
		t.Errorf("no process or Go runtime metrics:\n%s", page)
	}
	if strings.Contains(page, "jan@firma.cz") || strings.Contains(page, "127.0.0.1") {
		t.Errorf("/metrics names a login or a client address:\n%s", page)
	}
}
