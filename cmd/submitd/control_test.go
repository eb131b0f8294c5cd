package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"submitd/internal/admin"
	"submitd/internal/config"
	"submitd/internal/node"
	"submitd/internal/sending"
	"submitd/internal/testutil"
)

// lastAudit returns the newest audit entry in the CLI's database.
func (c *cli) lastAudit() admin.Entry {
	c.t.Helper()
	st, err := admin.NewSQLite(context.Background(), testutil.OpenDBIn(c.t, c.dataDir))
	if err != nil {
		c.t.Fatal(err)
	}
	es, _, err := st.Audit(context.Background(), admin.AuditQuery{Limit: 1})
	if err != nil || len(es) == 0 {
		c.t.Fatalf("no audit entry: %v", err)
	}
	return es[0]
}

// must runs a command that must succeed and returns its output.
func (c *cli) must(stdin string, args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("submitd %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// TestCLIWithoutServer: with no server running, changes go to the stores
// and are audited as cli:USER.
func TestCLIWithoutServer(t *testing.T) {
	c := newCLI(t, "bcrypt")
	c.must("", "domain", "add", "firma.cz")
	c.must("heslo\n", "account", "add", "jan@firma.cz")
	if out := c.must("", "account", "disable", "jan@firma.cz"); out != "disabled SMTP access of jan@firma.cz\n" {
		t.Errorf("disable: %q", out)
	}
	a, err := c.store().Account(context.Background(), "jan@firma.cz")
	if err != nil || a.SMTPAccess {
		t.Fatalf("account %+v, %v: still enabled", a, err)
	}
	e := c.lastAudit()
	if e.Actor != admin.CLIActor() || e.Action != "account.disable" || e.Target != "account:jan@firma.cz" ||
		string(e.Before) != `{"smtp_access":true}` || string(e.After) != `{"smtp_access":false}` {
		t.Errorf("audit entry %+v", e)
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "admin.sock")); err == nil {
		t.Error("a socket exists without a server")
	}

	c.must("pw\n", "staff", "add", "petra", "-role", "support")
	tok := strings.TrimSpace(c.must("", "staff", "token", "petra"))
	if !strings.HasPrefix(tok, "sdt_") {
		t.Fatalf("token %q", tok)
	}
	if out := c.must("", "staff", "list"); !strings.HasPrefix(out, "petra\tsupport\t") {
		t.Errorf("staff list: %q", out)
	}
	out := c.must("", "staff", "tokens", "petra")
	id := strings.SplitN(out, "\t", 2)[0]
	if out := c.must("", "staff", "token", "-revoke", id); out != "revoked token "+id+" of petra\n" {
		t.Errorf("revoke: %q", out)
	}
	if e := c.lastAudit(); e.Action != "staff.token.revoke" || e.Actor != admin.CLIActor() {
		t.Errorf("audit entry %+v", e)
	}
	if code, _, errOut := c.run("", "staff", "add", "olga", "-role", "root"); code != 2 || !strings.Contains(errOut, "role") {
		t.Errorf("bad role: %d %s", code, errOut)
	}
}

// syncLog collects a node's log.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serve runs a server on the CLI's data_dir, on loopback ports of its own,
// until the test ends, and returns it with its log once it has started.
func (c *cli) serve() (*node.Node, *syncLog) {
	t := c.t
	t.Helper()
	body := fmt.Sprintf("data_dir = %q\n[auth]\npassword_scheme = \"bcrypt\"\n[listen]\nsmtp = \"127.0.0.1:0\"\nsubmission = \"127.0.0.1:0\"\nsubmissions = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[delivery]\nsmarthost = \"127.0.0.1:1\"\nsmarthost_tls = \"none\"\n", c.dataDir)
	if err := os.WriteFile(c.cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := &syncLog{}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for !strings.Contains(log.String(), "submitd started") {
		time.Sleep(10 * time.Millisecond)
	}
	return n, log
}

// TestCLIThroughServer: while a server runs, CLI changes go through its
// unix socket: the server logs and audits them as cli:USER, and applies an
// unblock in its memory at once.
func TestCLIThroughServer(t *testing.T) {
	c := newCLI(t, "bcrypt")
	c.must("", "domain", "add", "firma.cz")
	c.must("heslo\n", "account", "add", "jan@firma.cz")
	n, log := c.serve()

	if out := c.must("", "account", "disable", "jan@firma.cz"); out != "disabled SMTP access of jan@firma.cz\n" {
		t.Errorf("disable: %q", out)
	}
	actor := admin.CLIActor()
	if !strings.Contains(log.String(), "actor="+actor+" action=account.disable target=account:jan@firma.cz") {
		t.Errorf("the server did not make the change:\n%s", log)
	}
	if e := c.lastAudit(); e.Actor != actor || e.Action != "account.disable" {
		t.Errorf("audit entry %+v", e)
	}

	ip := netip.MustParseAddr("192.0.2.44")
	for i := range 10 {
		n.Guard.Failure(ip, fmt.Sprintf("sess%018d", i))
	}
	if !n.Guard.Blocked(ip) {
		t.Fatal("not blocked")
	}
	if out := c.must("", "unblock", "192.0.2.44"); out != "unblocked 192.0.2.44\n" {
		t.Errorf("unblock: %q", out)
	}
	// No poll interval: the server lifted it before answering.
	if n.Guard.Blocked(ip) {
		t.Error("still blocked in the server right after the unblock")
	}
	if !strings.Contains(log.String(), "actor="+actor+" action=guard.unblock target=ip:192.0.2.44") {
		t.Errorf("the unblock did not go through the server:\n%s", log)
	}
	if out := c.must("", "unblock", "192.0.2.44"); out != "192.0.2.44: not blocked, no failures counted\n" {
		t.Errorf("second unblock: %q", out)
	}
	code, _, errOut := c.run("", "account", "enable", "nobody@firma.cz")
	if code != 1 || !strings.Contains(errOut, "nobody@firma.cz") || !strings.Contains(errOut, "not found") {
		t.Errorf("unknown account through the server: %d %q", code, errOut)
	}

	// SPEC R19: an override set with the CLI reaches the running
	// server's limiter, and show reads its usage.
	if out := c.must("", "sending", "set", "jan@firma.cz", "recipients_per_hour=1000"); out != "set recipients_per_hour=1000 of jan@firma.cz\n" {
		t.Errorf("sending set: %q", out)
	}
	if e := c.lastAudit(); e.Actor != actor || e.Action != "sending.set" || e.Target != "account:jan@firma.cz" ||
		string(e.Before) != `{}` || string(e.After) != `{"recipients_per_hour":1000}` {
		t.Errorf("audit entry %+v", e)
	}
	testutil.WaitFor(t, 5*time.Second, "the override in the server", func() bool {
		acct, _ := n.Sending.Effective(context.Background(), "jan@firma.cz", "firma.cz")
		return acct[sending.RecipientsPerHour] == 1000
	})
	want := "account jan@firma.cz\nmessages_per_hour\t200\tconfig\tused 0\nrecipients_per_hour\t1000\toverride\tused 0\n" +
		"recipients_per_day\t2000\tconfig\tused 0\nnew_recipients_per_day\t300\tconfig\tused 0\n"
	if out := c.must("", "sending", "show", "jan@firma.cz"); out != want {
		t.Errorf("sending show: %q, want %q", out, want)
	}
}

// TestCLISending: sending set, show and clear without a server, with the
// API's checks and audit entries, for an account and a hosted domain.
func TestCLISending(t *testing.T) {
	c := newCLI(t, "bcrypt")
	c.must("", "domain", "add", "firma.cz")
	c.must("", "alias", "add", "firma.com", "firma.cz")
	c.must("heslo\n", "account", "add", "jan@firma.cz")
	if out := c.must("", "sending", "set", "firma.cz", "messages_per_hour=0", "recipients_per_day=50000"); out != "set messages_per_hour=0 recipients_per_day=50000 of firma.cz\n" {
		t.Errorf("sending set: %q", out)
	}
	if e := c.lastAudit(); e.Action != "sending.set" || e.Target != "domain:firma.cz" || e.Actor != admin.CLIActor() {
		t.Errorf("audit entry %+v", e)
	}
	want := "domain firma.cz\nmessages_per_hour\tnone\toverride\tused -\nrecipients_per_hour\t2500\tconfig\tused -\n" +
		"recipients_per_day\t50000\toverride\tused -\nnew_recipients_per_day\t1500\tconfig\tused -\n" +
		"(no server runs here: usage is counted by the running server)\n"
	if out := c.must("", "sending", "show", "firma.cz"); out != want {
		t.Errorf("sending show: %q, want %q", out, want)
	}
	if out := c.must("", "sending", "clear", "firma.cz", "messages_per_hour"); out != "cleared messages_per_hour of firma.cz; the configured limits apply\n" {
		t.Errorf("sending clear: %q", out)
	}
	if e := c.lastAudit(); e.Action != "sending.clear" || string(e.Before) != `{"messages_per_hour":0,"recipients_per_day":50000}` || string(e.After) != `{"recipients_per_day":50000}` {
		t.Errorf("audit entry %+v", e)
	}
	if out := c.must("", "sending", "show", "firma.cz"); !strings.Contains(out, "messages_per_hour\t1000\tconfig\t") {
		t.Errorf("after clear: %q", out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"sending", "set", "jan@firma.cz", "recipients_per_minute=5"}, 2, "unknown sending limit"},
		{[]string{"sending", "set", "jan@firma.cz", "recipients_per_hour=-1"}, 2, "0 (no limit)"},
		{[]string{"sending", "set", "jan@firma.cz", "recipients_per_hour"}, 2, "key=value"},
		{[]string{"sending", "set", "nobody@firma.cz", "recipients_per_hour=5"}, 1, "not found"},
		{[]string{"sending", "set", "firma.com", "recipients_per_hour=5"}, 1, "not a hosted domain"},
		{[]string{"sending", "clear", "jan@firma.cz", "bogus"}, 2, "unknown sending limit"},
		{[]string{"sending", "show"}, 2, "missing"},
	} {
		code, _, errOut := c.run("", tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}
