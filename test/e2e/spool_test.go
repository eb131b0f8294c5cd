package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// 50 clients submit at once, each message over its own transaction, while
// the server delivers to a receiving MX; then the server is killed with
// SIGKILL in the middle of it. Every message that got 250 is in the queue
// exactly once after the restart, or was delivered before the kill, and in
// the end each is delivered exactly once (SPEC R15): none lost, none twice.
func TestSpoolConcurrentCrash(t *testing.T) {
	dns := testutil.NewDNSServer(t)
	ln := testutil.ListenSamePort(t, "127.0.0.2")[0]
	port := ln.Addr().(*net.TCPAddr).Port
	dns.AddMX("dest.test", 10, "mx.dest.test")
	dns.AddA("mx.dest.test", "127.0.0.2")

	// The MX accepts until the gate is shut; then it takes each message's
	// data and does not answer until the gate opens again, when it refuses
	// with 451 (to a client that is gone by then).
	gate := &mxGate{}
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{Listener: ln,
		DataHook: func(testutil.Received) *smtp.SMTPError {
			if !gate.pass() {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "gave up"}
			}
			return nil
		}})
	// Registered after the receiver's own cleanup, so it runs first and
	// lets held sessions end before the receiver stops.
	t.Cleanup(gate.open)

	s := newServer(t, fmt.Sprintf(`[listener.submission]
allow_plaintext_auth = true
[limits]
max_connections_per_ip = 200
[queue]
warn_after = "0s"
retry_min = "1s"
retry_max = "2s"
[delivery]
resolver = %q
port = %d
connect_timeout = "5s"
timeout = "60s"
`, dns.Addr, port))
	s.mustCLI("", "domain", "add", "firma.test")
	s.mustCLI("secret-pw\n", "account", "add", "jan@firma.test")
	s.start()

	// acked maps each message's token to the queue id its 250 named.
	var mu sync.Mutex
	acked := map[string]string{}
	var stop atomic.Bool
	var wg sync.WaitGroup
	// The clients log in one after the other (the first login's check is
	// then cached for the others), and all submit at once.
	clients := make([]*smtp.Client, 50)
	for g := range clients {
		c, err := smtp.Dial(s.sub)
		if err != nil {
			t.Fatalf("sender %d: %v", g, err)
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			t.Fatalf("sender %d: %v", g, err)
		}
		if err := c.Auth(sasl.NewPlainClient("", "jan@firma.test", "secret-pw")); err != nil {
			t.Fatalf("sender %d: %v", g, err)
		}
		clients[g] = c
	}
	for g, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; !stop.Load(); k++ {
				// Errors are expected once the server is killed; only a
				// 250 counts.
				token := fmt.Sprintf("tok-%02d-%04d", g, k)
				if c.Mail("jan@firma.test", nil) != nil || c.Rcpt("eva@dest.test", nil) != nil {
					return
				}
				wc, err := c.Data()
				if err != nil {
					return
				}
				fmt.Fprintf(wc, "From: jan@firma.test\r\nTo: eva@dest.test\r\nSubject: %s\r\n\r\n%s\r\n%s\r\n",
					token, token, strings.Repeat("Line of text in the body.\r\n", 40))
				resp, err := wc.CloseWithResponse()
				if err != nil {
					return
				}
				m := qIDRe.FindStringSubmatch(resp.StatusText)
				if m == nil {
					t.Errorf("250 without a queue id: %q", resp.StatusText)
					return
				}
				mu.Lock()
				acked[token] = m[1]
				mu.Unlock()
			}
		}()
	}
	nacked := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	testutil.WaitFor(t, 120*time.Second, "150 messages accepted", func() bool { return nacked() >= 150 })
	testutil.WaitFor(t, 120*time.Second, "some messages delivered", func() bool { return len(rcv.Messages()) >= 20 })

	// From now on the MX hangs on every message; once each message it
	// accepted is finished in the queue, nothing is between the MX's 250 and
	// the server's record of it, and the kill cannot cause a duplicate that
	// RFC 5321 §6.1 would excuse.
	gate.shut()
	testutil.WaitFor(t, 60*time.Second, "every delivered message finished in the queue", func() bool {
		return strings.Count(s.log.String(), `msg="message finished"`) == len(rcv.Messages())
	})
	s.kill()
	stop.Store(true)
	wg.Wait()
	gate.open()
	before := tokens(rcv.Messages())
	t.Logf("%d messages acknowledged, %d delivered before the kill", nacked(), len(before))

	// Start again with the MX still hanging, so that the queue can be
	// listed before anything more goes out.
	gate.shut()
	s.start()
	list := s.mustCLI("", "queue", "list")
	queued := map[string]int{}
	for _, l := range strings.Split(list, "\n") {
		if id, _, ok := strings.Cut(l, "\t"); ok {
			queued[id]++
		}
	}
	mu.Lock()
	for token, id := range acked {
		switch n := queued[id] + before[token]; {
		case n == 0:
			t.Errorf("%s (%s) got 250 but is neither delivered nor queued after the crash", token, id)
		case n > 1:
			t.Errorf("%s (%s) is queued %d times and delivered %d times", token, id, queued[id], before[token])
		}
	}
	mu.Unlock()
	if strings.Contains(s.log.String(), "damaged") {
		t.Errorf("the restart reported damage:\n%s", s.log)
	}

	gate.open()
	testutil.WaitFor(t, 120*time.Second, "the queue to empty", func() bool {
		return !strings.Contains(s.mustCLI("", "queue", "list"), "\t")
	})
	after := tokens(rcv.Messages())
	mu.Lock()
	defer mu.Unlock()
	for token, id := range acked {
		if after[token] != 1 {
			t.Errorf("%s (%s) delivered %d times, want once", token, id, after[token])
		}
	}
	for token, n := range after {
		if n > 1 {
			t.Errorf("%s delivered %d times (acknowledged: %v)", token, n, acked[token] != "")
		}
	}
	msgs, _ := filepath.Glob(filepath.Join(s.dir, "data", "spool", "*.msg"))
	if len(msgs) != 0 {
		t.Errorf("%d message files left in the spool after the queue emptied", len(msgs))
	}
	s.interrupt()
	if segs, _ := os.ReadDir(filepath.Join(s.dir, "data", "spool", "journal")); len(segs) > 1 {
		t.Errorf("%d journal segments left", len(segs))
	}
}

var tokenRe = regexp.MustCompile(`\nSubject: (tok-\d\d-\d{4})\r\n`)

// tokens counts the messages received per token.
func tokens(msgs []testutil.Received) map[string]int {
	out := map[string]int{}
	for _, m := range msgs {
		if t := tokenRe.FindSubmatch(m.Data); t != nil {
			out[string(t[1])]++
		}
	}
	return out
}

// mxGate holds a receiving MX's answers at the end of DATA while shut.
type mxGate struct {
	mu sync.Mutex
	// held is closed when the gate opens; nil while it is open.
	held chan struct{}
}

// pass returns true at once while the gate is open; while it is shut it
// waits for it to open and returns false.
func (g *mxGate) pass() bool {
	g.mu.Lock()
	held := g.held
	g.mu.Unlock()
	if held == nil {
		return true
	}
	<-held
	return false
}

func (g *mxGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held == nil {
		g.held = make(chan struct{})
	}
}

func (g *mxGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}
