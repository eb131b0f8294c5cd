package smtpd

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// chunkConn is a connection whose client side is a fixed script delivered
// in given pieces: each server Read returns at most one piece, as if each
// had come in a packet of its own, and the end of the script is the client
// closing. Replies are collected. It lets a test hand the server exactly
// the same bytes split in different ways.
type chunkConn struct {
	mu     sync.Mutex
	chunks [][]byte
	out    bytes.Buffer
}

func (c *chunkConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *chunkConn) Close() error        { return nil }
func (c *chunkConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 587} }
func (c *chunkConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *chunkConn) SetDeadline(time.Time) error      { return nil }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

// loginScript is what a client sends before the part under test: EHLO and
// AUTH PLAIN on the "plain" listener, which allows it without TLS.
var loginScript = "EHLO client.example\r\n" + plain("jan@firma.cz", testPassword) + "\r\n"

// converse runs one session with script cut at the offsets cuts, and
// returns the replies and the content of every message it queued, with
// session and queue ids replaced by placeholders so that two runs compare.
func (e *testEnv) converse(script []byte, cuts []int) (string, []string) {
	e.t.Helper()
	cc := &chunkConn{}
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(script) {
			cc.chunks = append(cc.chunks, script[prev:c])
			prev = c
		}
	}
	cc.chunks = append(cc.chunks, script[prev:])
	e.srv.handle(cc, ListenerConfig{Name: "plain", AllowPlaintextAuth: true})
	replies := cc.out.String()
	var msgs []string
	for _, m := range queuedRe.FindAllStringSubmatch(replies, -1) {
		msgs = append(msgs, strings.ReplaceAll(e.content(m[1]), m[1], "QID"))
	}
	replies = queuedRe.ReplaceAllString(replies, "queued as QID")
	replies = regexp.MustCompile(sidRe).ReplaceAllString(replies, "SID")
	for i := range msgs {
		msgs[i] = regexp.MustCompile(sidRe).ReplaceAllString(msgs[i], "SID")
	}
	return replies, msgs
}

var queuedRe = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// checkSplits runs script whole, one byte per read, and cut at random
// points chosen by seed, and fails unless every run got the same replies
// and queued the same messages (SPEC R16: the same bytes get the same
// answer however they arrive). It returns the replies.
func (e *testEnv) checkSplits(script []byte, seed uint64) string {
	e.t.Helper()
	whole, wholeMsgs := e.converse(script, nil)
	bytewise := make([]int, len(script))
	for i := range bytewise {
		bytewise[i] = i
	}
	rng := rand.New(rand.NewPCG(seed, seed>>7|1))
	var random []int
	for i := 1; i < len(script); i++ {
		if rng.IntN(8) == 0 {
			random = append(random, i)
		}
	}
	for name, cuts := range map[string][]int{"one byte per read": bytewise, "random cuts": random} {
		got, gotMsgs := e.converse(script, cuts)
		if got != whole {
			e.t.Fatalf("%s: replies differ from the script sent whole\nwhole:\n%s\n%s:\n%s", name, whole, name, got)
		}
		if fmt.Sprint(gotMsgs) != fmt.Sprint(wholeMsgs) {
			e.t.Fatalf("%s: queued messages differ\nwhole: %q\n%s: %q", name, wholeMsgs, name, gotMsgs)
		}
	}
	return whole
}

// TestSmugglingSplit: the end-of-data lookalikes that once passed when they
// arrived in one packet with the next command get the same refusal whole,
// byte by byte and cut at random, over DATA and BDAT, pipelined with the
// commands after them; nothing is queued and nothing after the lookalike
// runs as a command (SPEC R16).
func TestSmugglingSplit(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) {
		s.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	}))
	next := "MAIL FROM:<jan@firma.cz>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: jan@firma.cz\r\n\r\nsmuggled\r\n.\r\n"
	tricks := []string{"\r\n.\r" + next, "\r\n.\r\r\n" + next, "\r\n.\r.\r\n" + next, "\r\n\x00.\r\n" + next, "\n.\n" + next, "\r\n.\n" + next}
	env := "MAIL FROM:<jan@firma.cz>\r\nRCPT TO:<eva@example.org>\r\n"
	for i, trick := range tricks {
		body := "From: jan@firma.cz\r\n\r\nfirst" + trick
		t.Run(fmt.Sprintf("DATA %q", trick[:6]), func(t *testing.T) {
			e.t = t
			script := loginScript + env + "DATA\r\n" + body + "\r\n.\r\nNOOP\r\nQUIT\r\n"
			got := e.checkSplits([]byte(script), uint64(i))
			if strings.Contains(got, "queued as") {
				t.Fatalf("a message was queued:\n%s", got)
			}
			if !strings.Contains(got, "554 5.6.0 SID message contains a") {
				t.Fatalf("no 554 refusal:\n%s", got)
			}
			if !strings.HasSuffix(got, "250 2.0.0 OK\r\n221 2.0.0 SID closing connection\r\n") {
				t.Fatalf("the session did not go on after the refusal:\n%s", got)
			}
		})
		t.Run(fmt.Sprintf("BDAT %q", trick[:6]), func(t *testing.T) {
			e.t = t
			script := loginScript + env + fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body) + "NOOP\r\nQUIT\r\n"
			got := e.checkSplits([]byte(script), uint64(i))
			if strings.Contains(got, "queued as") || !strings.Contains(got, "554 5.6.0 SID message contains a") {
				t.Fatalf("not refused:\n%s", got)
			}
		})
	}
	// A clean message pipelined with its envelope is queued the same way
	// whatever the split, and byte for byte the same.
	e.t = t
	clean := loginScript + env + "DATA\r\nFrom: jan@firma.cz\r\nSubject: s\r\n\r\n..dot\r\nline\r\n.\r\n" +
		env + "BDAT 22\r\nFrom: jan@firma.cz\r\n\r\nBDAT 6 LAST\r\nbody\r\nQUIT\r\n"
	got := e.checkSplits([]byte(clean), 99)
	if n := strings.Count(got, "queued as"); n != 2 {
		t.Fatalf("%d messages queued, want 2:\n%s", n, got)
	}
	_, msgs := e.converse([]byte(clean), nil)
	if !strings.HasSuffix(msgs[0], "\r\n\r\n.dot\r\nline\r\n") || !strings.HasSuffix(msgs[1], "From: jan@firma.cz\r\n\r\nbody\r\n") {
		t.Fatalf("stored content: %q", msgs)
	}
}

// FuzzSplit feeds the server one client script whole and split at random
// points and compares what it answered and what it queued.
func FuzzSplit(f *testing.F) {
	env := "MAIL FROM:<jan@firma.cz>\r\nRCPT TO:<eva@example.org>\r\n"
	for _, s := range []string{
		env + "DATA\r\nFrom: jan@firma.cz\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		env + "DATA\r\nFrom: jan@firma.cz\r\n\r\nfirst\r\n.\rMAIL FROM:<x@firma.cz>\r\n.\r\n",
		env + "DATA\r\nFrom: jan@firma.cz\r\n\r\nfirst\r\n.\r\r\n" + env + "DATA\r\nx\r\n.\r\n",
		env + "DATA\r\nFrom: jan@firma.cz\r\n\r\nfirst\r\n.\r.\r\nRSET\r\n.\r\n",
		env + "DATA\r\nFrom: jan@firma.cz\r\n\r\n\x00.\r\n.\r\n",
		env + "DATA\r\nFrom: jan@firma.cz\r\n\r\n\n.\n\r\n.\r\n",
		env + "BDAT 27 LAST\r\nFrom: jan@firma.cz\r\n\r\nbody\r\n",
		env + "BDAT 10\r\nFrom: jan@BDAT 17 LAST\r\nfirma.cz\r\n\r\nx\r\n",
		env + "BDAT 5\r\nab\rcdBDAT 0 LAST\r\nNOOP\r\n",
		env + "BDAT x\r\nNOOP\r\n",
		"STARTTLS\r\nNOOP\r\n",
		"AUTH LOGIN\r\n*\r\nAUTH PLAIN =\r\nAUTH CRAM-MD5\r\nNOOP\r\n",
		env + "DATA\r\nFrom: jan@firma.cz\r\nX: " + strings.Repeat("y", 1100) + "\r\n\r\n.\r\n",
		"RSET\r\nVRFY x\r\nHELP\r\nEXPN x\r\nFOO\r\n\r\nHELO x\r\nQUIT\r\n",
	} {
		f.Add([]byte(s), uint64(len(s)))
	}
	e := newTestEnv(f, withServer(func(s *Server) {
		s.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
		s.Limits.CommandTimeout = 50 * time.Millisecond
		// Fuzzing workers run verbose; their log would flood the pipe.
		s.Log = slog.New(slog.DiscardHandler)
	}))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if len(data) > 4096 {
			return
		}
		e.t = t
		e.checkSplits(append([]byte(loginScript), data...), seed)
	})
}
