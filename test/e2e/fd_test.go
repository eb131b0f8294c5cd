package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// fdLimit is the RLIMIT_NOFILE the server runs under: far fewer descriptors
// than the flood below opens, so the process runs out of them.
const fdLimit = 128

// TestFDExhaustion runs the server under a low RLIMIT_NOFILE and opens 200
// connections from 20 loopback addresses, 10 each, inside the per-IP limit.
// Running out of descriptors must not stop the server: a session that was
// open goes on (its message is refused with a 451 while no file can be
// created, SPEC R15), and once the flood is released new clients are served
// by the same process on every listener.
func TestFDExhaustion(t *testing.T) {
	s := newServer(t, "[listener.submission]\nallow_plaintext_auth = true\n")
	s.setupFirma()
	// The shell's ulimit sets the soft and the hard limit, so the process
	// cannot raise it again.
	s.startWith("sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fdLimit), s.bin, "serve", "-config", s.config)
	if !strings.Contains(s.log.String(), "RLIMIT_NOFILE") {
		t.Errorf("no warning that max_connections does not fit RLIMIT_NOFILE %d:\n%s", fdLimit, s.log)
	}

	early := openRaw(t, s.sub, nil, false)
	early.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")

	var flood []net.Conn
	release := func() {
		for _, c := range flood {
			c.Close()
		}
		flood = nil
	}
	defer release()
	for i := range 200 {
		d := net.Dialer{Timeout: 10 * time.Second,
			LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%20))}}
		c, err := d.Dial("tcp", s.sub)
		if err != nil {
			select {
			case <-s.exited:
				t.Fatalf("submitd exited during the flood: %v\n%s", s.err, s.log)
			case <-time.After(time.Second):
			}
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	waitLog(t, s, "too many open files")

	// No descriptor is free for a spool file, so the message is refused
	// with the reply table's temporary failure, never half-accepted.
	msg := "From: jan@firma.cz\r\nTo: petr@example.com\r\nSubject: fd\r\n\r\nbody\r\n"
	if r := early.send("jan@firma.cz", "petr@example.com", msg); !strings.HasPrefix(r, "451 ") {
		t.Errorf("DATA while out of descriptors: %q, want 451", r)
	}

	// Held for a few seconds, the errors are logged about once a second
	// with a count, not once per failed accept.
	time.Sleep(3 * time.Second)
	var lines, counted int
	for _, l := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(l, "accept failed") {
			lines++
			if !strings.Contains(l, " errors=1 ") {
				counted++
			}
		}
	}
	if lines == 0 || lines > 5 || counted == 0 {
		t.Errorf("%d accept error lines, %d counting more than one error; want 1 to 5 and some counting", lines, counted)
	}

	release()
	c := waitServed(t, s, s.sub)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	if r := c.send("jan@firma.cz", "petr@example.com", msg); !strings.HasPrefix(r, "250 ") {
		t.Errorf("new client after the flood: %q, want 250", r)
	}
	c.expect("QUIT", "221 ")
	// The session that lived through the flood can send now.
	early.expect("RSET", "250 ")
	if r := early.send("jan@firma.cz", "petr@example.com", msg); !strings.HasPrefix(r, "250 ") {
		t.Errorf("open session after the flood: %q, want 250", r)
	}
	early.expect("QUIT", "221 ")
	waitServed(t, s, s.smtp).expect("QUIT", "221 ")
	sc := openRaw(t, s.subs, nil, true)
	sc.expect("QUIT", "221 ")

	log := s.log.String()
	if strings.Contains(log, "listener failed") {
		t.Errorf("a listener gave up:\n%s", log)
	}
	if !strings.Contains(log, "accepting again") {
		t.Errorf("no log line saying the listeners recovered:\n%s", log)
	}
	s.interrupt()
}

// waitLog waits until the server's log contains text; the server must keep
// running meanwhile.
func waitLog(t *testing.T, s *server, text string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.log.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within 30s:\n%s", text, s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitServed connects to addr until the server greets and answers EHLO,
// for up to 30 seconds, failing at once if the process has exited.
func waitServed(t *testing.T, s *server, addr string) *rawConn {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			t.Fatalf("submitd exited: %v\n%s", s.err, s.log)
		default:
		}
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			_, err = nc.Read(buf)
			nc.Close()
			if err == nil && string(buf) == "220 " {
				return openRaw(t, addr, nil, false)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not served within 30s after the flood: %v\n%s", addr, err, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
