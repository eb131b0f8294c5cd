package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"submitd/internal/delivery"
)

// replyKey names a reply for the error table: the code and, when the first
// line starts with one, the RFC 3463 enhanced status code ("535 5.7.8").
func replyKey(r delivery.Reply) string {
	k := strconv.Itoa(r.Code)
	if len(r.Lines) > 0 {
		first, _, _ := strings.Cut(r.Lines[0], " ")
		if isEnhancedCode(first) {
			k += " " + first
		}
	}
	return k
}

// isEnhancedCode reports whether s has the form class.subject.detail of
// RFC 3463 §2, with class 2, 4 or 5.
func isEnhancedCode(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.ContainsAny(parts[0], "245") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	return true
}

// replyError is an unexpected reply to a command; the statistics count it
// by its reply key.
type replyError struct {
	// step names the command that got the reply ("AUTH", "DATA end").
	step string
	// rep is the reply.
	rep delivery.Reply
}

func (e *replyError) Error() string { return e.step + ": " + e.rep.String() }

// dialConfig is what a client connection needs to reach the server.
type dialConfig struct {
	// addr is the server's host:port.
	addr string
	// security is "starttls", "implicit" or "none".
	security string
	// timeout bounds dialing and every read and write.
	timeout time.Duration
	// pipelining sends MAIL, RCPT and DATA together when the server offers
	// PIPELINING (RFC 2920).
	pipelining bool
	// heloName is the EHLO argument.
	heloName string
	// abortiveClose resets connections (SO_LINGER 0) instead of closing
	// them, which leaves no socket in TIME_WAIT.
	abortiveClose bool
}

// client is one SMTP connection to the server under test.
type client struct {
	// nc is the connection, a *tls.Conn once TLS is up.
	nc net.Conn
	// raw is the TCP connection below any TLS.
	raw net.Conn
	// r buffers reads from nc.
	r *bufio.Reader
	// w buffers writes to nc; every command sequence ends with a Flush.
	w *bufio.Writer
	// caps holds the EHLO keywords (upper case) with their parameters.
	caps map[string]string
	// cfg is how the connection was made.
	cfg *dialConfig
}

// tlsConfig accepts any certificate: the servers under test use
// self-signed ones, and verifying would only add work the server does not
// see. It keeps no session cache, so every connection pays for a full
// handshake, as a mail client starting afresh does.
func tlsConfig() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
}

// connect dials from src (nil: the system's choice), reads the greeting and,
// when wanted, says EHLO and sets up TLS. With ehlo false it returns right
// after the greeting, which is how refusals of a blocked IP are counted.
func connect(ctx context.Context, cfg *dialConfig, src net.IP, ehlo bool) (*client, error) {
	d := net.Dialer{Timeout: cfg.timeout}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	nc, err := d.DialContext(ctx, "tcp", cfg.addr)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, raw: nc, cfg: cfg}
	if cfg.security == "implicit" {
		tc := tls.Client(nc, tlsConfig())
		tc.SetDeadline(time.Now().Add(cfg.timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		c.nc = tc
	}
	c.r = bufio.NewReaderSize(c.nc, 4096)
	c.w = bufio.NewWriterSize(c.nc, 32<<10)
	greet, err := c.read()
	if err != nil {
		c.close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if greet.Code != 220 {
		c.close()
		return nil, &replyError{"greeting", greet}
	}
	if !ehlo {
		return c, nil
	}
	if err := c.ehlo(); err != nil {
		c.close()
		return nil, err
	}
	if cfg.security == "starttls" {
		if _, ok := c.caps["STARTTLS"]; !ok {
			c.close()
			return nil, errors.New("server does not offer STARTTLS")
		}
		if err := c.cmd("STARTTLS", 220); err != nil {
			c.close()
			return nil, err
		}
		tc := tls.Client(c.nc, tlsConfig())
		tc.SetDeadline(time.Now().Add(cfg.timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		c.nc = tc
		c.r.Reset(tc)
		c.w.Reset(tc)
		if err := c.ehlo(); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// read reads one reply within the timeout.
func (c *client) read() (delivery.Reply, error) {
	c.nc.SetReadDeadline(time.Now().Add(c.cfg.timeout))
	return delivery.ReadReply(c.r)
}

// flush writes out what is buffered within the timeout.
func (c *client) flush() error {
	c.nc.SetWriteDeadline(time.Now().Add(c.cfg.timeout))
	return c.w.Flush()
}

// cmd sends one command and wants the reply code want.
func (c *client) cmd(line string, want int) error {
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.flush(); err != nil {
		return err
	}
	rep, err := c.read()
	if err != nil {
		return err
	}
	return expect(verb(line), rep, want)
}

// verb is the command word of line, the step name in errors. An AUTH
// command is named without its argument, which holds the password.
func verb(line string) string {
	v, _, _ := strings.Cut(line, " ")
	return strings.ToUpper(v)
}

// expect turns a reply other than want into a *replyError.
func expect(step string, rep delivery.Reply, want int) error {
	if rep.Code != want {
		return &replyError{step, rep}
	}
	return nil
}

// ehlo says EHLO and records the server's extensions.
func (c *client) ehlo() error {
	c.w.WriteString("EHLO " + c.cfg.heloName + "\r\n")
	if err := c.flush(); err != nil {
		return err
	}
	rep, err := c.read()
	if err != nil {
		return err
	}
	if err := expect("EHLO", rep, 250); err != nil {
		return err
	}
	c.caps = parseEHLO(rep)
	return nil
}

// parseEHLO maps each extension keyword of an EHLO reply (RFC 5321
// §4.1.1.1: the first line is the greeting, each further line one keyword
// with optional parameters) to its parameters.
func parseEHLO(rep delivery.Reply) map[string]string {
	caps := make(map[string]string, len(rep.Lines))
	for _, l := range rep.Lines[1:] {
		kw, params, _ := strings.Cut(l, " ")
		caps[strings.ToUpper(kw)] = params
	}
	return caps
}

// authPlain logs in with AUTH PLAIN and an initial response (RFC 4954 §4,
// RFC 4616) and returns the reply, which the caller judges: a wrong
// password is the point of some workloads.
func (c *client) authPlain(user, pass string) (delivery.Reply, error) {
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	c.w.WriteString("AUTH PLAIN " + resp + "\r\n")
	if err := c.flush(); err != nil {
		return delivery.Reply{}, err
	}
	return c.read()
}

// send runs one mail transaction. body is the message, dot-stuffed and
// ending in CRLF.CRLF. After a failed transaction it sends RSET so the
// connection can go on.
func (c *client) send(from, to string, body []byte) error {
	mail := "MAIL FROM:<" + from + ">"
	if _, ok := c.caps["SIZE"]; ok {
		mail += " SIZE=" + strconv.Itoa(len(body))
	}
	rcpt := "RCPT TO:<" + to + ">"
	var err error
	if _, ok := c.caps["PIPELINING"]; ok && c.cfg.pipelining {
		err = c.sendPipelined(mail, rcpt, body)
	} else {
		err = c.sendStepwise(mail, rcpt, body)
	}
	var re *replyError
	if errors.As(err, &re) {
		// The connection is in a known state; RSET lets the next
		// transaction start clean. A failing RSET ends the connection.
		if rerr := c.cmd("RSET", 250); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

// sendStepwise waits for each reply before the next command.
func (c *client) sendStepwise(mail, rcpt string, body []byte) error {
	if err := c.cmd(mail, 250); err != nil {
		return err
	}
	if err := c.cmd(rcpt, 250); err != nil {
		return err
	}
	if err := c.cmd("DATA", 354); err != nil {
		return err
	}
	return c.data(body)
}

// sendPipelined sends MAIL, RCPT and DATA in one write and then reads their
// three replies (RFC 2920 §3.1: DATA may end a group). If DATA got 354
// although MAIL or RCPT failed, an empty message is sent to get back to the
// command state, and the earlier failure is reported.
func (c *client) sendPipelined(mail, rcpt string, body []byte) error {
	c.w.WriteString(mail + "\r\n" + rcpt + "\r\nDATA\r\n")
	if err := c.flush(); err != nil {
		return err
	}
	var first error
	for _, s := range []struct {
		step string
		want int
	}{{"MAIL", 250}, {"RCPT", 250}, {"DATA", 354}} {
		rep, err := c.read()
		if err != nil {
			return err
		}
		if s.want == 354 && rep.Code == 354 && first != nil {
			c.w.WriteString(".\r\n")
			if err := c.flush(); err != nil {
				return err
			}
			if _, err := c.read(); err != nil {
				return err
			}
			return first
		}
		if err := expect(s.step, rep, s.want); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	return c.data(body)
}

// data sends the message after a 354 and wants 250.
func (c *client) data(body []byte) error {
	c.w.Write(body)
	if err := c.flush(); err != nil {
		return err
	}
	rep, err := c.read()
	if err != nil {
		return err
	}
	return expect("DATA end", rep, 250)
}

// quit says QUIT without waiting long for the answer and closes.
func (c *client) quit() {
	c.w.WriteString("QUIT\r\n")
	if c.flush() == nil {
		c.nc.SetReadDeadline(time.Now().Add(time.Second))
		delivery.ReadReply(c.r)
	}
	c.close()
}

// close closes the connection.
func (c *client) close() {
	if tc, ok := c.raw.(*net.TCPConn); ok && c.cfg.abortiveClose {
		tc.SetLinger(0)
	}
	c.nc.Close()
}

// buildMessage makes a message of size bytes (at least the headers' size)
// from the given sender: a few headers and lines of 76 letters, ending in
// CRLF and then the terminating ".\r\n". No line starts with a dot, so no
// dot-stuffing is needed.
func buildMessage(from, to string, size int) []byte {
	b := make([]byte, 0, size+3)
	b = fmt.Appendf(b, "From: <%s>\r\nTo: <%s>\r\nSubject: load test\r\nDate: %s\r\n\r\n",
		from, to, time.Now().UTC().Format(time.RFC1123Z))
	const line = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx\r\n"
	for len(b)+len(line) <= size {
		b = append(b, line...)
	}
	switch rest := size - len(b); {
	case rest >= 2:
		b = append(b, line[:rest-2]...)
		b = append(b, "\r\n"...)
	case rest == 1 && len(b) >= len(line):
		// One byte short of a full line: the last line grows by one.
		b = append(b[:len(b)-2], "x\r\n"...)
	}
	return append(b, ".\r\n"...)
}
