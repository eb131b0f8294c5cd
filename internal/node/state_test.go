package node

import (
	"context"
	"testing"
	"time"

	"submitd/internal/directory"
	"submitd/internal/testutil"
)

// TestNodeHourlyLimit: the volume signal learns the most messages an hour
// an account may send: its own limit, or its domain's when that is
// smaller, support's overrides included, and a recipients limit when that
// allows fewer messages.
func TestNodeHourlyLimit(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Sending.MessagesPerHour = 200
	cfg.Sending.RecipientsPerHour = 0
	cfg.Sending.RecipientsPerDay = 5000
	cfg.Sending.Domain.MessagesPerHour = 1000
	cfg.Sending.Domain.RecipientsPerHour = 0
	cfg.Sending.Domain.RecipientsPerDay = 0
	n := startNode(t, cfg)
	ctx := context.Background()
	if got := n.hourlyLimit("jan@firma.test"); got != 200 {
		t.Fatalf("hourly limit %d, want the account's 200", got)
	}
	st := n.Directory.(directory.SendingStore)
	if err := st.SetSendingLimits(ctx, "jan@firma.test", map[string]int64{"messages_per_hour": 5000}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the domain's 1000 to apply", func() bool { return n.hourlyLimit("jan@firma.test") == 1000 })
	if err := st.SetSendingLimits(ctx, "firma.test", map[string]int64{"messages_per_hour": 300}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the domain's override to apply", func() bool { return n.hourlyLimit("jan@firma.test") == 300 })
	if err := st.SetSendingLimits(ctx, "jan@firma.test", map[string]int64{"recipients_per_hour": 100}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the recipients limit to apply", func() bool { return n.hourlyLimit("jan@firma.test") == 100 })
}
