package queue

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"submitd/internal/spool"
	"submitd/internal/testutil"
)

// powerCut restarts w's queue as after a power cut that lost message id's
// state file, which is written without a sync unless it settles an
// outcome: only what was made durable comes back.
func (w *world) powerCut(id string) {
	w.t.Helper()
	w.stop()
	dir := w.sp.Dir()
	if err := os.Remove(filepath.Join(dir, id+".state")); err != nil {
		w.t.Fatal(err)
	}
	sp, err := spool.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		w.t.Fatal(err)
	}
	sp.ClearUnfinished()
	w.sp, w.cfg.Spool = sp, sp
	w.start()
}

// A recipient's delivery is made durable before the queue goes on, so that
// it survives the loss of everything written without a sync and is not
// delivered again; a temporary failure is not, and its loss only makes the
// recipient be tried again sooner (a retry, never a loss).
func TestDeliveredStateSurvivesPowerCut(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"b.test": {RcptHook: tempFail(2)}}, nil)
	id := w.submit("jan@firma.test", "eva@a.test", "petr@b.test")
	w.run()
	w.clk.Advance(5 * time.Minute)
	w.run()
	if st := w.state(id); st.Rcpts[0].Status != Delivered || st.Rcpts[1].Status != Deferred || st.Rcpts[1].Attempts != 2 {
		t.Fatalf("after two attempts: %s, %s(%d)", st.Rcpts[0].Status, st.Rcpts[1].Status, st.Rcpts[1].Attempts)
	}

	w.powerCut(id)
	st := w.state(id)
	if st.Rcpts[0].Status != Delivered {
		t.Fatalf("eva@a.test is %s after the power cut, want delivered", st.Rcpts[0].Status)
	}
	// The second temporary failure was not synced; the first may have been
	// (along with eva's delivery, if it was recorded first), or not.
	if r := st.Rcpts[1]; !r.open() || r.Attempts > 1 {
		t.Fatalf("petr@b.test is %s(%d) after the power cut, want pending or deferred(1)", r.Status, r.Attempts)
	}
	w.clk.Advance(time.Hour)
	w.run()
	if a, b := len(w.rcv["a.test"].Messages()), len(w.rcv["b.test"].Messages()); a != 1 || b != 1 {
		t.Fatalf("a.test got %d, b.test %d; want 1 each", a, b)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages", len(q))
	}
}
