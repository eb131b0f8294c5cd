package delivery

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"submitd/internal/testutil"
)

// numbered returns a message for rcpt whose content names n, so a test can
// tell which message a receiver got.
func numbered(domain, rcpt string, n int) *Message {
	m := msg(domain, rcpt)
	m.Data = []byte(fmt.Sprintf("From: a@sender.test\r\nSubject: message %d\r\n\r\nbody %d\r\n", n, n))
	m.Size = int64(len(m.Data))
	return m
}

// received counts the messages a receiver got by their number.
func received(rx *testutil.Receiver) map[int]int {
	out := map[int]int{}
	for _, m := range rx.Messages() {
		var n int
		if _, err := fmt.Sscanf(string(m.Data), "From: a@sender.test\r\nSubject: message %d", &n); err == nil {
			out[n]++
		}
	}
	return out
}

// queries counts the DNS questions for name of type qt.
func queries(w *world, name string, qt uint16) int {
	n := 0
	for _, q := range w.dns.Queries() {
		if strings.EqualFold(strings.TrimSuffix(q.Name, "."), name) && q.Type == qt {
			n++
		}
	}
	return n
}

// Messages for one destination go over one connection in turn, also for
// another domain with the same MX host, and a domain whose session is open
// is not looked up in the DNS again.
func TestReuseCarriesMessagesInTurn(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddMX("example.test", 10, "mx.example.test")
	w.dns.AddMX("other.test", 10, "mx.example.test")
	w.dns.AddA("mx.example.test", "127.0.0.2")
	x := w.mx(nil)
	for i := 0; i < 8; i++ {
		d := "example.test"
		if i >= 5 {
			d = "other.test"
		}
		check(t, x.Deliver(context.Background(), numbered(d, "x@"+d, i)), "x@"+d, Delivered, "250")
	}
	rx := w.rx["127.0.0.2"]
	if c := rx.Connections(); c != 1 {
		t.Errorf("%d connections for 8 messages to one MX host, want 1", c)
	}
	got := received(rx)
	for i := 0; i < 8; i++ {
		if got[i] != 1 {
			t.Errorf("message %d received %d times, want once", i, got[i])
		}
	}
	if n := queries(w, "example.test", dns.TypeMX); n != 1 {
		t.Errorf("example.test MX asked %d times for 5 messages, want 1", n)
	}
	if n := queries(w, "other.test", dns.TypeMX); n != 1 {
		t.Errorf("other.test MX asked %d times, want 1", n)
	}
}

// A connection carries at most MaxMessages messages, then is closed with
// QUIT.
func TestReuseCap(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	x := w.mx(func(c *MXConfig) { c.Pool.MaxMessages = 3 })
	for i := 0; i < 7; i++ {
		check(t, x.Deliver(context.Background(), numbered("example.test", "x@example.test", i)), "x@example.test", Delivered, "250")
	}
	rx := w.rx["127.0.0.2"]
	if c := rx.Connections(); c != 3 {
		t.Errorf("%d connections for 7 messages at 3 per connection, want 3", c)
	}
	testutil.WaitFor(t, 5*time.Second, "the two full sessions to end", func() bool { return rx.Closed() == 2 })
}

// An idle connection is closed after IdleTimeout; CloseIdle closes the rest
// at once.
func TestIdleConnectionsClosed(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2", "127.0.0.3")
	w.dns.AddA("quick.test", "127.0.0.2")
	w.dns.AddA("slow.test", "127.0.0.3")
	x := w.mx(func(c *MXConfig) { c.Pool.IdleTimeout = 50 * time.Millisecond })
	check(t, x.Deliver(context.Background(), msg("quick.test", "x@quick.test")), "x@quick.test", Delivered, "250")
	quick := w.rx["127.0.0.2"]
	testutil.WaitFor(t, 5*time.Second, "the idle session to end", func() bool { return quick.Closed() == 1 })
	check(t, x.Deliver(context.Background(), msg("quick.test", "x@quick.test")), "x@quick.test", Delivered, "250")
	if c := quick.Connections(); c != 2 {
		t.Errorf("%d connections, want a new one after the idle timeout", c)
	}

	y := w.mx(func(c *MXConfig) { c.Pool.IdleTimeout = time.Hour })
	check(t, y.Deliver(context.Background(), msg("slow.test", "x@slow.test")), "x@slow.test", Delivered, "250")
	slow := w.rx["127.0.0.3"]
	if n := slow.Closed(); n != 0 {
		t.Fatalf("%d sessions ended before CloseIdle", n)
	}
	y.CloseIdle()
	testutil.WaitFor(t, 5*time.Second, "CloseIdle to end the session", func() bool { return slow.Closed() == 1 })
	// After CloseIdle, nothing is kept.
	check(t, y.Deliver(context.Background(), msg("slow.test", "x@slow.test")), "x@slow.test", Delivered, "250")
	testutil.WaitFor(t, 5*time.Second, "the session after CloseIdle to end", func() bool { return slow.Closed() == 2 })
}

// A receiver that hangs up after every second message, at the next MAIL
// FROM, or that closes idle connections itself: each message is sent again
// over a new connection at once, none is lost and none arrives twice.
func TestReuseRecoversWhenReceiverCloses(t *testing.T) {
	cases := []struct {
		name  string
		opts  testutil.ReceiverOptions
		pause time.Duration
		conns int
	}{
		{"after two messages", testutil.ReceiverOptions{CloseAfter: 2}, 0, 3},
		{"idle", testutil.ReceiverOptions{IdleTimeout: 50 * time.Millisecond}, 200 * time.Millisecond, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": c.opts}, "127.0.0.2")
			w.dns.AddA("example.test", "127.0.0.2")
			x := w.mx(nil)
			for i := 0; i < 5; i++ {
				check(t, x.Deliver(context.Background(), numbered("example.test", "x@example.test", i)), "x@example.test", Delivered, "250")
				time.Sleep(c.pause)
			}
			rx := w.rx["127.0.0.2"]
			got := received(rx)
			for i := 0; i < 5; i++ {
				if got[i] != 1 {
					t.Errorf("message %d received %d times, want once", i, got[i])
				}
			}
			if n := rx.Connections(); n != c.conns {
				t.Errorf("%d connections, want %d", n, c.conns)
			}
		})
	}
}

// A reused connection that breaks in the middle of the data: the message
// was not complete, so the receiver discarded it, and it goes again over a
// new connection at once.
func TestReuseRecoversFromDropInData(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{
		"127.0.0.2": {DropInData: func(n int) bool { return n == 2 }},
	}, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	x := w.mx(nil)
	// Larger than what the sockets buffer, so the sender sees the break
	// while it writes.
	big := bigMsg(8 << 20)
	for i := 0; i < 2; i++ {
		check(t, x.Deliver(context.Background(), big), "x@example.test", Delivered, "250")
	}
	rx := w.rx["127.0.0.2"]
	if n := len(rx.Messages()); n != 2 {
		t.Errorf("receiver has %d messages, want 2", n)
	}
	if n := rx.Connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// A server that answers 421 is closing the connection (RFC 5321 §3.8): the
// connection carries no further message even though it is still open.
func TestReply421DropsConnection(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {
		RcptHook: func(rcpt string, _ int) *smtp.SMTPError {
			if strings.HasPrefix(rcpt, "busy") {
				return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
			}
			return nil
		},
	}}, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	x := w.mx(nil)
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
	check(t, x.Deliver(context.Background(), msg("example.test", "busy@example.test")), "busy@example.test", Temporary, "421 4.3.2")
	check(t, x.Deliver(context.Background(), msg("example.test", "y@example.test")), "y@example.test", Delivered, "250")
	if n := w.rx["127.0.0.2"].Connections(); n != 2 {
		t.Errorf("%d connections, want 2: a new one after the 421", n)
	}
}

// Opportunistic TLS never takes a session set up without it: each message
// tries STARTTLS on a new connection first, and only its clear-text
// fallback may reuse the clear-text session of the message before.
func TestReuseKeepsTLSModesApart(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {STARTTLS: true, CertHosts: []string{"mx.example.test"}}}, "127.0.0.2", "127.0.0.3")
	w.dns.AddMX("example.test", 10, "mx.example.test")
	w.dns.AddA("mx.example.test", "127.0.0.2")
	x := w.mx(nil)
	check(t, x.Deliver(context.Background(), msg("example.test", "a@example.test")), "a@example.test", Delivered, "250")
	res, _, err := x.d.attempt(context.Background(), msg("example.test", "b@example.test"),
		target{name: "mx.example.test", addr: w.rx["127.0.0.2"].Addr, mode: tlsNone})
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, "b@example.test", Delivered, "250")
	check(t, x.Deliver(context.Background(), msg("example.test", "c@example.test")), "c@example.test", Delivered, "250")
	rx := w.rx["127.0.0.2"]
	ms := rx.Messages()
	if len(ms) != 3 || !ms[0].TLS || ms[1].TLS || !ms[2].TLS {
		t.Fatalf("got %+v, want TLS, clear text, TLS", ms)
	}
	// The receiver counts a session per EHLO, and STARTTLS brings a second
	// one: two for the TLS connection that carried a and c, one for the
	// clear-text connection.
	if n := rx.Connections(); n != 3 {
		t.Errorf("%d sessions, want 3: one connection per TLS mode\n%s", n, w.log.String())
	}
}

// With every connection of a destination busy, a further message waits for
// one instead of opening more; the connections then carry the waiting
// messages in turn.
func TestPerDestinationLimit(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {
		DataHook: func(testutil.Received) *smtp.SMTPError { <-release; return nil },
	}}, "127.0.0.2")
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	w.dns.AddA("example.test", "127.0.0.2")
	x := w.mx(func(c *MXConfig) { c.Pool.MaxPerDestination = 2 })
	const n = 6
	var wg sync.WaitGroup
	results := make([][]Result, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = x.Deliver(context.Background(), numbered("example.test", "x@example.test", i))
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "four deliveries waiting for a connection", func() bool {
		x.d.pool.mu.Lock()
		defer x.d.pool.mu.Unlock()
		waiting := 0
		for _, d := range x.d.pool.dests {
			waiting += len(d.waiters)
		}
		return waiting == n-2
	})
	rx := w.rx["127.0.0.2"]
	if c := rx.Connections(); c != 2 {
		t.Errorf("%d connections while all are busy, want 2", c)
	}
	once.Do(func() { close(release) })
	wg.Wait()
	for i, res := range results {
		check(t, res, "x@example.test", Delivered, "250")
		if t.Failed() {
			t.Fatalf("message %d", i)
		}
	}
	if c := rx.Connections(); c != 2 {
		t.Errorf("%d connections for %d messages, want 2", c, n)
	}
}

// A delivery waiting for a connection gives up when its context ends.
func TestWaitForConnectionCancelled(t *testing.T) {
	p := newPool(PoolConfig{MaxPerDestination: 1}, func(*session) {})
	k := destKey{name: "mx.example.test", addr: "192.0.2.1:25"}
	if s, err := p.get(context.Background(), k); s != nil || err != nil {
		t.Fatalf("first get = %v, %v; want a free slot", s, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := p.get(ctx, k)
		done <- err
	}()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("get returned no error after its context ended")
	}
	p.release(k)
	if open, idle := p.stats(); open != 0 || idle != 0 {
		t.Errorf("pool holds %d open, %d idle after all were released", open, idle)
	}
	if len(p.dests) != 0 {
		t.Errorf("pool still records %d destinations", len(p.dests))
	}
}

// The pool keeps at most MaxIdle idle sessions over all destinations; a
// further one is closed at once.
func TestMaxIdle(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		w.dns.AddA(fmt.Sprintf("d%d.test", i), ip)
	}
	x := w.mx(func(c *MXConfig) { c.Pool.MaxIdle = 2 })
	for i := 0; i < 3; i++ {
		d := fmt.Sprintf("d%d.test", i)
		check(t, x.Deliver(context.Background(), msg(d, "x@"+d)), "x@"+d, Delivered, "250")
	}
	if open, idle := x.d.pool.stats(); open != 2 || idle != 2 {
		t.Errorf("pool holds %d open, %d idle; want 2 and 2", open, idle)
	}
	testutil.WaitFor(t, 5*time.Second, "the third session to end", func() bool { return w.rx["127.0.0.4"].Closed() == 1 })
	x.CloseIdle()
	if open, idle := x.d.pool.stats(); open != 0 || idle != 0 {
		t.Errorf("after CloseIdle the pool holds %d open, %d idle", open, idle)
	}
}

// The pool settings reach the pool, in MX and in smarthost mode.
func TestNewTakesPoolSettings(t *testing.T) {
	st := Settings{Port: 25, Pool: PoolConfig{MaxMessages: 7, IdleTimeout: 3 * time.Second, MaxPerDestination: 4}}
	want := PoolConfig{MaxMessages: 7, IdleTimeout: 3 * time.Second, MaxPerDestination: 4, MaxIdle: 100}
	s, err := New(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.(*MX).d.pool.cfg; got != want {
		t.Errorf("MX pool %+v, want %+v", got, want)
	}
	st.Smarthost = "relay.example.test:587"
	s, err = New(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.(*Smarthost).d.pool.cfg; got != want {
		t.Errorf("smarthost pool %+v, want %+v", got, want)
	}
}

// A delivery cancelled while it checks a kept session defers its
// recipients and gives the session's place back.
func TestCancelOnReusedSession(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	x := w.mx(nil)
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	check(t, x.Deliver(ctx, msg("example.test", "y@example.test")), "y@example.test", Temporary, "delivery interrupted")
	if open, idle := x.d.pool.stats(); open != 0 || idle != 0 {
		t.Errorf("pool holds %d open, %d idle after the cancelled delivery; want none", open, idle)
	}
}
