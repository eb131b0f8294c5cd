package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// traceRows asks GET /api/v1/trace for q and returns its rows by recipient.
func traceRows(t *testing.T, s *server, token, q string) map[string]map[string]any {
	t.Helper()
	status, body, raw := apiCurl(t, s, token, "-G", "--data-urlencode", "q="+q, "/api/v1/trace")
	if status != 200 {
		t.Fatalf("trace %s: %d %s", q, status, raw)
	}
	out := map[string]map[string]any{}
	rows, _ := body["rows"].([]any)
	for _, r := range rows {
		row := r.(map[string]any)
		out[row["rcpt"].(string)] = row
	}
	return out
}

// TestTraceWhereDidMyMailGo: a message to three recipients is delivered to
// one (with the remote's reply id), refused 550 by another (bounced) and
// deferred by the third. Tracing each recipient, through the API and the
// CLI, shows its state and the remote's reply; the session page links the
// message; the history survives a restart and goes with the session
// records when they are pruned.
func TestTraceWhereDidMyMailGo(t *testing.T) {
	testutil.NeedTool(t, "curl")
	dns := testutil.NewDNSServer(t)
	lns := testutil.ListenSamePort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	port := lns[0].Addr().(*net.TCPAddr).Port
	const okID = "2.0.0 OK 1701234567 q7si1234567 - gsmtp"
	testutil.NewReceiver(t, testutil.ReceiverOptions{Listener: lns[0], STARTTLS: true, CertHosts: []string{"mx.a.test"},
		DataHook: func(testutil.Received) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK 1701234567 q7si1234567 - gsmtp"}
		}})
	b := testutil.NewReceiver(t, testutil.ReceiverOptions{Listener: lns[1]})
	b.SetRcptError("nobody@b.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"})
	testutil.NewReceiver(t, testutil.ReceiverOptions{Listener: lns[2], RcptHook: func(string, int) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "greylisted, try later"}
	}})
	for i, d := range []string{"a.test", "b.test", "c.test"} {
		dns.AddMX(d, 10, "mx."+d)
		dns.AddA("mx."+d, fmt.Sprintf("127.0.0.%d", i+2))
	}
	s, dkimRecord := newQueueServer(t, dns.Addr, port)
	dns.Add(t, dkimRecord)
	s.mustCLI("staff-password\n", "staff", "add", "petra", "-role", "support")
	token := strings.TrimSpace(s.mustCLI("", "staff", "token", "petra"))
	s.start()

	id := qSend(t, s, []string{"eva@a.test", "nobody@b.test", "petr@c.test"},
		"From: Jan <jan@firma.test>\r\nTo: eva@a.test\r\nSubject: where did it go\r\nMessage-ID: <trace.1@firma.test>\r\n\r\nBody.\r\n")
	want := map[string][2]string{
		"eva@a.test":    {"delivered", "250 " + okID},
		"nobody@b.test": {"bounced", "550 5.1.1 no such user here"},
		"petr@c.test":   {"deferred", "451 4.3.0 greylisted, try later"},
	}
	check := func(when string) {
		t.Helper()
		for rcpt, w := range want {
			var row map[string]any
			testutil.WaitFor(t, 30*time.Second, when+": "+rcpt+" "+w[0], func() bool {
				row = traceRows(t, s, token, rcpt)[rcpt]
				return row != nil && row["state"] == w[0]
			})
			if row["queue_id"] != id || row["reply"] != w[1] || row["account"] != "jan@firma.test" || row["session_id"] == "" {
				t.Errorf("%s: trace %s = %v, want %v", when, rcpt, row, w)
			}
		}
	}
	check("after delivery")

	// The message's path: TLS of the delivered attempt, the report made for
	// the bounce, the retry of the deferral; and the session page links it.
	status, body, raw := apiCurl(t, s, token, "/api/v1/trace/"+id)
	if status != 200 || !strings.Contains(raw, "TLS 1.") || !strings.Contains(raw, `"bounced"`) ||
		!strings.Contains(raw, `"report `) || body["message_id"] != "<trace.1@firma.test>" {
		t.Errorf("message path: %d %s", status, raw)
	}
	sid := body["session_id"].(string)
	// The session record is saved after the session closed, which the
	// delivery does not wait for.
	testutil.WaitFor(t, 10*time.Second, "the session record of "+sid, func() bool {
		status, _, _ := apiCurl(t, s, token, "/api/v1/sessions/"+sid)
		return status == 200
	})
	if page := webGet(t, s, token, "/sessions/"+sid); !strings.Contains(page, `href="/trace/`+id+`"`) {
		t.Errorf("the session page does not link the message:\n%s", page)
	}
	if page := webGet(t, s, token, "/trace/"+id); !strings.Contains(page, okID) || !strings.Contains(page, `href="/sessions/`+sid+`"`) ||
		!strings.Contains(page, `id="fix-retry"`) {
		t.Errorf("message page:\n%s", page)
	}
	out := s.mustCLI("", "trace", "petr@c.test")
	if !strings.Contains(out, id) || !strings.Contains(out, "deferred") || !strings.Contains(out, "greylisted") {
		t.Errorf("submitd trace petr@c.test:\n%s", out)
	}
	out = s.mustCLI("", "trace", id)
	if !strings.Contains(out, "eva@a.test  delivered  250 "+okID) || !strings.Contains(out, "report ") {
		t.Errorf("submitd trace %s:\n%s", id, out)
	}

	s.interrupt()
	s.start()
	check("after a restart")

	// Pruned with the session records: a retention shorter than the
	// message's age drops both at the next start.
	s.interrupt()
	cfg, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, append(cfg, "[sessionlog]\nretention = \"1s\"\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the message must be older than the retention
	s.start()
	testutil.WaitFor(t, 30*time.Second, "the history pruned", func() bool {
		return traceRows(t, s, token, "eva@a.test")["eva@a.test"] == nil
	})
	if status, _, raw := apiCurl(t, s, token, "/api/v1/sessions/"+sid); status != 404 {
		t.Errorf("the session record outlived the retention: %d %s", status, raw)
	}
}

// webGet fetches a support page with a bearer token.
func webGet(t *testing.T, s *server, token, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d\n%s", path, resp.StatusCode, b)
	}
	return string(b)
}
