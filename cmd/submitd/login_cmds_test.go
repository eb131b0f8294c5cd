package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"submitd/internal/admin"
)

// TestLoginsCommands: "submitd logins" reads the running server's counts
// through its socket: the login under attack with its figures, the
// networks that still get in, and a clear that the server applies at once
// and audits; with no server running it says where the counts live (SPEC
// R21).
func TestLoginsCommands(t *testing.T) {
	c := newCLI(t, "bcrypt")
	c.must("", "domain", "add", "firma.cz")
	c.must("heslo\n", "account", "add", "jan@firma.cz")
	if code, _, errOut := c.run("", "logins", "under-attack"); code != 1 || !strings.Contains(errOut, "running server") {
		t.Errorf("without a server: %d %q", code, errOut)
	}
	if code, _, _ := c.run("", "logins", "clear", "not-an-address"); code != 2 {
		t.Errorf("bad address: exit %d, want 2", code)
	}

	n, log := c.serve()
	ctx := context.Background()
	n.Logins.Succeeded(ctx, "jan@firma.cz", netip.MustParseAddr("192.0.2.7"))
	for i := range 20 {
		n.Logins.Failed(ctx, "jan@firma.cz", netip.AddrFrom4([4]byte{198, 51, byte(i), 9}))
	}
	out := c.must("", "logins", "under-attack")
	if f := strings.Split(strings.TrimSpace(out), "\t"); len(f) != 6 || f[0] != "jan@firma.cz" || f[1] != "20" || f[2] != "20" || f[4] == "-" || f[5] != "0" {
		t.Fatalf("under-attack: %q", out)
	}
	if out := c.must("", "logins", "networks", "JAN@firma.cz"); !strings.HasPrefix(out, "192.0.2.0/24\t") {
		t.Errorf("networks: %q", out)
	}
	out = c.must("", "logins", "clear", "jan@firma.cz")
	if !strings.HasPrefix(out, "cleared jan@firma.cz: under attack since ") || !strings.Contains(out, "20 failures from 20 IPs") {
		t.Errorf("clear: %q", out)
	}
	if _, ok := n.Logins.Get("jan@firma.cz"); ok {
		t.Error("still held in the server right after the clear")
	}
	actor := admin.CLIActor()
	if !strings.Contains(log.String(), fmt.Sprintf("actor=%s action=logins.clear target=login:jan@firma.cz", actor)) {
		t.Errorf("the clear did not go through the server:\n%s", log)
	}
	if e := c.lastAudit(); e.Actor != actor || e.Action != "logins.clear" || e.Target != "login:jan@firma.cz" {
		t.Errorf("audit entry %+v", e)
	}
	if out := c.must("", "logins", "under-attack"); out != "" {
		t.Errorf("after clear: %q", out)
	}
	if code, _, errOut := c.run("", "logins", "clear", "jan@firma.cz"); code != 1 || !strings.Contains(errOut, "not under attack") {
		t.Errorf("second clear: %d %q", code, errOut)
	}
}
