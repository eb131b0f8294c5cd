package testutil

import (
	"sync"
	"time"
)

// Clock is a clock a test moves by hand, to be injected where the code under
// test takes a "Now func() time.Time", so that tests watch time-dependent
// behaviour (blocks running out, retries falling due) without sleeping. It is
// safe for concurrent use: the code under test reads it from its own
// goroutines while the test moves it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock that stands at start until it is moved.
func NewClock(start time.Time) *Clock {
	return &Clock{t: start}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Set puts the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
