package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestLoginUnderAttackSwaks is the distributed-guessing case of SPEC R21
// against the built binary: the owner logs in with swaks from 127.0.0.1;
// wrong passwords for the login from 50 networks (127.1.N.1, each its own
// /24) put it under attack; swaks from the owner's network still logs in,
// swaks from a new network gets a wrong password's exact reply; support
// sees why with "submitd session" and "submitd logins", and "submitd
// logins clear" lets the new network in.
func TestLoginUnderAttackSwaks(t *testing.T) {
	s := newServer(t, "[login_guard]\nmax_failures = 50\n")
	s.setupFirma()
	s.start()
	owner := []string{"--server", s.sub, "--tls", "--from", "jan@firma.cz", "--to", "eva@example.org", "--quit-after", "AUTH",
		"--auth", "PLAIN", "--auth-user", "jan@firma.cz", "--auth-password", e2ePassword}
	serverLine(t, swaks(t, owner...), "235 2.7.0 authentication successful")

	for n := 1; n <= 50; n++ {
		c := dialRaw(t, s.subs, fmt.Sprintf("127.1.%d.1", n), nil, true)
		c.reply()
		c.expect("EHLO bot.example", "250 ")
		if got := c.cmd(authPlain("jan@firma.cz", fmt.Sprintf("guess-%d", n))); !strings.HasPrefix(got, "535 5.1.0 ") || !strings.HasSuffix(got, " authentication failed") {
			t.Fatalf("guess %d: %q", n, got)
		}
		c.nc.Close()
	}
	list := s.mustCLI("", "logins", "under-attack")
	if f := strings.Split(strings.TrimSuffix(list, "\n"), "\t"); len(f) != 6 || f[0] != "jan@firma.cz" || f[1] != "50" || f[2] != "50" {
		t.Fatalf("submitd logins under-attack: %q", list)
	}

	// The owner's network: another address in 127.0.0.0/24.
	serverLine(t, swaks(t, append(owner, "--local-interface", "127.0.0.2")...), "235 2.7.0 authentication successful")
	// A new network, with the right password.
	out := swaks(t, append(owner, "--local-interface", "127.1.51.1")...)
	sid := serverLine(t, out, "535 5.1.0 SID authentication failed")
	rec := sessionRecord(t, s, sid)
	if !strings.Contains(rec, "login jan@firma.cz under attack from 51 IPs since ") || !strings.Contains(rec, "this network 127.1.51.0/24 has no earlier success") {
		t.Fatalf("submitd session %s:\n%s", sid, rec)
	}
	if out := s.mustCLI("", "logins", "networks", "jan@firma.cz"); !strings.HasPrefix(out, "127.0.0.0/24\t") {
		t.Fatalf("submitd logins networks: %q", out)
	}
	if out := s.mustCLI("", "logins", "clear", "jan@firma.cz"); !strings.HasPrefix(out, "cleared jan@firma.cz: under attack since ") {
		t.Fatalf("submitd logins clear: %q", out)
	}
	serverLine(t, swaks(t, append(owner, "--local-interface", "127.1.51.1")...), "235 2.7.0 authentication successful")
}
