package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
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

// TestNodeHistorySurvivesRestart: the recipient history written behind is
// on disk when a node stops, so after a restart a recipient of the last
// second before it is still known and costs no first-time budget; and the
// budget spent before the restart stays spent.
func TestNodeHistorySurvivesRestart(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Sending.NewRecipientsPerDay = 1
	n, stop := runNode(t, cfg, addJan)
	c := loginJan(t, n)
	if err := c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader("From: jan@firma.test\r\n\r\nfirst\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	stop()

	n, stop = runNode(t, cfg, nil)
	defer stop()
	c = loginJan(t, n)
	// petr is known, so he costs nothing; the one first-time slot of the
	// day was spent on him before the restart, and the window that counts
	// it was saved too (issue 19), so eva is refused.
	if err := c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader("From: jan@firma.test\r\n\r\nagain\r\n")); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if err := c.Mail("jan@firma.test", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("eva@example.test", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || !strings.Contains(se.Message, "1 new recipients per day") {
		t.Fatalf("a second first-time recipient: %v", err)
	}
}

// TestNodesShareSendingLimitsOnRedis: two nodes with [guard] store =
// "redis" count one account's messages together: with 2 an hour, one
// through each node spends the hour, and the next is refused on either.
func TestNodesShareSendingLimitsOnRedis(t *testing.T) {
	r := testutil.StartRedis(t)
	var nodes [2]*Node
	for i := range nodes {
		cfg := testConfig(t, "127.0.0.1:9")
		cfg.Guard.Store, cfg.Guard.RedisURL = "redis", r.URL()
		cfg.Sending.MessagesPerHour = 2
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		nodes[i] = startNode(t, cfg)
	}
	for _, n := range nodes {
		c := loginJan(t, n)
		if err := c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader("From: jan@firma.test\r\n\r\nhi\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range nodes {
		err := loginJan(t, n).Mail("jan@firma.test", nil)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 451 || !strings.Contains(se.Message, "2 messages per hour") {
			t.Fatalf("third message on node %d: %v, want the 451 of the shared limit", i, err)
		}
	}
}
