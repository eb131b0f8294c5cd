package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestNodeSendingLimitHook: a node applies [sending] to SMTP, and a limit
// hit reaches whoever registered with Node.Sending.OnLimit (the
// compromised-account detection).
func TestNodeSendingLimitHook(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Sending.MessagesPerHour = 1
	n := startNode(t, cfg)
	type hit struct {
		account, limit string
		at             time.Time
	}
	hits := make(chan hit, 10)
	n.Sending.OnLimit(func(account, limit string, at time.Time) { hits <- hit{account, limit, at} })

	c := loginJan(t, n)
	if err := c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader("From: jan@firma.test\r\n\r\nfirst\r\n")); err != nil {
		t.Fatal(err)
	}
	err := c.Mail("jan@firma.test", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 1}) {
		t.Fatalf("second message: %v, want the 451 4.7.1 of a sending limit", err)
	}
	select {
	case h := <-hits:
		if h.account != "jan@firma.test" || h.limit != "messages_per_hour" || time.Since(h.at) > time.Minute {
			t.Fatalf("OnLimit told %+v", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnLimit was not told")
	}
}
