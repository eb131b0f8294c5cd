package queue

import (
	"sync"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/testutil"
)

// attempts records what the queue tells its Observer.
type attempts struct {
	mu   sync.Mutex
	seen []attempt
}

// attempt is one Attempted call.
type attempt struct {
	results   []delivery.Result
	took, age time.Duration
}

func (a *attempts) Attempted(results []delivery.Result, took, age time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, attempt{results, took, age})
}

func (a *attempts) all() []attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]attempt(nil), a.seen...)
}

// TestSizesAndObserver: a message is due when spooled, deferred after a
// 451, gone once delivered; the oldest message's arrival is reported while
// it waits; the Observer hears of both attempts with their results and the
// message's age.
func TestSizesAndObserver(t *testing.T) {
	obs := &attempts{}
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, func(c *Config) { c.Observer = obs })
	t0 := w.clk.Now()
	w.submit("jan@firma.test", "eva@a.test")
	sz := w.q.Sizes()
	if sz.Messages[StateDue] != 1 || sz.Messages[StateDeferred] != 0 || sz.Messages[StateActive] != 0 || !sz.Oldest.Equal(t0) {
		t.Fatalf("spooled: %+v", sz)
	}

	w.run()
	sz = w.q.Sizes()
	if sz.Messages[StateDeferred] != 1 || sz.Messages[StateDue] != 0 || !sz.Oldest.Equal(t0) {
		t.Fatalf("after a 451: %+v", sz)
	}
	got := obs.all()
	if len(got) != 1 || len(got[0].results) != 1 || got[0].results[0].Status != delivery.Temporary || got[0].age != 0 || got[0].took <= 0 {
		t.Fatalf("first attempt observed as %+v", got)
	}

	w.clk.Advance(5 * time.Minute)
	w.run()
	sz = w.q.Sizes()
	if sz.Messages[StateDeferred]+sz.Messages[StateDue]+sz.Messages[StateActive] != 0 || !sz.Oldest.IsZero() {
		t.Fatalf("after delivery: %+v", sz)
	}
	got = obs.all()
	if len(got) != 2 || got[1].results[0].Status != delivery.Delivered || got[1].age != 5*time.Minute {
		t.Fatalf("second attempt observed as %+v", got)
	}
}
