package queue

import (
	"time"

	"submitd/internal/delivery"
)

// Observer hears of delivery attempts, for metrics. Attempted runs on the
// delivery worker, so it must only count and return.
type Observer interface {
	// Attempted is told of every attempt at one destination domain: the
	// recipients' results, how long the attempt took, and how long before
	// its end the message was accepted.
	Attempted(results []delivery.Result, took, age time.Duration)
}

// noObserver is the Observer of a queue without one.
type noObserver struct{}

func (noObserver) Attempted([]delivery.Result, time.Duration, time.Duration) {}

// observer returns the configured Observer, or one that does nothing.
func (q *Queue) observer() Observer {
	if q.cfg.Observer != nil {
		return q.cfg.Observer
	}
	return noObserver{}
}

// The states Sizes counts messages by.
const (
	// StateActive: an attempt is under way or waits for a worker.
	StateActive = "active"
	// StateDue: the next attempt is due and has not started yet.
	StateDue = "due"
	// StateDeferred: the next attempt is due later (SPEC R18 retries).
	StateDeferred = "deferred"
)

// Sizes is what the queue holds now, for metrics.
type Sizes struct {
	// Messages counts messages by state (StateActive, StateDue,
	// StateDeferred).
	Messages map[string]int
	// Oldest is when the oldest message was accepted; zero when the queue
	// is empty.
	Oldest time.Time
}

// Sizes counts the messages by state and finds the oldest. It looks at
// every message under the queue's lock, so it is meant for a scrape every
// few seconds, not for a loop.
func (q *Queue) Sizes() Sizes {
	now := q.now()
	sz := Sizes{Messages: map[string]int{StateActive: 0, StateDue: 0, StateDeferred: 0, StateHeld: 0}}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.entries {
		switch {
		case e.held:
			sz.Messages[StateHeld]++
		case e.active:
			sz.Messages[StateActive]++
		case e.due.After(now):
			sz.Messages[StateDeferred]++
		default:
			sz.Messages[StateDue]++
		}
		if !e.received.IsZero() && (sz.Oldest.IsZero() || e.received.Before(sz.Oldest)) {
			sz.Oldest = e.received
		}
	}
	return sz
}
