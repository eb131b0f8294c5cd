package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"submitd/internal/queue"
	"submitd/internal/spool"
	"submitd/internal/testutil"
	"submitd/internal/trace"
)

// TestTraceHeldFix: the path of a message held with its account names the
// command that releases it, "held release", not a retry, which leaves a
// held message held (SPEC R20).
func TestTraceHeldFix(t *testing.T) {
	c := newCLI(t, "bcrypt")
	c.run("", "domain", "add", "firma.cz") // creates the database
	env := &spool.Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}, Account: "jan@firma.cz",
		SessionID: "piWs1j0010jifNx01iWsdh", ClientIP: "192.0.2.1", Received: time.Now()}
	c.spoolMessage(env, &queue.State{Rcpts: []*queue.Rcpt{{Addr: "eva@example.org", Domain: "example.org", Status: queue.Pending}},
		Held: &queue.Hold{Account: "jan@firma.cz", Reason: "spam", Since: time.Now()}})
	hist, err := trace.NewSQLite(context.Background(), testutil.OpenDBIn(t, c.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	m := &trace.Message{QueueID: env.ID, Received: env.Received, SessionID: env.SessionID, ClientIP: env.ClientIP,
		Account: env.Account, From: env.From, Rcpts: []trace.Rcpt{{Addr: "eva@example.org"}}}
	b := &trace.Batch{Messages: []*trace.Message{m}, Events: []trace.Event{{QueueID: env.ID, Time: time.Now(), Kind: "held", Detail: "spam"}}}
	if err := hist.Save(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := c.run("", "trace", env.ID)
	if code != 0 {
		t.Fatalf("trace %s = %d: %s", env.ID, code, errOut)
	}
	if !strings.Contains(out, "submitd held release jan@firma.cz") || strings.Contains(out, "queue retry") {
		t.Errorf("trace of a held message:\n%s", out)
	}
}
