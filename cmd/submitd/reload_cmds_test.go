package main

import (
	"os"
	"strings"
	"testing"
)

// check-config says whether a file is good without a running server, with
// the message a reload or a start would give, line included; reload
// without a running server changes nothing and says so.
func TestCheckConfig(t *testing.T) {
	c := newCLI(t, "bcrypt")
	code, out, errOut := c.run("", "check-config")
	if code != 0 || !strings.Contains(out, "config "+c.cfg+": valid") {
		t.Errorf("good file: exit %d, %q %q", code, out, errOut)
	}
	body, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ add, want string }{
		{"[limits]\nmax_connections_per_ip = 0\n", ": line 5: invalid value 0 for limits.max_connections_per_ip: must be at least 1"},
		{"[queue]\nretry_min = 5m\n", ": line 5: "},
		{"[guard]\nwebmail = []\n", ": line 5: unknown key guard.webmail"},
	} {
		if err := os.WriteFile(c.cfg, append(body, tc.add...), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := c.run("", "check-config")
		want := "submitd check-config: config " + c.cfg + tc.want
		if code != 1 || out != "" || !strings.HasPrefix(errOut, want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and %q", tc.add, code, out, errOut, want)
		}
		code, _, errOut = c.run("", "reload")
		if want := "submitd reload: nothing changed: config " + c.cfg + tc.want; code != 1 || !strings.HasPrefix(errOut, want) {
			t.Errorf("reload of %q: exit %d, %q; want %q", tc.add, code, errOut, want)
		}
	}
	if err := os.WriteFile(c.cfg, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := c.run("", "reload"); code != 1 || !strings.Contains(errOut, "no running server answers on ") {
		t.Errorf("reload without a server: exit %d, %q", code, errOut)
	}
}
