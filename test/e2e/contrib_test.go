package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// contribDir is the operator files' directory in the repository.
const contribDir = "../../contrib"

// TestSystemdUnits: systemd-analyze verify accepts contrib/systemd's units
// (with ExecStart pointing at the built binary, since verify wants the
// command to exist), and their offline security exposure stays at most
// 2.0 of 10, so that a change that drops a hardening setting fails here.
func TestSystemdUnits(t *testing.T) {
	sa := testutil.NeedTool(t, "systemd-analyze")
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"submitd.socket", "submitd.service"} {
		b, err := os.ReadFile(filepath.Join(contribDir, "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/local/bin/submitd", buildBinary(t))
		units = append(units, filepath.Join(dir, name))
		if err := os.WriteFile(units[len(units)-1], []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(sa, append([]string{"verify"}, units...)...).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// --threshold counts in tenths of the exposure level.
	if out, err := exec.Command(sa, "security", "--offline=true", "--threshold=20", units[1]).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
}

// TestPrometheusRules: promtool accepts contrib/prometheus's alert rules.
func TestPrometheusRules(t *testing.T) {
	promtool := testutil.NeedTool(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", filepath.Join(contribDir, "prometheus", "submitd-rules.yml")).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}

// metricName finds submitd's metric names in rules and queries.
var metricName = regexp.MustCompile(`\bsubmitd_[a-z0-9_]+\b`)

// TestMonitoringMetricsExist: every metric the alert rules and the Grafana
// dashboard name is on a running node's /metrics, after the events that
// make labelled series appear (a connection, AUTH, a refused sender, a
// delivery) and with the guard's store in Redis. The rules' "up" is the
// one series Prometheus makes itself.
func TestMonitoringMetricsExist(t *testing.T) {
	curl := testutil.NeedTool(t, "curl")
	rd := testutil.StartRedis(t)
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	s := newServer(t, fmt.Sprintf("[delivery]\nsmarthost = %q\nsmarthost_tls = \"none\"\n[guard]\nstore = \"redis\"\nredis_url = %q\n",
		rcv.Addr, rd.URL()))
	s.setupFirma()
	s.start()
	bad := openRaw(t, s.subs, nil, true)
	bad.expect(authPlain("jan@firma.cz", "wrong"), "535 ")
	bad.expect("QUIT", "221 ")
	c := openRaw(t, s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("MAIL FROM:<info@jina.cz>", "550 ")
	c.expect("QUIT", "221 ")
	submitVia(t, s.subs, "eva@example.org")
	testutil.WaitFor(t, 30*time.Second, "the delivery", func() bool { return len(rcv.Messages()) == 1 })
	// The attempt is counted once the receiver's 250 is back, after the
	// receiver holds the message.
	var page string
	testutil.WaitFor(t, 30*time.Second, "the delivery to be counted", func() bool {
		var m testutil.Metrics
		m, page = curlMetrics(t, curl, s)
		return m[`submitd_delivery_attempts_total{result="delivered"}`] == 1
	})
	exposed := map[string]bool{}
	for _, l := range strings.Split(page, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		exposed[l[:strings.IndexAny(l, "{ ")]] = true
	}
	rules, err := os.ReadFile(filepath.Join(contribDir, "prometheus", "submitd-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dashboard, err := os.ReadFile(filepath.Join(contribDir, "grafana", "submitd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	named := map[string][]string{}
	for _, m := range metricName.FindAllString(string(rules), -1) {
		named[m] = append(named[m], "rules")
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				named[m] = append(named[m], "dashboard panel "+p.Title)
			}
		}
	}
	if len(named) < 10 {
		t.Fatalf("only %d metric names found in the rules and the dashboard", len(named))
	}
	for m, where := range named {
		if !exposed[m] {
			t.Errorf("%s (%s) is not on /metrics", m, strings.Join(slices.Compact(where), ", "))
		}
	}
}
