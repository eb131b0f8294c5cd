package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/testutil"
)

// TestHoldSurvivesRestartThenRelease: a held account's queued message, a
// deferred one and one submitted after the hold are neither delivered nor
// reported, stay held across a restart, and all go out at once on release
// (SPEC R20); another account's mail is not touched.
func TestHoldSurvivesRestartThenRelease(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"b.test": {RcptHook: tempFail(1)}}, nil)
	deferred := w.submit("jan@firma.test", "petr@b.test")
	w.run()
	if st := w.state(deferred); st.Rcpts[0].Status != Deferred {
		t.Fatalf("first attempt: %s", st.Rcpts[0].Status)
	}
	w.stop()
	w.start()
	queued := w.submit("jan@firma.test", "eva@a.test")
	n, err := w.q.Hold("jan@firma.test", "volume rise")
	if err != nil || n != 2 {
		t.Fatalf("Hold = %d, %v; want 2", n, err)
	}
	later := w.submit("jan@firma.test", "eva@a.test")
	other := w.submit("eva@firma.test", "eva@a.test")
	w.clk.Advance(time.Hour)
	w.run()
	if got := len(w.rcv["a.test"].Messages()); got != 1 {
		t.Fatalf("a.test got %d messages, want only the other account's", got)
	}
	for _, id := range []string{deferred, queued, later} {
		if st := w.state(id); st.Held == nil || st.Held.Reason != "volume rise" || st.Held.Account != "jan@firma.test" {
			t.Fatalf("%s not held: %+v", id, st.Held)
		}
	}
	if sz := w.q.Sizes(); sz.Messages[StateHeld] != 3 {
		t.Fatalf("sizes %v", sz.Messages)
	}
	if got := w.q.HeldMessages("jan@firma.test"); len(got) != 3 {
		t.Fatalf("HeldMessages %v", got)
	}
	_ = other

	// A restart loads them held, without the account's hold in memory.
	w.stop()
	w.start()
	w.clk.Advance(time.Hour)
	w.run()
	if got := len(w.rcv["a.test"].Messages()) + len(w.rcv["b.test"].Messages()); got != 1 {
		t.Fatalf("after restart %d messages delivered, want 1", got)
	}
	if _, err := w.q.Retry("all"); err != nil {
		t.Fatal(err)
	}
	w.run()
	if got := len(w.rcv["a.test"].Messages()); got != 1 {
		t.Fatalf("retry released held mail: a.test got %d", got)
	}

	n, err = w.q.Release("jan@firma.test")
	if err != nil || n != 3 {
		t.Fatalf("Release = %d, %v; want 3", n, err)
	}
	w.run()
	if a, b := len(w.rcv["a.test"].Messages()), len(w.rcv["b.test"].Messages()); a != 3 || b != 1 {
		t.Fatalf("after release a.test got %d (want 3), b.test %d (want 1)", a, b)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages", len(q))
	}
}

// TestHoldDuringAttempt: an attempt under way when the hold comes is
// stopped, and the message is held, not retried or reported.
func TestHoldDuringAttempt(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	w := newWorld(t, nil, func(c *Config) {
		c.Sender = senderFunc(func(m *delivery.Message) []delivery.Result {
			once.Do(func() { close(started) })
			<-release
			out := make([]delivery.Result, len(m.Rcpts))
			for i, r := range m.Rcpts {
				out[i] = delivery.Result{Rcpt: r, Status: delivery.Temporary, Reply: "interrupted"}
			}
			return out
		})
	})
	id := w.submit("jan@firma.test", "eva@a.test")
	done := make(chan struct{})
	go func() { w.run(); close(done) }()
	<-started
	n, err := w.q.Hold("jan@firma.test", "bounces")
	if err != nil || n != 1 {
		t.Fatalf("Hold = %d, %v", n, err)
	}
	close(release)
	<-done
	st := w.state(id)
	if st.Held == nil || st.Rcpts[0].Status != Pending {
		t.Fatalf("state after a hold during the attempt: held %+v, status %s", st.Held, st.Rcpts[0].Status)
	}
	if next, ok := w.q.NextDue(); ok {
		t.Fatalf("held message still scheduled at %v", next)
	}
}

// TestPurgeNoReport: purging a held account's mail deletes it and sends no
// DSN, though its recipients are undelivered (SPEC R20).
func TestPurgeNoReport(t *testing.T) {
	w := newWorld(t, nil, nil)
	w.submit("jan@firma.test", "eva@a.test")
	w.submit("jan@firma.test", "petr@b.test")
	if n, err := w.q.Hold("jan@firma.test", "logins from many networks"); err != nil || n != 2 {
		t.Fatalf("Hold = %d, %v", n, err)
	}
	n, err := w.q.Purge("jan@firma.test")
	if err != nil || n != 2 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	w.run()
	for d, r := range w.rcv {
		if got := len(r.Messages()); got != 0 {
			t.Fatalf("%s got %d messages after purge", d, got)
		}
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool holds %d messages (a report?) after purge", len(q))
	}
	if s := w.q.Stats(); s.Reports != 0 {
		t.Fatalf("%d reports made", s.Reports)
	}
}

// senderFunc is a delivery.Sender made of a function.
type senderFunc func(m *delivery.Message) []delivery.Result

func (f senderFunc) Deliver(_ context.Context, m *delivery.Message) []delivery.Result { return f(m) }
