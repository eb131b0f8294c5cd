package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// A receiving MX that answers 421 4.7.28 puts its host in back-off
// (issue 20): the message is deferred, not bounced, and "submitd queue
// backoffs", through the running server, names the host, the lowered
// connection limit and the reply that asked for it.
func TestQueueBackoffs(t *testing.T) {
	dns := testutil.NewDNSServer(t)
	rx := testutil.NewReceiver(t, testutil.ReceiverOptions{
		RcptHook: func(string, int) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "unusual rate of unsolicited mail"}
		},
	})
	dns.AddMX("a.test", 10, "mx.a.test")
	dns.AddA("mx.a.test", "127.0.0.1")
	s, dkimRecord := newQueueServer(t, dns.Addr, rx.Port)
	dns.Add(t, dkimRecord)
	s.start()
	if out, _, _ := s.cli("", "queue", "backoffs"); strings.TrimSpace(out) != "" {
		t.Fatalf("back-offs before any delivery: %q", out)
	}
	id := qSend(t, s, []string{"eva@a.test"}, "From: Jan <jan@firma.test>\r\nTo: eva@a.test\r\nSubject: slow\r\n\r\nBody.\r\n")

	var line string
	testutil.WaitFor(t, 30*time.Second, "mx.a.test in back-off", func() bool {
		out, _, _ := s.cli("", "queue", "backoffs")
		line = strings.TrimSpace(out)
		return line != ""
	})
	f := strings.Split(line, "\t")
	if len(f) != 6 || f[0] != "mx.a.test" || f[2] == "0" || f[4] != "1" || !strings.HasPrefix(f[5], "421 4.7.28 unusual rate") {
		t.Fatalf("queue backoffs: %q", line)
	}
	if _, err := time.Parse(time.RFC3339, f[1]); err != nil {
		t.Fatalf("paused until %q: %v", f[1], err)
	}
	testutil.WaitFor(t, 30*time.Second, "the recipient deferred", func() bool {
		return strings.Contains(qListLine(s, id), "eva@a.test:deferred")
	})
	if show := s.mustCLI("", "queue", "show", id); !strings.Contains(show, "deferred  mx.a.test [127.0.0.1]  421 4.7.28 unusual rate") {
		t.Fatalf("queue show does not give the reply:\n%s", show)
	}
}
