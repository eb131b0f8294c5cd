package queue

import (
	"context"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// TestDrainFinishesDeliveriesStartsNone: a server handing over drains its
// queue: the delivery under way finishes and is recorded (its message
// leaves the spool), and a message that comes due meanwhile is left for the
// next process, not attempted.
func TestDrainFinishesDeliveriesStartsNone(t *testing.T) {
	release := make(chan struct{})
	w, first, stop := hungDelivery(t, release)
	defer stop()

	drained := make(chan bool)
	go func() { drained <- w.q.Drain(context.Background()) }()
	testutil.WaitFor(t, 10*time.Second, "the queue to stop dispatching", func() bool {
		w.q.mu.Lock()
		defer w.q.mu.Unlock()
		return w.q.draining
	})
	second := w.submit("jan@firma.test", "ota@b.test")
	close(release)
	if !<-drained {
		t.Fatal("Drain reported deliveries still under way")
	}
	ids := map[string]bool{}
	for _, env := range w.queued() {
		ids[env.ID] = true
	}
	if ids[first] {
		t.Errorf("the delivery under way at Drain is not recorded: %s is still queued", first)
	}
	if !ids[second] {
		t.Errorf("the message that came due while draining left the spool")
	}
	if n := len(w.rcv["b.test"].Messages()); n != 0 {
		t.Errorf("a delivery started while draining: b.test got %d messages", n)
	}
}

// TestDrainGivesUpAtDeadline: a delivery that hangs past the drain's
// deadline makes Drain report false, and Run's end then interrupts it.
func TestDrainGivesUpAtDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	w, _, stop := hungDelivery(t, release)
	dctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if w.q.Drain(dctx) {
		t.Error("Drain reported every delivery ended while one hangs")
	}
	stop()
}

// hungDelivery runs a queue whose delivery of a message to eva@a.test,
// submitted at once, is held in its data until release is closed; it
// returns once that delivery is there, with the message's id and a stop
// that ends Run and waits for it.
func hungDelivery(t *testing.T, release chan struct{}) (w *world, id string, stop func()) {
	arrived := make(chan struct{})
	w = newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {DataHook: func(testutil.Received) *smtp.SMTPError {
		close(arrived)
		<-release
		return nil
	}}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		w.q.Run(ctx)
	}()
	id = w.submit("jan@firma.test", "eva@a.test")
	<-arrived
	return w, id, func() { cancel(); <-ran }
}
