package queue

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// traced records what the queue tells its Tracer.
type traced struct {
	mu   sync.Mutex
	seen []TraceEvent
}

func (tr *traced) Trace(ev TraceEvent) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.seen = append(tr.seen, ev)
}

// of returns the kinds told of rcpt ("" for the whole message) of message id.
func (tr *traced) of(id, rcpt string) []TraceEvent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []TraceEvent
	for _, ev := range tr.seen {
		if ev.QueueID == id && ev.Rcpt == rcpt {
			out = append(out, ev)
		}
	}
	return out
}

// TestTracer: the Tracer hears each recipient's attempts with the server
// and its reply, the retry time of a deferral, the report made for a
// failure, and a hold and release of the whole message.
func TestTracer(t *testing.T) {
	tr := &traced{}
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, func(c *Config) { c.Tracer = tr })
	w.rcv["b.test"].SetRcptError("nobody@b.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	id := w.submit("jan@firma.test", "eva@b.test", "nobody@b.test", "later@a.test")
	w.run()

	ok := tr.of(id, "eva@b.test")
	if len(ok) != 1 || ok[0].Kind != TraceDelivered || !strings.HasPrefix(ok[0].Reply, "250") || !strings.HasPrefix(ok[0].Host, "mx.b.test") ||
		ok[0].TLS == "" {
		t.Errorf("delivered recipient: %+v", ok)
	}
	no := tr.of(id, "nobody@b.test")
	if len(no) != 2 || no[0].Kind != TraceFailed || !strings.HasPrefix(no[0].Reply, "550 5.1.1") ||
		no[1].Kind != TraceBounced || !strings.HasPrefix(no[1].Detail, "report ") {
		t.Errorf("failed recipient: %+v", no)
	}
	later := tr.of(id, "later@a.test")
	if len(later) != 1 || later[0].Kind != TraceDeferred || !later[0].Next.Equal(w.clk.Now().Add(5*time.Minute)) {
		t.Errorf("deferred recipient: %+v", later)
	}

	if _, err := w.q.Hold("jan@firma.test", "too many bounces"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.q.Release("jan@firma.test"); err != nil {
		t.Fatal(err)
	}
	msg := tr.of(id, "")
	if len(msg) != 2 || msg[0].Kind != TraceHeld || msg[0].Detail != "too many bounces" || msg[1].Kind != TraceReleased {
		t.Errorf("message events: %+v", msg)
	}
}
