package queue

import (
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/testutil"
)

// Set puts a new sender and retry settings in force: the next attempt goes
// through the new sender, the old one closes the connection it kept, and
// a deferral is retried after the new retry_min.
func TestSetSettings(t *testing.T) {
	w := newWorld(t, nil, nil)
	rcv := w.rcv["firma.test"]
	w.submit("jan@firma.test", "eva@firma.test")
	w.run()
	if n := len(rcv.Messages()); n != 1 || rcv.Messages()[0].Helo != "submit.test" {
		t.Fatalf("before Set: %d messages, %+v", n, rcv.Messages())
	}

	sender := delivery.NewMX(delivery.MXConfig{
		SessionConfig: delivery.SessionConfig{Hostname: "reloaded.test", ConnectTimeout: 5 * time.Second, Timeout: 30 * time.Second},
		Resolver:      &delivery.Resolver{Addr: w.dns.Addr, Timeout: 5 * time.Second}, Port: w.port,
	})
	t.Cleanup(sender.CloseIdle)
	w.q.Set(Settings{Sender: sender, RetryMin: 2 * time.Minute, RetryMax: time.Hour, MaxAge: 24 * time.Hour, Workers: 4, PerDomain: 2})
	testutil.WaitFor(t, 5*time.Second, "the old sender to close its kept connection", func() bool { return rcv.Closed() == 1 })

	w.submit("jan@firma.test", "petr@firma.test")
	w.run()
	msgs := rcv.Messages()
	if len(msgs) != 2 || msgs[1].Helo != "reloaded.test" {
		t.Fatalf("after Set: %+v", msgs)
	}

	// A domain that defers is due again after the new retry_min.
	w.dns.AddMX("later.test", 10, "mx.later.test")
	w.dns.AddA("mx.later.test", "127.0.0.9")
	id := w.submit("jan@firma.test", "x@later.test")
	w.run()
	due, ok := w.q.NextDue()
	if !ok || due.Sub(w.clk.Now()) != 2*time.Minute {
		t.Errorf("deferred message %s due at %v, %v after now; want 2m", id, due, due.Sub(w.clk.Now()))
	}
}
