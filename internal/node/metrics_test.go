package node

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// scrape reads the node's /metrics page.
func scrape(t *testing.T, n *Node) (testutil.Metrics, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	m, err := testutil.ParseMetrics(string(body))
	if err != nil {
		t.Fatal(err)
	}
	return m, string(body)
}

// TestNodeMetrics: the counters on [admin] listen move with what clients
// do: a failed and a good AUTH, a refused sender, a message accepted and
// delivered through the smarthost.
func TestNodeMetrics(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	n := startNode(t, testConfig(t, rcv.Addr))
	before, _ := scrape(t, n)

	c, err := smtp.DialStartTLS(n.Addr("submission"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "jan@firma.test", "wrong-pw")); err == nil {
		t.Fatal("AUTH with a wrong password succeeded")
	}
	if err := c.Auth(sasl.NewPlainClient("", "jan@firma.test", "secret-pw")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("petr@jina.test", nil); err == nil || !strings.Contains(err.Error(), "sender rejected") {
		t.Fatalf("MAIL FROM another domain: %v", err)
	}
	if err := c.SendMail("jan@firma.test", []string{"petr@example.test"},
		strings.NewReader("From: jan@firma.test\r\nTo: petr@example.test\r\nSubject: metrics\r\n\r\nCounted.\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	testutil.WaitFor(t, 20*time.Second, "the delivery", func() bool { return len(rcv.Messages()) == 1 })

	var after testutil.Metrics
	var page string
	testutil.WaitFor(t, 20*time.Second, "the delivery and the closed session to be counted", func() bool {
		after, page = scrape(t, n)
		return after.Since(before, `submitd_delivery_attempts_total{result="delivered"}`) == 1 &&
			after.Since(before, "submitd_queue_messages_finished_total") == 1 &&
			after[`submitd_smtp_connections_open{listener="submission"}`] == 0
	})
	for series, want := range map[string]float64{
		`submitd_smtp_connections_total{listener="submission",outcome="accepted"}`: 1,
		`submitd_smtp_auth_total{outcome="auth_failed"}`:                           1,
		`submitd_smtp_auth_total{outcome="auth_ok"}`:                               1,
		`submitd_smtp_refusals_total{command="mail",reason="sender_rejected"}`:     1,
		`submitd_messages_accepted_total`:                                          1,
		`submitd_spool_commit_duration_seconds_count`:                              1,
		`submitd_delivery_attempt_duration_seconds_count`:                          1,
		`submitd_delivery_latency_seconds_count`:                                   1,
		`submitd_guard_failures_total`:                                             1,
		`submitd_queue_messages_finished_total`:                                    1,
	} {
		if got := after.Since(before, series); got != want {
			t.Errorf("%s grew by %v, want %v", series, got, want)
		}
	}
	if b := after.Since(before, "submitd_messages_accepted_bytes_total"); b < 60 {
		t.Errorf("accepted bytes grew by %v", b)
	}
	for _, series := range []string{`submitd_queue_messages{state="deferred"}`, "submitd_queue_oldest_message_age_seconds",
		"submitd_guard_blocked_keys", "submitd_sessionlog_backlog_records", "submitd_trace_backlog_items", "submitd_refusals_unrecorded_total", "go_goroutines", "process_open_fds"} {
		if _, ok := after[series]; !ok {
			t.Errorf("no series %s", series)
		}
	}
	if after["submitd_sessionlog_backlog_capacity_records"] != 4096 {
		t.Errorf("session log capacity %v", after["submitd_sessionlog_backlog_capacity_records"])
	}
	// Labels never carry what clients send or who they are.
	for _, s := range []string{"jan@firma.test", "petr@", "127.0.0.1"} {
		if strings.Contains(page, s) {
			t.Errorf("/metrics mentions %q", s)
		}
	}
}

// TestNodeMetricsNetworks: a client outside [admin] metrics_networks is
// refused, and told a bearer token would let it in.
func TestNodeMetricsNetworks(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Admin.MetricsNetworks = []string{"192.0.2.0/24"}
	n := startNode(t, cfg)
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "submitd_") {
		t.Fatalf("from outside metrics_networks: %d\n%s", resp.StatusCode, body)
	}
}
