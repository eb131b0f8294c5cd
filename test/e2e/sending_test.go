package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// limitRe is the refusal of SPEC R19 for jan@firma.cz, as swaks shows it.
var limitRe = regexp.MustCompile(`(?m)^<~?\*? +451 4\.7\.1 [A-Za-z0-9]{22} sending limit reached for jan@firma\.cz: 3 recipients per hour; try again after (\d\d:\d\d)\r?$`)

// TestSendingLimits: with the built binary and swaks, an account that
// reaches its recipients-per-hour limit gets the 451 of SPEC R19 naming the
// limit and the minute it frees (UTC); support raises the limit with the
// CLI, which the running server applies, and the same send goes through.
func TestSendingLimits(t *testing.T) {
	s := newServer(t, "[sending]\nrecipients_per_hour = 3\n")
	s.setupFirma()
	s.start()
	send := func(to string) string {
		return swaks(t, "--server", s.sub, "-tls", "--auth", "PLAIN", "--auth-user", "jan@firma.cz",
			"--auth-password", e2ePassword, "--from", "jan@firma.cz", "--to", to)
	}
	before := time.Now().UTC()
	if out := send("a@example.org,b@example.org,c@example.org"); !queuedRe.MatchString(out) {
		t.Fatalf("three recipients: not queued:\n%s", out)
	}
	after := time.Now().UTC()
	out := send("d@example.org")
	m := limitRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no sending-limit reply:\n%s", out)
	}
	// The window frees the minute of the first send, an hour on.
	if m[1] != before.Add(time.Hour).Format("15:04") && m[1] != after.Add(time.Hour).Format("15:04") {
		t.Fatalf("try again after %s, want an hour after %s", m[1], before.Format("15:04"))
	}
	if queuedRe.MatchString(out) {
		t.Fatalf("queued over the limit:\n%s", out)
	}

	if got := s.mustCLI("", "sending", "set", "jan@firma.cz", "recipients_per_hour=10"); got != "set recipients_per_hour=10 of jan@firma.cz\n" {
		t.Fatalf("sending set: %q", got)
	}
	// The server follows the directory's change log: within its poll
	// interval the new limit holds.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out = send("d@example.org")
		if queuedRe.MatchString(out) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after the override:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	show := s.mustCLI("", "sending", "show", "jan@firma.cz")
	if !strings.Contains(show, "recipients_per_hour\t10\toverride\tused 4\n") {
		t.Fatalf("sending show:\n%s", show)
	}
}
