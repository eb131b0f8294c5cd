package testutil

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitFor: WaitFor returns once a condition that a goroutine makes true
// holds, having asked more than once.
func TestWaitFor(t *testing.T) {
	var calls, ready atomic.Int32
	go func() {
		time.Sleep(30 * time.Millisecond)
		ready.Store(1)
	}()
	WaitFor(t, 10*time.Second, "the flag", func() bool {
		calls.Add(1)
		return ready.Load() == 1
	})
	if calls.Load() < 2 {
		t.Fatalf("condition asked %d times, want at least 2", calls.Load())
	}
}
