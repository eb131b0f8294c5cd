package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// submitVia sends one message as jan@firma.cz through s's implicit-TLS
// submission listener and returns its queue id.
func submitVia(t *testing.T, addr string, to ...string) string {
	t.Helper()
	c := openRaw(t, addr, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	for _, r := range to {
		c.expect("RCPT TO:<"+r+">", "250 ")
	}
	c.expect("DATA", "354 ")
	c.write("From: <jan@firma.cz>\r\nTo: <" + to[0] + ">\r\nSubject: adopted\r\n\r\nHello.\r\n.\r\n")
	m := queuedRe.FindStringSubmatch(c.reply())
	if m == nil {
		t.Fatal("message not queued")
	}
	c.cmd("QUIT")
	return m[2]
}

// TestQueueAdopt: node B accepts mail it cannot deliver and dies (SIGKILL);
// while it ran, "submitd queue adopt" of its spool was refused. Node A,
// running, adopts B's spool through its socket with the CLI, and the
// smarthost gets every message once; the audit log names the adoption.
func TestQueueAdopt(t *testing.T) {
	testutil.NeedTool(t, "curl")
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	a := newServer(t, fmt.Sprintf("[delivery]\nsmarthost = %q\nsmarthost_tls = \"none\"\n", rcv.Addr))
	a.setupFirma()
	a.mustCLI("boss-password\n", "staff", "add", "boss", "-role", "admin")
	token := strings.TrimSpace(a.mustCLI("", "staff", "token", "boss"))
	a.start()
	b := newServer(t, "") // its smarthost is a closed port: mail stays queued
	b.setupFirma()
	b.start()
	ids := []string{submitVia(t, b.subs, "eva@example.org", "petr@example.net"), submitVia(t, b.subs, "ota@example.org")}
	testutil.WaitFor(t, 30*time.Second, "node B's first delivery attempts", func() bool {
		return strings.Count(b.mustCLI("", "queue", "list"), ":deferred(1)") == 3
	})
	bspool := filepath.Join(b.dir, "data", "spool")
	out, errOut, code := a.cli("", "queue", "adopt", bspool)
	if code == 0 || !strings.Contains(errOut, "locked by a running submitd") {
		t.Fatalf("adopt of a running node's spool: exit %d\n%s%s", code, out, errOut)
	}
	b.kill()

	out = a.mustCLI("", "queue", "adopt", bspool)
	if want := "adopted 2 message(s) from " + bspool + "\n"; out != want {
		t.Fatalf("adopt: %q, want %q", out, want)
	}
	list := a.mustCLI("", "queue", "list")
	for _, id := range ids {
		// Deferred recipients keep their attempt count.
		if !regexp.MustCompile(`(?m)^` + id + `\t.*:deferred\(1\)`).MatchString(list) {
			t.Errorf("queue list of node A has no deferred %s:\n%s", id, list)
		}
	}
	a.mustCLI("", "queue", "retry", "all")
	// One transaction per destination domain: three in all.
	for deadline := time.Now().Add(30 * time.Second); len(rcv.Messages()) < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if len(rcv.Messages()) != 3 {
		t.Fatalf("the smarthost got %d messages, want 3; node A:\n%s", len(rcv.Messages()), a.log)
	}
	time.Sleep(500 * time.Millisecond) // room for a wrong second copy
	n := map[string]int{}
	for _, m := range rcv.Messages() {
		for _, r := range m.Rcpts {
			n[r]++
		}
	}
	if n["eva@example.org"] != 1 || n["petr@example.net"] != 1 || n["ota@example.org"] != 1 {
		t.Errorf("deliveries: %v", n)
	}
	if out := a.mustCLI("", "queue", "adopt", bspool); out != "adopted 0 message(s) from "+bspool+"\n" {
		t.Errorf("second adopt: %q", out)
	}
	status, body, raw := apiCurl(t, a, token, "/api/v1/audit?action=queue.adopt")
	items, _ := body["items"].([]any)
	if status != 200 || len(items) != 1 || items[0].(map[string]any)["target"] != "spool:"+bspool {
		t.Errorf("audit: %d %s", status, raw)
	}
	a.interrupt()
}
