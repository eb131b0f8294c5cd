package queue

import (
	"fmt"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// The queue's deliveries to one destination share connections, and a
// receiver that hangs up after every third message, in the middle of a
// message's data, and once after a message's data but before its reply,
// loses nothing: each message arrives, and only the one whose final reply
// never came arrives twice (RFC 5321 §6.1 prefers that to a loss).
func TestReusedConnectionsSurviveReceiverHangups(t *testing.T) {
	const n = 12
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {
		CloseAfter:    3,
		DropInData:    func(i int) bool { return i == 5 },
		DropAfterData: func(i int) bool { return i == 8 },
	}}, nil)
	for i := 0; i < n; i++ {
		w.submit("jan@firma.test", fmt.Sprintf("u%d@a.test", i))
	}
	for round := 0; round < 5 && len(w.queued()) > 0; round++ {
		w.run()
		w.clk.Advance(time.Hour)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("%d messages still queued", len(q))
	}
	rx := w.rcv["a.test"]
	got := map[string]int{}
	total := 0
	for _, m := range rx.Messages() {
		for _, r := range m.Rcpts {
			got[r]++
			total++
		}
	}
	twice := 0
	for i := 0; i < n; i++ {
		switch c := got[fmt.Sprintf("u%d@a.test", i)]; c {
		case 1:
		case 2:
			twice++
		default:
			t.Errorf("u%d@a.test got the message %d times", i, c)
		}
	}
	if twice != 1 || total != n+1 {
		t.Errorf("%d messages arrived twice, %d in all; want only the one whose reply was lost, %d in all", twice, total, n+1)
	}
	if c := rx.Connections(); c >= n {
		t.Errorf("%d connections for %d messages: not reused", c, n)
	}
	t.Logf("%d connections", rx.Connections())
}
