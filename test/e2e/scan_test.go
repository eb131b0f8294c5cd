package e2e

import (
	"fmt"
	"strings"
	"testing"

	"submitd/internal/testutil"
)

// TestScanSwaks: the built server with [scan] on a real rspamd, as a
// customer's client sees it (SPEC R22): GTUBE from swaks is refused with
// "550 5.7.1 SID message refused as spam: Gtube pattern" and nothing is
// queued; an ordinary message is queued; "submitd session" shows both
// verdicts, action, score / required score and symbols.
func TestScanSwaks(t *testing.T) {
	rs := testutil.StartRspamd(t)
	s := newServer(t, fmt.Sprintf("[scan]\nrspamd_url = %q\n", rs.URL))
	s.setupFirma()
	s.start()
	base := []string{"--server", s.sub, "-tls", "--to", "eva@example.org", "--auth", "PLAIN",
		"--auth-user", "jan@firma.cz", "--auth-password", e2ePassword, "--from", "jan@firma.cz"}

	out := swaks(t, append(base, "--header", "Subject: offer", "--body", testutil.GTUBE)...)
	sid := serverLine(t, out, "550 5.7.1 SID message refused as spam: Gtube pattern")
	if list := s.mustCLI("", "queue", "list"); strings.TrimSpace(list) != "" {
		t.Fatalf("a refused message was queued:\n%s", list)
	}
	rec := sessionRecord(t, s, sid)
	if !strings.Contains(rec, "reject score 15.00/15.00: GTUBE 0.00 (Gtube pattern)") {
		t.Errorf("session %s does not show the verdict:\n%s", sid, rec)
	}

	out = swaks(t, append(base, "--header", "Subject: lunch", "--body", "See you at noon.")...)
	m := queuedRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("an ordinary message was not queued:\n%s", out)
	}
	if rec := sessionRecord(t, s, m[1]); !strings.Contains(rec, m[2]+": no action score ") {
		t.Errorf("session %s does not show the verdict:\n%s", m[1], rec)
	}

	// /metrics counts both verdicts and splits their time: rspamd's own
	// (its time_real) is part of the scans' time as submitd waited.
	met, text := curlMetrics(t, testutil.NeedTool(t, "curl"), s)
	took, inRspamd := met["submitd_scan_duration_seconds_sum"], met["submitd_scan_rspamd_seconds_sum"]
	if met[`submitd_scan_total{action="reject"}`] != 1 || met[`submitd_scan_total{action="no action"}`] != 1 ||
		met["submitd_scan_rspamd_seconds_count"] != 2 || inRspamd <= 0 || inRspamd >= took {
		t.Errorf("scan metrics: rspamd's time %v s of %v s, want both scans counted and rspamd's time a part of theirs:\n%s", inRspamd, took, text)
	}
}
