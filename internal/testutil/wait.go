package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond every 10ms until it holds, for what happens in the
// background (a server process, a queue, a session record saved at close);
// if it does not hold within the given time the test fails naming what it
// waited for. The bound only ends a test that would otherwise hang: it is
// not a timing assertion.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
