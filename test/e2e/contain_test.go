package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// webhookSink is the support system's webhook receiver: it keeps every
// JSON body posted to it.
type webhookSink struct {
	*httptest.Server
	mu     sync.Mutex
	events []map[string]any
}

func newWebhookSink(t *testing.T) *webhookSink {
	w := &webhookSink{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var ev map[string]any
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &ev) != nil {
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.events = append(w.events, ev)
		w.mu.Unlock()
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *webhookSink) got() []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]map[string]any(nil), w.events...)
}

// containRun is one run of the hold scenario: a server whose smarthost
// refuses mail for now, an account that mails past the volume threshold
// with a second session of it open, and support with a staff token.
type containRun struct {
	s       *server
	rcv     *testutil.Receiver
	hook    *webhookSink
	token   string
	accept  *atomic.Bool
	queued  int
	waiting *rawConn
}

// startContainRun trips the volume signal (rise_floor = 3 messages in an
// hour; the other signals off) through real SMTP and waits for the hold.
// Nothing limits the account's messages an hour: on a fresh data_dir,
// without a history, the volume signal never trips below such a limit.
func startContainRun(t *testing.T) *containRun {
	testutil.NeedTool(t, "curl")
	r := &containRun{accept: &atomic.Bool{}, hook: newWebhookSink(t)}
	// Until the test lets it, the smarthost defers every recipient, so the
	// messages sent before the trip stay in the queue, undelivered.
	r.rcv = testutil.NewReceiver(t, testutil.ReceiverOptions{RcptHook: func(string, int) *smtp.SMTPError {
		if r.accept.Load() {
			return nil
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}})
	r.s = newServer(t, fmt.Sprintf(`[delivery]
smarthost = %q
smarthost_tls = "none"
`+noSendingLimits+`[contain]
rise_floor = 3
limit_hits = 0
bounce_share = 0.0
networks = 0
webhook = %q
`, r.rcv.Addr, r.hook.URL))
	r.s.setupFirma()
	r.s.mustCLI("staff-password\n", "staff", "add", "petra", "-role", "support")
	r.token = strings.TrimSpace(r.s.mustCLI("", "staff", "token", "petra"))
	r.s.start()

	// An open session of the account that is only logged in, as a mail
	// client that keeps its connection.
	r.waiting = openRaw(t, r.s.subs, nil, true)
	r.waiting.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")

	c := openRaw(t, r.s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	for i := 1; i <= 2; i++ {
		if got := c.send("jan@firma.cz", fmt.Sprintf("lead%d@example.org", i),
			fmt.Sprintf("From: jan@firma.cz\r\nTo: lead%d@example.org\r\nSubject: cheap pills %d\r\n\r\nBuy now.\r\n", i, i)); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("message %d: %q", i, got)
		}
	}
	// The third message trips the signal once it is queued; its 250 and
	// the close of the session race, so either may come first.
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<lead3@example.org>", "250 ")
	c.expect("DATA", "354 ")
	c.write("From: jan@firma.cz\r\nTo: lead3@example.org\r\nSubject: cheap pills 3\r\n\r\nBuy now.\r\n.\r\n")
	r.queued = 3

	testutil.WaitFor(t, 30*time.Second, "the webhook event", func() bool { return len(r.hook.got()) == 1 })
	return r
}

// api calls the admin API with the staff token through curl.
func (r *containRun) api(t *testing.T, method, path string) (int, map[string]any, string) {
	t.Helper()
	return apiCurl(t, r.s, r.token, "-X", method, path)
}

// checkHeld checks what the hold did: the webhook's event, the closed
// session, AUTH refused as disabled, the mail held and not delivered even
// when the smarthost accepts and the queue is retried.
func (r *containRun) checkHeld(t *testing.T) {
	t.Helper()
	ev := r.hook.got()[0]
	figures, _ := ev["figures"].(map[string]any)
	if ev["account"] != "jan@firma.cz" || ev["signal"] != "volume" || ev["action"] != "hold" ||
		ev["held_messages"] != float64(r.queued) || figures["last_hour"] != float64(3) || ev["time"] == nil {
		t.Fatalf("webhook event %v", ev)
	}
	r.waiting.closed()

	c := openRaw(t, r.s.subs, nil, true)
	matchReply(t, c.cmd(authPlain("jan@firma.cz", e2ePassword)), "535 5.1.0 SID authentication rejected access disabled")
	c.expect("QUIT", "221 ")

	r.accept.Store(true)
	r.s.mustCLI("", "queue", "retry", "all")
	status, body, raw := r.api(t, "GET", "/api/v1/held/jan@firma.cz")
	if status != 200 || body["held_messages"] != float64(r.queued) {
		t.Fatalf("held detail: %d %s", status, raw)
	}
	trip, _ := body["trip"].(map[string]any)
	sample, _ := body["sample"].([]any)
	if trip["signal"] != "volume" || len(sample) != r.queued {
		t.Fatalf("held detail lacks the trip or the sample: %s", raw)
	}
	for _, m := range sample {
		m := m.(map[string]any)
		if m["client_ip"] != "127.0.0.1" || m["state"] != "held" || m["from"] != "jan@firma.cz" ||
			!strings.Contains(m["header"].(string), "Subject: cheap pills") || m["body"] != "Buy now.\r\n" {
			t.Fatalf("held message in the sample: %v", m)
		}
	}
	if list := r.s.mustCLI("", "queue", "list"); strings.Count(list, "\theld\n") != r.queued {
		t.Fatalf("queue list does not show %d held messages:\n%s", r.queued, list)
	}
	show := r.s.mustCLI("", "held", "show", "jan@firma.cz")
	if !strings.Contains(show, "Signal:         volume") || !strings.Contains(show, "| Subject: cheap pills 1") {
		t.Fatalf("held show:\n%s", show)
	}
	// A second's wait gives a held message time to go out if it could.
	time.Sleep(time.Second)
	if n := len(r.rcv.Messages()); n != 0 {
		t.Fatalf("the smarthost got %d messages of a held account", n)
	}
}

// matchReply checks a reply against pattern, where SID stands for the
// session id.
func matchReply(t *testing.T, line, pattern string) {
	t.Helper()
	head, tail, _ := strings.Cut(pattern, "SID")
	if !strings.HasPrefix(line, head) || !strings.HasSuffix(line, tail) || len(line) != len(head)+22+len(tail) {
		t.Fatalf("reply %q, want %q", line, pattern)
	}
}

// TestHoldThenRelease: an account that mails past the trip threshold
// through real SMTP is held — AUTH refused with "access disabled", its
// open session closed, its queued mail held, the webhook told — and support
// releases it through the API, after a crash and restart that keep the
// hold: the held mail is delivered, the account logs in again, and the
// audit log names both steps (SPEC R20).
func TestHoldThenRelease(t *testing.T) {
	r := startContainRun(t)
	r.checkHeld(t)

	// The hold survives a crash: killed and started again, the server
	// still refuses the account and delivers none of its mail.
	r.s.kill()
	r.s.start()
	c := openRaw(t, r.s.subs, nil, true)
	matchReply(t, c.cmd(authPlain("jan@firma.cz", e2ePassword)), "535 5.1.0 SID authentication rejected access disabled")
	c.expect("QUIT", "221 ")
	r.s.mustCLI("", "queue", "retry", "all")
	time.Sleep(time.Second)
	if n := len(r.rcv.Messages()); n != 0 {
		t.Fatalf("after the restart the smarthost got %d messages of the held account", n)
	}

	status, body, raw := r.api(t, "POST", "/api/v1/held/jan@firma.cz/release")
	if status != 200 || body["released"] != float64(r.queued) {
		t.Fatalf("release: %d %s", status, raw)
	}
	testutil.WaitFor(t, 30*time.Second, "the held mail delivered", func() bool { return len(r.rcv.Messages()) == r.queued })
	for _, m := range r.rcv.Messages() {
		if !strings.Contains(string(m.Data), "Subject: cheap pills") {
			t.Fatalf("delivered %q", m.Data)
		}
	}
	c = openRaw(t, r.s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("QUIT", "221 ")
	if status, _, raw := r.api(t, "GET", "/api/v1/held/jan@firma.cz"); status != 404 {
		t.Fatalf("still held after release: %d %s", status, raw)
	}
	_, _, audit := r.api(t, "GET", "/api/v1/audit")
	if !strings.Contains(audit, `"action": "held.release"`) || !strings.Contains(audit, `"action": "contain.hold"`) || !strings.Contains(audit, `"actor": "petra"`) {
		t.Fatalf("audit log: %s", audit)
	}
}

// TestHoldThenPurge: the same trip, and support purges instead: nothing
// is delivered, no bounce goes out (the smarthost, which would carry it,
// gets nothing at all), and the spool is empty.
func TestHoldThenPurge(t *testing.T) {
	r := startContainRun(t)
	r.checkHeld(t)

	status, body, raw := r.api(t, "POST", "/api/v1/held/jan@firma.cz/purge")
	if status != 200 || body["purged"] != float64(r.queued) {
		t.Fatalf("purge: %d %s", status, raw)
	}
	r.s.mustCLI("", "queue", "retry", "all")
	time.Sleep(time.Second)
	if n := len(r.rcv.Messages()); n != 0 {
		t.Fatalf("the smarthost got %d messages after the purge", n)
	}
	if out := r.s.mustCLI("", "queue", "list"); strings.TrimSpace(out) != "" {
		t.Fatalf("queue after purge:\n%s", out)
	}
	if out := r.s.mustCLI("", "held", "list"); !strings.HasPrefix(out, "jan@firma.cz\t") {
		t.Fatalf("held list after purge (the account stays held):\n%s", out)
	}
	_, _, audit := r.api(t, "GET", "/api/v1/audit?action=held.purge")
	if !strings.Contains(audit, `"purged_messages": 3`) {
		t.Fatalf("audit log: %s", audit)
	}
}
