package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// TestReload: with two sessions open from one IP, "submitd reload" lowers
// [limits] max_connections_per_ip from 20 to 2. A third connection from
// the IP is refused at once, and the two open ones go on and send. A
// broken file changes nothing: "submitd reload" exits 1 naming the line,
// SIGHUP is logged and the server keeps running, and "submitd
// check-config" agrees. The API's reload takes the admin role and is
// audited.
func TestReload(t *testing.T) {
	testutil.NeedTool(t, "curl")
	s := newServer(t, "")
	s.setupFirma()
	s.mustCLI("staff-password\n", "staff", "add", "petra", "-role", "support")
	s.mustCLI("staff-password\n", "staff", "add", "olga", "-role", "admin")
	support := strings.TrimSpace(s.mustCLI("", "staff", "token", "petra"))
	admin := strings.TrimSpace(s.mustCLI("", "staff", "token", "olga"))
	s.start()
	good, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}

	var open []*rawConn
	for range 2 {
		c := openRaw(t, s.subs, nil, true)
		c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
		open = append(open, c)
	}
	// Under the default of 20 a third connection is served.
	third := openRaw(t, s.subs, nil, true)
	third.expect("QUIT", "221 ")

	lowered := string(good) + "[limits]\nmax_connections_per_ip = 2\n"
	if err := os.WriteFile(s.config, []byte(lowered), 0o600); err != nil {
		t.Fatal(err)
	}
	out := s.mustCLI("", "reload")
	if !strings.Contains(out, "limits.max_connections_per_ip") {
		t.Errorf("reload reply does not name the setting:\n%s", out)
	}
	// The third connection's slot may still be on its way back.
	testutil.WaitFor(t, 10*time.Second, "a third connection to be refused", func() bool {
		c := dialRaw(t, s.subs, "", nil, true)
		return strings.HasPrefix(c.reply(), "421 ")
	})
	for i, c := range open {
		if r := c.send("jan@firma.cz", "petr@example.cz", fmt.Sprintf("From: jan@firma.cz\r\nSubject: open %d\r\n\r\nstill here\r\n", i)); !strings.HasPrefix(r, "250 ") {
			t.Errorf("open session %d after the reload: %q", i, r)
		}
	}

	// A broken file: a value without quotes on a known line.
	broken := lowered + "[queue]\nretry_min = 5m\n"
	line := strings.Count(broken, "\n")
	if err := os.WriteFile(s.config, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	wantLine := fmt.Sprintf("config %s: line %d: ", s.config, line)
	_, errOut, code := s.cli("", "reload")
	if code != 1 || !strings.Contains(errOut, wantLine) {
		t.Errorf("reload of a broken file: exit %d, %q; want exit 1 naming %q", code, errOut, wantLine)
	}
	_, checkOut, code := s.cli("", "check-config", "-config", s.config)
	if code != 1 || !strings.Contains(checkOut, wantLine) {
		t.Errorf("check-config of the broken file: exit %d, %q; want exit 1 naming %q", code, checkOut, wantLine)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the server to log the broken file", func() bool {
		return strings.Contains(s.log.String(), "does not load; nothing changed") && strings.Contains(s.log.String(), wantLine)
	})
	// Nothing changed and the server runs: the limit of 2 still refuses.
	if r := dialRaw(t, s.subs, "", nil, true).reply(); !strings.HasPrefix(r, "421 ") {
		t.Errorf("after the broken reload a third connection got %q", r)
	}
	if r := open[0].send("jan@firma.cz", "petr@example.cz", "From: jan@firma.cz\r\nSubject: again\r\n\r\nx\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Errorf("open session after the broken reload: %q", r)
	}

	// The API: support may not reload, an admin may, and it is audited.
	if err := os.WriteFile(s.config, []byte(lowered), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := s.mustCheck(); code != 0 || !strings.Contains(out, "valid") {
		t.Errorf("check-config of the good file: exit %d, %q", code, out)
	}
	post := []string{"-X", "POST", "/api/v1/reload"}
	if status, _, raw := apiCurl(t, s, support, post...); status != 403 {
		t.Errorf("reload by support: %d %s", status, raw)
	}
	status, body, raw := apiCurl(t, s, admin, post...)
	if status != 200 || body["result"] == nil {
		t.Errorf("reload by an admin: %d %s", status, raw)
	}
	status, body, raw = apiCurl(t, s, admin, "/api/v1/audit?action=config.reload")
	items, _ := body["items"].([]any)
	if status != 200 || len(items) != 2 {
		t.Fatalf("audit of the reloads: %d %s", status, raw)
	}
	actors := fmt.Sprint(items[0].(map[string]any)["actor"], " ", items[1].(map[string]any)["actor"])
	if !strings.Contains(actors, "olga") || !strings.Contains(actors, "cli:") {
		t.Errorf("reloads audited as %s; want olga and the CLI's user", actors)
	}

	// SIGHUP puts a good file in force: three at once from the IP again.
	if err := os.WriteFile(s.config, []byte(string(good)+"[limits]\nmax_connections_per_ip = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the SIGHUP reload to be logged", func() bool {
		return strings.Count(s.log.String(), "in force now: limits.max_connections_per_ip") >= 2
	})
	third = openRaw(t, s.subs, nil, true)
	third.expect("QUIT", "221 ")
}

// mustCheck runs "submitd check-config" on the server's file.
func (s *server) mustCheck() (string, int) {
	out, errOut, code := s.cli("", "check-config", "-config", s.config)
	return out + errOut, code
}
