package main

import (
	"strings"
	"testing"
)

// TestRestartWithoutServer: with no server on the data directory there is
// nothing to hand over, and "submitd restart" says so instead of starting
// one.
func TestRestartWithoutServer(t *testing.T) {
	c := newCLI(t, "bcrypt")
	// Before any database exists the answer is the same: restart has no
	// business with the stores.
	if code, out, errOut := c.run("", "restart"); code != 1 || out != "" || !strings.Contains(errOut, "no server runs") {
		t.Errorf("submitd restart without a database = %d, %q, %q; want 1 and \"no server runs\"", code, out, errOut)
	}
	c.play([]step{{args: args("domain add firma.cz"), out: "added domain firma.cz\n"}})
	code, out, errOut := c.run("", "restart")
	if code != 1 || out != "" || !strings.Contains(errOut, "no server runs") {
		t.Errorf("submitd restart = %d, %q, %q; want 1 and \"no server runs\"", code, out, errOut)
	}
	if code, _, errOut := c.run("", "restart", "extra"); code != 2 || !strings.Contains(errOut, "unexpected argument") {
		t.Errorf("submitd restart extra = %d, %q; want a usage error", code, errOut)
	}
}
