package node

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// TestNodeSpamHolds: with [scan] on a real rspamd, five GTUBE messages are
// refused with 550 5.7.1 and nothing of them is queued, and the fifth
// trips [contain] spam (default 5 in an hour): the account is held and its
// next AUTH refused (SPEC R22, R20). The metrics count the verdicts.
func TestNodeSpamHolds(t *testing.T) {
	rs := testutil.StartRspamd(t)
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Scan.RspamdURL = rs.URL
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, cfg)
	before, _ := scrape(t, n)
	c := loginJan(t, n)
	gtube := "From: jan@firma.test\r\nTo: petr@example.test\r\nSubject: offer\r\n\r\n" + testutil.GTUBE + "\r\n"
	for i := range 5 {
		err := c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader(gtube))
		var e *smtp.SMTPError
		if !errors.As(err, &e) || e.Code != 550 || e.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || !strings.HasSuffix(e.Message, " message refused as spam: Gtube pattern") {
			t.Fatalf("GTUBE message %d: %v", i, err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "the hold", func() bool {
		a, err := n.Directory.Account(context.Background(), "jan@firma.test")
		return err == nil && a.Held && strings.HasPrefix(a.HeldReason, "spam: ")
	})
	c2, err := smtp.DialStartTLS(n.Addr("submission"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Auth(sasl.NewPlainClient("", "jan@firma.test", "secret-pw")); err == nil || !strings.Contains(err.Error(), "access disabled") {
		t.Fatalf("AUTH of the held account: %v", err)
	}
	if envs, err := n.Spool.Load(); err != nil || len(envs) != 0 {
		t.Fatalf("spool holds %d messages (%v), want none", len(envs), err)
	}
	after, _ := scrape(t, n)
	if d := after.Since(before, `submitd_scan_total{action="reject"}`); d != 5 {
		t.Errorf("reject verdicts counted %v, want 5", d)
	}
	if after[`submitd_scan_breaker_open`] != 0 {
		t.Errorf("breaker open")
	}
}

// TestNodeApplyScan: a changed [scan] takes effect for the next message
// without a restart: scanning off, on (GTUBE refused), off again.
func TestNodeApplyScan(t *testing.T) {
	rs := testutil.StartRspamd(t)
	n := startNode(t, testConfig(t, "127.0.0.1:1"))
	c := loginJan(t, n)
	gtube := "From: jan@firma.test\r\nTo: petr@example.test\r\nSubject: offer\r\n\r\n" + testutil.GTUBE + "\r\n"
	send := func() error {
		return c.SendMail("jan@firma.test", []string{"petr@example.test"}, strings.NewReader(gtube))
	}
	if err := send(); err != nil {
		t.Fatalf("without [scan]: %v", err)
	}
	on := n.Config.Scan
	on.RspamdURL = rs.URL
	if err := n.ApplyScan(on); err != nil {
		t.Fatal(err)
	}
	if err := send(); err == nil || !strings.Contains(err.Error(), "refused as spam") {
		t.Fatalf("with [scan]: %v", err)
	}
	if err := n.ApplyScan(n.Config.Scan); err != nil {
		t.Fatal(err)
	}
	if err := send(); err != nil {
		t.Fatalf("with [scan] off again: %v", err)
	}
}
