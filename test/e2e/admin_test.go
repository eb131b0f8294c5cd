package e2e

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// apiCurl runs curl against the admin API with a bearer token and returns
// the HTTP status and the decoded JSON body.
func apiCurl(t *testing.T, s *server, token string, args ...string) (int, map[string]any, string) {
	t.Helper()
	bin := testutil.NeedTool(t, "curl")
	full := append([]string{"-sS", "-H", "Authorization: Bearer " + token, "-w", "\n%{http_code}"}, args...)
	full[len(full)-1] = "http://" + s.admin + full[len(full)-1]
	out, err := exec.Command(bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	text := string(out)
	i := strings.LastIndex(text, "\n")
	var status int
	json.Unmarshal([]byte(text[i+1:]), &status)
	var body map[string]any
	json.Unmarshal([]byte(text[:i]), &body)
	return status, body, text[:i]
}

// TestAdminAPI: support with a bearer token from "submitd staff token"
// pastes the Outlook error line of a real failed AUTH into Find and gets
// the session; the session's explanation names the cause; after the IP is
// blocked, an unblock through the API lets the client authenticate again,
// and the audit log names who did it.
func TestAdminAPI(t *testing.T) {
	testutil.NeedTool(t, "curl")
	s := newServer(t, "[guard]\nmax_failures = 2\n")
	s.setupFirma()
	s.mustCLI("staff-password\n", "staff", "add", "petra", "-role", "support")
	token := strings.TrimSpace(s.mustCLI("", "staff", "token", "petra"))
	s.start()

	c := openRaw(t, s.subs, nil, true)
	reply := c.cmd(authPlain("jan@firma.cz", "wrong"))
	c.cmd("QUIT")
	m := regexp.MustCompile(`^535 5\.1\.0 ([A-Za-z0-9]{22}) authentication failed\r?\n?$`).FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("AUTH reply %q", reply)
	}
	sid := m[1]
	outlook := "Sending reported error (0x80042109) : 'Your outgoing (SMTP) e-mail server has reported an internal error. " +
		"If you continue to receive this message, contact your server administrator or Internet service provider (ISP). " +
		"The server responded: 535 5.1.0 " + sid + " authentication failed'"

	// The record is written when the connection closes, in the background.
	var sessions []any
	deadline := time.Now().Add(20 * time.Second)
	for len(sessions) == 0 && time.Now().Before(deadline) {
		status, body, raw := apiCurl(t, s, token, "-G", "--data-urlencode", "q="+outlook, "/api/v1/find")
		if status != 200 {
			t.Fatalf("find: %d %s", status, raw)
		}
		sessions, _ = body["sessions"].([]any)
		time.Sleep(50 * time.Millisecond)
	}
	if len(sessions) != 1 {
		t.Fatalf("find found %d sessions", len(sessions))
	}
	found := sessions[0].(map[string]any)
	if found["id"] != sid || found["client_ip"] != "127.0.0.1" || found["login"] != "jan@firma.cz" || found["outcome"] != "AUTH failed" {
		t.Errorf("found %v", found)
	}
	status, body, raw := apiCurl(t, s, token, "/api/v1/sessions/"+sid)
	want := "wrong password for jan@firma.cz: 1st failure from 127.0.0.1 this hour; at 2 this IP is blocked for an hour"
	if status != 200 || body["cause"] != want || body["customer_saw"] != "535 5.1.0 "+sid+" authentication failed" {
		t.Errorf("session: %d %s\nwant cause %q", status, raw, want)
	}

	// The second failure blocks the IP; the next connection is refused.
	c = openRaw(t, s.subs, nil, true)
	c.cmd(authPlain("jan@firma.cz", "wrong again"))
	guardExpectRefused(t, s.subs, "127.0.0.1", nil, true)
	status, body, raw = apiCurl(t, s, token, "/api/v1/blocked")
	if items, _ := body["items"].([]any); status != 200 || len(items) != 1 || !strings.Contains(raw, sid) {
		t.Fatalf("blocked: %d %s", status, raw)
	}

	if status, _, raw := apiCurl(t, s, token, "-X", "POST", "-H", "Content-Type: application/json", "-d", `{"target":"127.0.0.1"}`, "/api/v1/unblock"); status != 200 {
		t.Fatalf("unblock: %d %s", status, raw)
	}
	if l := authReply(t, s, "jan@firma.cz", e2ePassword); !strings.HasPrefix(l, "235 ") {
		t.Errorf("AUTH after the unblock: %q", l)
	}
	status, body, raw = apiCurl(t, s, token, "/api/v1/audit?action=guard.unblock")
	items, _ := body["items"].([]any)
	if status != 200 || len(items) != 1 || items[0].(map[string]any)["actor"] != "petra" {
		t.Errorf("audit: %d %s", status, raw)
	}
	if status, _, _ := apiCurl(t, s, "sdt_wrong", "/api/v1/blocked"); status != 401 {
		t.Errorf("wrong token: %d", status)
	}
	s.interrupt()
}
