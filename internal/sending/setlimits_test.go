package sending

import (
	"testing"
	"time"

	"submitd/internal/testutil"
)

// SetLimits puts new configured limits in force on the windows as
// counted: after three messages, a limit lowered to two refuses the next
// one at once, and one raised to five lets two more through.
func TestSetLimits(t *testing.T) {
	clock := testutil.NewClock(time.Date(2026, 3, 2, 13, 7, 30, 0, time.UTC))
	l := New(Config{Account: Limits{MessagesPerHour: 10}, Now: clock.Now})
	send := func() *Hit {
		tx, hit := l.Begin("jan@firma.cz", "firma.cz")
		if hit == nil {
			tx.Accepted()
		}
		return hit
	}
	for i := range 3 {
		if hit := send(); hit != nil {
			t.Fatalf("message %d refused: %s", i+1, hit.Text())
		}
	}
	l.SetLimits(Limits{MessagesPerHour: 2}, Limits{})
	if hit := send(); hit == nil || hit.Text() != "2 messages per hour" {
		t.Fatalf("after lowering the limit to 2: %+v", hit)
	}
	l.SetLimits(Limits{MessagesPerHour: 5}, Limits{})
	for i := range 2 {
		if hit := send(); hit != nil {
			t.Fatalf("message %d under the raised limit refused: %s", i+4, hit.Text())
		}
	}
	if hit := send(); hit == nil {
		t.Fatal("the sixth message went through a limit of 5")
	}
}
