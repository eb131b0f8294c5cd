package delivery

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// slowServer is an SMTP server speaking raw protocol lines that waits
// delay[step] before each reply and never replies at the step named by
// stall. Steps: "greeting", "EHLO", "MAIL", "RCPT", "DATA", "data" (reading
// the message), "end" (the reply after the final dot).
type slowServer struct {
	ln net.Listener
	// delay is the wait before each step's reply.
	delay map[string]time.Duration
	// stall is the step at which the server goes silent.
	stall string
	// readPace, when set, is the pause between reads of 4 KiB of message
	// data, so that a large message trickles in.
	readPace time.Duration
	// maxRcpts, when set, answers 452 4.5.3 past that many recipients in
	// a transaction.
	maxRcpts int
	// dropAtMail, when set, closes the connection at that MAIL FROM
	// (1: the first).
	dropAtMail int
	// pipelining offers PIPELINING (RFC 2920) and holds the replies to
	// RSET and MAIL until the RCPT TO after them has arrived: a client
	// that waits for each reply stalls.
	pipelining bool
	// conns counts connections accepted.
	conns atomic.Int32
	// delivered counts messages answered with 250 at the end of DATA.
	delivered atomic.Int32
	done      chan struct{}
}

// newSlowServer listens on 127.0.0.2 with a small receive buffer, so that a
// client writing a large message feels how fast the server reads.
func newSlowServer(t *testing.T, delay map[string]time.Duration, stall string) *slowServer {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowServer{ln: ln, delay: delay, stall: stall, done: make(chan struct{})}
	t.Cleanup(func() {
		close(s.done)
		ln.Close()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go s.serve(c)
		}
	}()
	return s
}

// reply waits for step's delay, or forever when the server stalls there,
// then writes line.
func (s *slowServer) reply(c net.Conn, step, line string) bool {
	if step == s.stall {
		<-s.done
		return false
	}
	select {
	case <-time.After(s.delay[step]):
	case <-s.done:
		return false
	}
	_, err := io.WriteString(c, line+"\r\n")
	return err == nil
}

func (s *slowServer) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4096)
	mails, rcpts := 0, 0
	var held []string // replies held back for a pipelined group
	if !s.reply(c, "greeting", "220 slow.test ESMTP") {
		return
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " ")
		ok := true
		switch verb {
		case "EHLO":
			if s.pipelining {
				ok = s.reply(c, "EHLO", "250-slow.test\r\n250 PIPELINING")
				break
			}
			ok = s.reply(c, "EHLO", "250 slow.test")
		case "RSET":
			if s.pipelining {
				held = append(held, "250 2.0.0 ok")
				break
			}
			ok = s.reply(c, "other", "250 2.0.0 ok")
		case "MAIL":
			if mails++; mails == s.dropAtMail {
				return
			}
			rcpts = 0
			if s.pipelining {
				held = append(held, "250 2.1.0 ok")
				break
			}
			ok = s.reply(c, "MAIL", "250 2.1.0 ok")
		case "RCPT":
			for _, h := range held {
				if ok = s.reply(c, "other", h); !ok {
					return
				}
			}
			held = nil
			if rcpts++; s.maxRcpts > 0 && rcpts > s.maxRcpts {
				ok = s.reply(c, "RCPT", "452 4.5.3 too many recipients")
				break
			}
			ok = s.reply(c, "RCPT", "250 2.1.5 ok")
		case "DATA":
			if ok = s.reply(c, "DATA", "354 go ahead"); !ok {
				break
			}
			if s.stall == "data" {
				<-s.done
				return
			}
			if !s.readData(br) {
				return
			}
			// Counted before the reply goes out, so a client that
			// has its 250 finds the message counted.
			s.delivered.Add(1)
			if ok = s.reply(c, "end", "250 2.0.0 queued"); !ok {
				s.delivered.Add(-1)
			}
		case "QUIT":
			s.reply(c, "QUIT", "221 bye")
			return
		default:
			ok = s.reply(c, "other", "250 ok")
		}
		if !ok {
			return
		}
	}
}

// readData reads message lines up to the final dot, at readPace.
func (s *slowServer) readData(br *bufio.Reader) bool {
	read := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if line == ".\r\n" {
			return true
		}
		read += len(line)
		if s.readPace > 0 && read >= 4096 {
			read = 0
			select {
			case <-time.After(s.readPace):
			case <-s.done:
				return false
			}
		}
	}
}

// mxTo returns an MX sender that delivers example.test to s, with small
// step limits and the overall limit given.
func mxTo(t *testing.T, s *slowServer, overall time.Duration, steps StepTimeouts) *MX {
	w := newWorld(t, nil)
	w.port = s.ln.Addr().(*net.TCPAddr).Port
	w.dns.AddA("example.test", "127.0.0.2")
	return w.mx(func(c *MXConfig) {
		c.Timeout = overall
		c.Steps = steps
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				// A small send buffer makes the client wait on the server
				// while writing a large message.
				nc.(*net.TCPConn).SetWriteBuffer(4096)
			}
			return nc, err
		}
	})
}

// short is a limit for every step far above the test servers' delays.
func short(d time.Duration) StepTimeouts {
	return StepTimeouts{Greeting: d, Mail: d, Rcpt: d, DataInit: d, DataBlock: d, DataTerm: d, Command: d}
}

// bigMsg is a message of about size bytes.
func bigMsg(size int) *Message {
	var b strings.Builder
	b.WriteString("From: a@sender.test\r\nSubject: big\r\n\r\n")
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	content := b.String()
	m := msg("example.test", "x@example.test")
	m.Size = int64(len(content))
	m.Open = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(content)), nil }
	return m
}

// RFC 5321 §4.5.3.2: a server slow at every step, but within each step's
// limit, gets the message even though the session lasts longer than the
// overall limit: that limit ends with the data transfer, and the slow reply
// after the final dot is governed by its own 10-minute-style limit.
func TestSlowServerWithinStepLimitsDelivers(t *testing.T) {
	d := 60 * time.Millisecond
	s := newSlowServer(t, map[string]time.Duration{
		"greeting": d, "EHLO": d, "MAIL": d, "RCPT": d, "DATA": d, "end": 1500 * time.Millisecond,
	}, "")
	// Overall 1s: the five replies before the data take 300ms; the final
	// reply alone takes longer than the whole overall limit.
	x := mxTo(t, s, time.Second, short(3*time.Second))
	start := time.Now()
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250 2.0.0 queued")
	if el := time.Since(start); el < time.Second {
		t.Fatalf("the session took %v, less than the overall limit; the test proves nothing", el)
	}
	if n := s.delivered.Load(); n != 1 {
		t.Errorf("server answered %d messages, want 1", n)
	}
}

// RFC 5321 §4.5.3.2.5: the limit on writing data is per block, so a large
// message that trickles into a slow reader keeps going for longer than one
// block's limit.
func TestSlowDataTransferKeepsGoing(t *testing.T) {
	s := newSlowServer(t, nil, "")
	s.readPace = 10 * time.Millisecond
	steps := short(5 * time.Second)
	steps.DataBlock = 400 * time.Millisecond
	x := mxTo(t, s, 30*time.Second, steps)
	start := time.Now()
	check(t, x.Deliver(context.Background(), bigMsg(512<<10)), "x@example.test", Delivered, "250 2.0.0 queued")
	if el := time.Since(start); el < steps.DataBlock {
		t.Fatalf("the transfer took %v, less than one block's limit; the test proves nothing", el)
	}
}

// A server that goes silent at a step is given up on after that step's
// limit, with a temporary failure that names the step.
func TestStallAtStepTimesOut(t *testing.T) {
	cases := []struct {
		stall, want string
		big         bool
	}{
		{"greeting", "timeout waiting for the greeting (limit 200ms)", false},
		{"EHLO", "timeout waiting for the reply to EHLO (limit 200ms)", false},
		{"MAIL", "timeout waiting for the reply to MAIL (limit 200ms)", false},
		{"RCPT", "timeout waiting for the reply to RCPT (limit 200ms)", false},
		{"DATA", "timeout waiting for the reply to DATA (limit 200ms)", false},
		{"data", "timeout waiting for a data block to be written (limit 200ms)", true},
		{"end", "no reply after the end of DATA: timeout waiting for the reply to the end of DATA (limit 200ms)", false},
	}
	for _, c := range cases {
		t.Run(c.stall, func(t *testing.T) {
			s := newSlowServer(t, nil, c.stall)
			x := mxTo(t, s, 30*time.Second, short(200*time.Millisecond))
			m := msg("example.test", "x@example.test")
			if c.big {
				// Larger than what the socket buffers hold.
				m = bigMsg(4 << 20)
			}
			check(t, x.Deliver(context.Background(), m), "x@example.test", Temporary, c.want)
		})
	}
}

// The overall limit still bounds everything up to the end of the data
// transfer, and says so.
func TestOverallLimitBeforeData(t *testing.T) {
	d := 150 * time.Millisecond
	s := newSlowServer(t, map[string]time.Duration{"greeting": d, "EHLO": d, "MAIL": d, "RCPT": d}, "")
	x := mxTo(t, s, 400*time.Millisecond, short(5*time.Second))
	res := x.Deliver(context.Background(), msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Temporary, "timeout waiting for the reply to")
	if !strings.Contains(res[0].Reply, "the attempt's overall limit of 400ms was reached") {
		t.Errorf("reply %q does not name the overall limit", res[0].Reply)
	}
	if n := s.delivered.Load(); n != 0 {
		t.Errorf("server answered %d messages, want 0", n)
	}
}

// RFC 2920: to a server that offers PIPELINING, RSET (on a kept session),
// MAIL FROM and RCPT TO go in one write. This server answers RSET and MAIL
// only once the RCPT TO has arrived, so a sender waiting for each reply
// would time out.
func TestPipelinedTransactions(t *testing.T) {
	s := newSlowServer(t, nil, "")
	s.pipelining = true
	x := mxTo(t, s, 30*time.Second, short(2*time.Second))
	for i := 0; i < 3; i++ {
		check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250 2.0.0 queued")
	}
	if n := s.delivered.Load(); n != 3 {
		t.Errorf("server answered %d messages, want 3", n)
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1: the kept session's RSET went with MAIL", n)
	}
}
