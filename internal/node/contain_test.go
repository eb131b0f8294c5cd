package node

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/admin"
	"submitd/internal/config"
	"submitd/internal/contain"
	"submitd/internal/testutil"
)

// limitHitsConfig is a node whose first refusal by the sending limits
// (one message an hour) trips the detector.
func limitHitsConfig(t *testing.T) *config.Config {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Sending.MessagesPerHour = 1
	// Refusals within one minute count as one hit, so one is the
	// threshold a test without a clock can reach.
	cfg.Contain.LimitHits = 1
	return cfg
}

// hitLimit sends one message as jan and has the next MAIL refused by the
// sending limit, which trips the detector before the refusal is answered.
func hitLimit(t *testing.T, c *smtp.Client) {
	t.Helper()
	if err := c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader("From: jan@firma.test\r\n\r\nfirst\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("jan@firma.test", nil); err == nil || !strings.Contains(err.Error(), "sending limit reached") {
		t.Fatalf("MAIL past the limit: %v", err)
	}
}

// holdAudit returns the audit entries of jan's automatic hold.
func holdAudit(t *testing.T, n *Node) []admin.Entry {
	t.Helper()
	es, _, err := n.AdminStore.Audit(context.Background(), admin.AuditQuery{Actor: containActor, Target: "account:jan@firma.test", Action: "contain.hold"})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// checkHeld checks what support sees of jan's hold: the account held for
// the limits, the one accepted message held, the trip recorded and one
// audit entry (SPEC R20).
func checkHeld(t *testing.T, n *Node) {
	t.Helper()
	ctx := context.Background()
	a, err := n.Directory.Account(ctx, "jan@firma.test")
	if err != nil || !a.Held || !strings.HasPrefix(a.HeldReason, "limits: ") {
		t.Fatalf("account %+v, %v", a, err)
	}
	if held := n.Queue.HeldMessages("jan@firma.test"); len(held) != 1 {
		t.Fatalf("held messages %v, want the one accepted", held)
	}
	if last, err := n.Contain.LastTrip(ctx, "jan@firma.test"); err != nil || last == nil || last.Signal != contain.SignalLimits || last.Action != contain.ActionHold {
		t.Fatalf("trip record %+v, %v", last, err)
	}
	if es := holdAudit(t, n); len(es) != 1 {
		t.Fatalf("audit entries of the hold: %+v, want 1", es)
	}
}

// TestNodeLimitHitsHold: the sending limits' refusals reach the detector;
// at limit_hits of them the account is held with its mail, the trip is
// recorded and audited, and its next AUTH is refused as disabled (SPEC R19,
// R20).
func TestNodeLimitHitsHold(t *testing.T) {
	n := startNode(t, limitHitsConfig(t))
	hitLimit(t, loginJan(t, n))
	// The audit entry is the trip's last write: once it is there, the hold
	// of the account and of its mail are done.
	testutil.WaitFor(t, 10*time.Second, "the hold's audit entry", func() bool { return len(holdAudit(t, n)) > 0 })
	checkHeld(t, n)
	if err := dialSubmission(t, n).Auth(sasl.NewPlainClient("", "jan@firma.test", "secret-pw")); err == nil {
		t.Fatal("a held account logged in")
	}
}

// TestNodeTripAtShutdown: the node stops right after a trip, while it is
// under way; after the restart, the hold is whole and support sees it: the
// account and its mail held, the trip recorded and audited once (SPEC R20:
// no hold the audit log does not show).
func TestNodeTripAtShutdown(t *testing.T) {
	cfg := limitHitsConfig(t)
	n, stop := runNode(t, cfg, addJan)
	hitLimit(t, loginJan(t, n))
	stop()
	n, stop = runNode(t, cfg, nil)
	defer stop()
	checkHeld(t, n)
}

// TestNodeRecordsHoldAtStart: a hold the audit log does not show (the node
// died between holding the account and writing the entry) is recorded and
// audited at the next start, once however often the node starts again
// (SPEC R20).
func TestNodeRecordsHoldAtStart(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	_, stop := runNode(t, cfg, func(t *testing.T, n *Node) {
		addJan(t, n)
		if err := n.Directory.SetHeld(context.Background(), "jan@firma.test", true, "limits: 3 limit hits"); err != nil {
			t.Fatal(err)
		}
	})
	stop()
	for range 2 {
		n, stop := runNode(t, cfg, nil)
		es := holdAudit(t, n)
		last, err := n.Contain.LastTrip(context.Background(), "jan@firma.test")
		stop()
		if len(es) != 1 {
			t.Fatalf("audit entries of the hold: %+v, want 1", es)
		}
		if err != nil || last == nil || last.Signal != contain.SignalLimits || last.Summary != "3 limit hits" {
			t.Fatalf("trip record %+v, %v", last, err)
		}
	}
}

// TestNodeHoldNoticeMailed: with [contain] support_address set, a hold is
// told to support by mail through the node's own queue, from the null
// sender so that it is never reported back (SPEC R18, R20).
func TestNodeHoldNoticeMailed(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	cfg := testConfig(t, rcv.Addr)
	cfg.Sending.MessagesPerHour = 1
	cfg.Contain.LimitHits = 1
	cfg.Contain.SupportAddress = "support@firma.test"
	n := startNode(t, cfg)
	hitLimit(t, loginJan(t, n))
	// jan's message may be delivered before the hold; the notice is the
	// message to support.
	var notice *testutil.Received
	testutil.WaitFor(t, 10*time.Second, "the notice delivered", func() bool {
		for _, m := range rcv.Messages() {
			if slices.Contains(m.Rcpts, "support@firma.test") {
				notice = &m
				return true
			}
		}
		return false
	})
	if notice.From != "" || len(notice.Rcpts) != 1 || !strings.Contains(string(notice.Data), "jan@firma.test") {
		t.Errorf("notice from %q to %v:\n%.600s", notice.From, notice.Rcpts, notice.Data)
	}
}
