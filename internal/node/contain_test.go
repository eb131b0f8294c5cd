package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// TestNodeLimitHitsHold: the sending limits' refusals reach the detector;
// at limit_hits of them the account is held, and its next AUTH is refused
// as disabled (SPEC R19, R20).
func TestNodeLimitHitsHold(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Sending.MessagesPerHour = 1
	// Refusals within one minute count as one hit, so one is the
	// threshold a test without a clock can reach.
	cfg.Contain.LimitHits = 1
	n := startNode(t, cfg)
	c := loginJan(t, n)
	if err := c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader("From: jan@firma.test\r\n\r\nfirst\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("jan@firma.test", nil); err == nil || !strings.Contains(err.Error(), "sending limit reached") {
		t.Fatalf("MAIL past the limit: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the hold", func() bool {
		a, err := n.Directory.Account(context.Background(), "jan@firma.test")
		return err == nil && a.Held && strings.HasPrefix(a.HeldReason, "limits: ")
	})
	// The directory is held first, the mail after it, or at the end of a
	// delivery attempt under way.
	testutil.WaitFor(t, 10*time.Second, "the accepted message held", func() bool {
		return len(n.Queue.HeldMessages("jan@firma.test")) == 1
	})
}
