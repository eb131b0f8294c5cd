package delivery

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

func TestIsSlowDown(t *testing.T) {
	for reply, want := range map[string]bool{
		"421 4.7.28 Our system has detected an unusual rate of unsolicited mail": true,
		"451 4.7.500 Server busy. Please try again later":                        true,
		"421 Service not available, closing channel":                             true,
		"450 4.7.1 Client host rejected: try again later":                        true,
		"451 4.3.0 temporary failure":                                            false,
		"421 4.3.2 shutting down":                                                false,
		"421 4.4.2 idle timeout":                                                 false,
		"550 5.7.1 rejected":                                                     false,
		"connect: connection refused":                                            false,
		"4.7.1 x":                                                                false,
	} {
		if got := isSlowDown(reply); got != want {
			t.Errorf("isSlowDown(%q) = %v, want %v", reply, got, want)
		}
	}
}

// A receiver that answers 421 4.7.28 after some messages: the host gets a
// pause, during which no connection is made and mail is deferred (not
// bounced) with the reason; then fewer connections at once; a second such
// reply doubles the pause and halves the connections again. Backoffs says
// which host and why, for the queue page.
func TestBackoff(t *testing.T) {
	var throttle atomic.Bool
	release := make(chan struct{})
	var hold atomic.Bool
	// held counts the deliveries held in their data.
	var held atomic.Int32
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {
		RcptHook: func(string, int) *smtp.SMTPError {
			if throttle.Load() {
				return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "unusual rate of mail"}
			}
			return nil
		},
		DataHook: func(testutil.Received) *smtp.SMTPError {
			if hold.Load() {
				held.Add(1)
				<-release
			}
			return nil
		},
	}}, "127.0.0.2")
	w.dns.AddMX("example.test", 10, "mx.example.test")
	w.dns.AddA("mx.example.test", "127.0.0.2")
	clock := testutil.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	x := w.mx(func(c *MXConfig) {
		c.Pool.MaxPerDestination = 4
		c.Pool.MaxMessages = 1
		c.Now = clock.Now
	})
	rx := w.rx["127.0.0.2"]
	deliver := func() Result { return x.Deliver(context.Background(), msg("example.test", "x@example.test"))[0] }
	for i := 0; i < 3; i++ {
		if r := deliver(); r.Status != Delivered {
			t.Fatalf("message %d: %v %q", i, r.Status, r.Reply)
		}
	}
	if b := x.Backoffs(); len(b) != 0 {
		t.Fatalf("back-off before any refusal: %+v", b)
	}

	throttle.Store(true)
	if r := deliver(); r.Status != Temporary || !strings.HasPrefix(r.Reply, "421 4.7.28") {
		t.Fatalf("refused message: %v %q, want deferred with the 421", r.Status, r.Reply)
	}
	b := x.Backoffs()
	if len(b) != 1 || b[0].Host != "mx.example.test" || !strings.HasPrefix(b[0].Reason, "421 4.7.28 unusual rate") ||
		b[0].Level != 1 || b[0].MaxConnections != 2 || !b[0].Until.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("Backoffs = %+v", b)
	}

	// In the pause: no connection at all, deferred with the reason.
	conns := rx.Connections()
	if r := deliver(); r.Status != Temporary || !strings.Contains(r.Reply, "mx.example.test asked to slow down (421 4.7.28 unusual rate of mail); back-off until 2026-03-01T10:01:00Z") {
		t.Fatalf("in the pause: %v %q", r.Status, r.Reply)
	}
	if n := rx.Connections(); n != conns {
		t.Fatalf("%d connections during the pause", n-conns)
	}

	// After the pause: at most 2 connections at once instead of 4.
	clock.Advance(time.Minute)
	throttle.Store(false)
	hold.Store(true)
	const n = 4
	var wg sync.WaitGroup
	results := make([]Result, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = deliver()
		}()
	}
	// Two deliveries hold their connections in the data, and the other
	// two wait for one: only then is the number of connections known.
	testutil.WaitFor(t, 10*time.Second, "two deliveries in their data and two waiting for a connection", func() bool {
		x.d.pool.mu.Lock()
		defer x.d.pool.mu.Unlock()
		waiting := 0
		for _, d := range x.d.pool.dests {
			waiting += len(d.waiters)
		}
		return waiting == n-2 && held.Load() == 2
	})
	if c := rx.Connections() - conns; c != 2 {
		t.Errorf("%d connections at once in back-off, want 2", c)
	}
	once.Do(func() { close(release) })
	wg.Wait()
	for i, r := range results {
		if r.Status != Delivered {
			t.Errorf("message %d after the pause: %v %q", i, r.Status, r.Reply)
		}
	}

	// A second refusal within the quiet time: twice the pause, half the
	// connections.
	throttle.Store(true)
	clock.Advance(10 * time.Minute)
	if r := deliver(); r.Status != Temporary {
		t.Fatalf("second refusal: %v %q", r.Status, r.Reply)
	}
	b = x.Backoffs()
	if len(b) != 1 || b[0].Level != 2 || b[0].MaxConnections != 1 || !b[0].Until.Equal(clock.Now().Add(2*time.Minute)) {
		t.Fatalf("after a second refusal: %+v", b)
	}
	// An hour of quiet after the pause ends the back-off.
	clock.Advance(2*time.Minute + time.Hour)
	if b := x.Backoffs(); len(b) != 0 {
		t.Errorf("back-off still listed after the quiet time: %+v", b)
	}
}

// Every receiver that ever asked to slow down is a host name the remote
// side chose; one whose back-off has ended is forgotten when another asks,
// even if no mail goes to it again and nobody lists the back-offs.
func TestBackoffsForgotten(t *testing.T) {
	clock := testutil.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	b := newBackoffs(4, clock.Now)
	for i := range 100 {
		b.note(fmt.Sprintf("mx%d.example.test", i), "421 4.7.28 unusual rate of mail")
		clock.Advance(backoffFirstPause + backoffQuiet)
	}
	b.mu.Lock()
	n := len(b.hosts)
	b.mu.Unlock()
	if n != 1 {
		t.Errorf("%d hosts kept, want 1: those whose back-off ended are kept too", n)
	}
}
