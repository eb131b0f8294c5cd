package queue

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/spool"
	"submitd/internal/testutil"
)

// submitDSN spools a message with RFC 3461 parameters, as the SMTP
// session keeps them.
func (w *world) submitDSN(dsn *spool.DSN, to ...string) string {
	w.t.Helper()
	env := &spool.Envelope{From: "jan@firma.test", To: to, Account: "jan@firma.test", SessionID: "sessAAAAAAAAAAAAAAAAAA",
		ClientIP: "192.0.2.7", Received: w.clk.Now(), DSN: dsn}
	wr, err := w.sp.Create(env)
	if err != nil {
		w.t.Fatal(err)
	}
	fmt.Fprintf(wr, "From: <jan@firma.test>\r\nTo: <%s>\r\nSubject: quarterly report\r\n\r\nHello.\r\n", to[0])
	if err := wr.Commit(); err != nil {
		w.t.Fatal(err)
	}
	return env.ID
}

// RFC 3461 end to end through the queue: NOTIFY=SUCCESS to a next hop
// without DSN gives a "relayed" notice with ENVID and ORCPT; to one with
// DSN the parameters go on and the notice is left to it; NOTIFY=NEVER
// keeps a failure unreported; a NOTIFY without DELAY gets no delay
// warning.
func TestDSNParametersHonoured(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"b.test": {DSN: true}}, func(c *Config) { c.WarnAfter = time.Hour })
	w.rcv["a.test"].SetRcptError("gone@a.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	w.rcv["a.test"].SetRcptError("later@a.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"})
	w.submitDSN(&spool.DSN{Ret: "HDRS", EnvID: "ENV-1", Rcpts: map[string]spool.RcptDSN{
		"eva@a.test":   {Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;orig@a.test"},
		"gone@a.test":  {Notify: []string{"NEVER"}},
		"later@a.test": {Notify: []string{"FAILURE"}},
	}}, "eva@a.test", "gone@a.test", "later@a.test")
	w.submitDSN(&spool.DSN{EnvID: "ENV-2", Rcpts: map[string]spool.RcptDSN{
		"ota@b.test": {Notify: []string{"SUCCESS"}, ORcpt: "rfc822;ota@b.test"},
	}}, "ota@b.test")
	w.run()

	reports := w.rcv["firma.test"].Messages()
	if len(reports) != 1 {
		t.Fatalf("sender got %d reports, want the one relayed notice", len(reports))
	}
	d := parseDSN(t, reports[0].Data)
	if !strings.Contains(d.subject, "Successful Mail Delivery") || d.perMsg.Get("Original-Envelope-Id") != "ENV-1" {
		t.Errorf("report subject %q, Original-Envelope-Id %q", d.subject, d.perMsg.Get("Original-Envelope-Id"))
	}
	h := d.rcpt(t, "eva@a.test")
	if h.Get("Action") != "relayed" || h.Get("Status") != "2.0.0" || h.Get("Original-Recipient") != "rfc822;orig@a.test" {
		t.Errorf("recipient fields %v", h)
	}
	if len(d.perRcpt) != 1 {
		t.Errorf("report names %d recipients, want eva alone", len(d.perRcpt))
	}
	got := w.rcv["b.test"].Messages()
	if len(got) != 1 || got[0].EnvID != "ENV-2" || got[0].Notify["ota@b.test"] != "SUCCESS" || got[0].ORcpt["ota@b.test"] != "RFC822;ota@b.test" {
		t.Fatalf("b.test received %+v", got)
	}

	// later@a.test is still deferred past warn_after, but asked for
	// failures only: no delay warning.
	w.clk.Advance(2 * time.Hour)
	w.run()
	if n := len(w.rcv["firma.test"].Messages()); n != 1 {
		t.Errorf("sender got %d reports after warn_after, want still 1", n)
	}
}

// RET=FULL returns the whole message with a failure report (RFC 3461
// §4.3); RET=HDRS, like no RET, its header section only.
func TestDSNReturnFull(t *testing.T) {
	w := newWorld(t, nil, nil)
	w.rcv["a.test"].SetRcptError("gone@a.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	w.submitDSN(&spool.DSN{Ret: "FULL"}, "gone@a.test")
	w.run()
	w.submitDSN(&spool.DSN{Ret: "HDRS"}, "gone@a.test")
	w.run()
	testutil.WaitFor(t, 10*time.Second, "two reports", func() bool { return len(w.rcv["firma.test"].Messages()) == 2 })
	full, hdrs := w.rcv["firma.test"].Messages()[0].Data, w.rcv["firma.test"].Messages()[1].Data
	if !strings.Contains(string(full), "Content-Type: message/rfc822\r\n\r\n") || !strings.Contains(string(full), "\r\n\r\nHello.\r\n") {
		t.Errorf("RET=FULL report does not return the message:\n%s", full)
	}
	d := parseDSN(t, hdrs)
	if strings.Contains(string(hdrs), "Hello.") || !strings.Contains(d.headers, "Subject: quarterly report") {
		t.Errorf("RET=HDRS report:\n%s", hdrs)
	}
}
