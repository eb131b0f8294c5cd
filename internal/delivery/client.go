package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"submitd/internal/address"
)

// client is one SMTP conversation with one remote server (RFC 5321). It is
// small on purpose: delivery needs the exact reply of every command (for
// per-recipient results and DSNs) and STARTTLS after its own EHLO, which
// go-smtp's client does not expose.
type client struct {
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	ext map[string]string // EHLO keywords, upper-case, to their parameters
	tls bool
	// broken is set once the connection failed (timeout, reset, garbage):
	// no QUIT is sent on it.
	broken bool
	// closing is set once the server said 421: it is closing the
	// connection (RFC 5321 §3.8), which must not carry another message.
	closing bool
	// rsetDue is set on a kept session: the next transaction starts with
	// RSET, whose reply shows the connection is alive, within rsetLimit.
	rsetDue bool
	// rsetLimit bounds the wait for that reply.
	rsetLimit time.Duration
	// rsetFailed is set when that RSET got no 2xx reply: nothing of the
	// transaction was committed, so it may go over a new connection.
	rsetFailed bool

	// conn is the connection as dialled. Deadlines are set on it (a
	// tls.Conn passes them on to the connection it wraps) and it never
	// changes, so the cancellation in watch may use it from another
	// goroutine while STARTTLS replaces nc.
	conn net.Conn
	// steps are the per-step limits (RFC 5321 §4.5.3.2).
	steps StepTimeouts
	// end, when set, is the attempt's overall deadline ([delivery]
	// timeout). It bounds every step up to the end of the data transfer,
	// but not the wait for the reply after the final dot nor QUIT: once
	// the whole message is out, only DataTerm decides how long to wait
	// for its fate, because giving up then is what delivers twice.
	end time.Time
	// total is the overall limit that end came from, for errors.
	total time.Duration
	// cur describes the step under way, for its timeout error.
	cur timeoutError
	// blocks is set while message data is written: every write to the
	// connection then renews the write deadline by steps.DataBlock.
	blocks bool

	mu sync.Mutex
	// cancelled is set, under mu, once the attempt's context is done.
	cancelled bool
}

// replyError is a reply other than the one a command needed.
type replyError struct {
	// cmd names the step: "greeting", "EHLO", "MAIL FROM", …
	cmd string
	// reply is the server's reply.
	reply Reply
}

func (e *replyError) Error() string { return fmt.Sprintf("%s: %s", e.cmd, e.reply) }

func newClient(nc net.Conn, steps StepTimeouts) *client {
	c := &client{conn: nc, steps: steps.withDefaults()}
	c.setConn(nc)
	return c
}

func (c *client) setConn(nc net.Conn) {
	c.nc = nc
	c.br = bufio.NewReaderSize(nc, 4096)
	// Message data goes out in blocks of this size: few system calls, and
	// each block renews the data-block limit.
	c.bw = bufio.NewWriterSize(connWriter{c}, 32<<10)
}

// connWriter writes to the client's current connection, renewing the write
// deadline before each write while message data goes out.
type connWriter struct{ c *client }

func (w connWriter) Write(p []byte) (int, error) {
	if w.c.blocks {
		w.c.step("a data block to be written", w.c.steps.DataBlock, true)
	}
	return w.c.nc.Write(p)
}

// watch ends the conversation as soon as ctx is done; the returned function
// stops watching.
func (c *client) watch(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.cancelled = true
		c.conn.SetDeadline(time.Unix(1, 0))
	})
}

// step starts a step that may take up to limit: it sets the connection's
// deadline, capped by the overall one when capped is set, and records what
// is awaited for the error should it run out.
func (c *client) step(what string, limit time.Duration, capped bool) {
	c.cur = timeoutError{step: what, limit: limit}
	dl := time.Now().Add(limit)
	if capped && !c.end.IsZero() && c.end.Before(dl) {
		dl = c.end
		c.cur.overall = true
		c.cur.limit = c.total
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.cancelled {
		// A cancelled attempt keeps its deadline in the past.
		c.conn.SetDeadline(dl)
	}
}

// ioError turns an I/O error of the current step into what the caller
// reports: the step's timeout, an interruption, or err named by name.
func (c *client) ioError(name string, err error) error {
	c.mu.Lock()
	cancelled := c.cancelled
	c.mu.Unlock()
	switch {
	case cancelled:
		return fmt.Errorf("%s: %w: %w", name, errInterrupted, err)
	case isTimeout(err):
		e := c.cur
		e.err = err
		return &e
	}
	return fmt.Errorf("%s: %w", name, err)
}

// cmd sends one command line and reads the reply; the step's limit bounds
// both, capped by the overall deadline. name names the command in errors.
func (c *client) cmd(name, line string, limit time.Duration) (Reply, error) {
	if strings.ContainsAny(line, "\r\n") {
		return Reply{}, fmt.Errorf("command %q contains a line break", clip(line))
	}
	verb, _, _ := strings.Cut(name, " ")
	c.step("the reply to "+verb, limit, true)
	if _, err := c.bw.WriteString(line + "\r\n"); err != nil {
		c.broken = true
		return Reply{}, c.ioError(name, err)
	}
	if err := c.bw.Flush(); err != nil {
		c.broken = true
		return Reply{}, c.ioError(name, err)
	}
	return c.read(name)
}

// open starts a transaction: it sends the RSET a kept session owes and
// then the lines of group, in one write when pipe is set, and reads the
// RSET's reply. The replies to group are left for await; without pipe,
// group is the one line MAIL FROM.
func (c *client) open(group []string, pipe bool) error {
	for _, l := range group {
		if strings.ContainsAny(l, "\r\n") {
			return fmt.Errorf("command %q contains a line break", clip(l))
		}
	}
	rset := c.rsetDue
	c.rsetDue = false
	if rset && !pipe {
		if _, err := c.expect("RSET", "RSET", 2, c.rsetLimit); err != nil {
			c.rsetFailed = true
			return err
		}
		rset = false
	}
	if rset {
		c.step("the reply to RSET", c.rsetLimit, true)
		c.bw.WriteString("RSET\r\n")
	} else {
		c.step("the reply to MAIL", c.steps.Mail, true)
	}
	for _, l := range group {
		c.bw.WriteString(l + "\r\n")
	}
	if err := c.bw.Flush(); err != nil {
		c.broken, c.rsetFailed = true, rset
		return c.ioError(group[0], err)
	}
	if rset {
		r, err := c.read("RSET")
		if err == nil && r.Class() != 2 {
			err = &replyError{cmd: "RSET", reply: r}
		}
		if err != nil {
			// What else was sent is answered, if at all, on a connection
			// that is not used again.
			c.broken, c.rsetFailed = true, true
			return err
		}
	}
	return nil
}

// await reads the reply to a command already sent, within limit.
func (c *client) await(name string, limit time.Duration) (Reply, error) {
	verb, _, _ := strings.Cut(name, " ")
	c.step("the reply to "+verb, limit, true)
	return c.read(name)
}

// read reads one reply, within the deadline of the step under way.
func (c *client) read(name string) (Reply, error) {
	r, err := ReadReply(c.br)
	if err != nil {
		c.broken = true
		return r, c.ioError(name, err)
	}
	if r.Code == 421 {
		c.closing = true
	}
	return r, nil
}

// expect runs cmd and turns a reply of another class than want into a
// *replyError.
func (c *client) expect(name, line string, want int, limit time.Duration) (Reply, error) {
	r, err := c.cmd(name, line, limit)
	if err != nil {
		return r, err
	}
	if r.Class() != want {
		return r, &replyError{cmd: name, reply: r}
	}
	return r, nil
}

// greet reads the server's greeting (RFC 5321 §4.3.1: 220, or 554 for "no
// service here").
func (c *client) greet() error {
	c.step("the greeting", c.steps.Greeting, true)
	r, err := c.read("greeting")
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return &replyError{cmd: "greeting", reply: r}
	}
	return nil
}

// hello sends EHLO and records the extensions; a server that does not know
// EHLO (5xx) gets HELO instead (RFC 5321 §3.2).
func (c *client) hello(name string) error {
	r, err := c.cmd("EHLO", "EHLO "+name, c.steps.Command)
	if err != nil {
		return err
	}
	if r.Class() == 5 && r.Code != 554 {
		c.ext = map[string]string{}
		_, err := c.expect("HELO", "HELO "+name, 2, c.steps.Command)
		return err
	}
	if r.Class() != 2 {
		return &replyError{cmd: "EHLO", reply: r}
	}
	c.ext = map[string]string{}
	for _, l := range r.Lines[1:] {
		kw, param, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(kw)] = param
	}
	return nil
}

func (c *client) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// startTLS upgrades the connection (RFC 3207) and says EHLO again, since
// what the server offered in clear text no longer holds (§4.2).
func (c *client) startTLS(conf *tls.Config, helo string) error {
	if _, err := c.expect("STARTTLS", "STARTTLS", 2, c.steps.Command); err != nil {
		return err
	}
	tc := tls.Client(c.nc, conf)
	c.step("the TLS handshake", c.steps.Command, true)
	if err := tc.Handshake(); err != nil {
		c.broken = true
		return c.ioError("TLS handshake", err)
	}
	c.setConn(tc)
	c.tls = true
	return c.hello(helo)
}

// authPlain authenticates with SASL PLAIN and an initial response
// (RFC 4954, RFC 4616).
func (c *client) authPlain(user, pass string) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	r, err := c.cmd("AUTH", "AUTH PLAIN "+ir, c.steps.Command)
	if err != nil {
		return err
	}
	if r.Code == 334 {
		// A server that ignores initial responses asks with an empty
		// challenge; answer it.
		r, err = c.cmd("AUTH", ir, c.steps.Command)
		if err != nil {
			return err
		}
	}
	if r.Class() != 2 {
		return &replyError{cmd: "AUTH", reply: r}
	}
	return nil
}

// quit ends the session politely; errors do not matter any more.
func (c *client) quit() {
	if !c.broken {
		// QUIT comes after the transaction, so the overall limit, which
		// ends with the data transfer, does not bound it.
		c.end = time.Time{}
		c.cmd("QUIT", "QUIT", c.steps.Command)
	}
	c.nc.Close()
}

// hostError is a failure that says nothing about the recipients: the next
// host may do better.
type hostError struct{ err error }

func (e *hostError) Error() string { return e.err.Error() }
func (e *hostError) Unwrap() error { return e.err }

// send delivers m over the session (RFC 5321 §3.3): MAIL FROM, one RCPT TO
// per recipient, and DATA when at least one was accepted. Recipients refused
// with "too many recipients" go in a further transaction on the same
// connection (RFC 5321 §4.5.3.1.10), until every recipient has its answer or
// a transaction gets none of them further. It returns one Result per
// recipient, or a *hostError when the first transaction failed before any
// recipient got an answer that holds (a 4xx to MAIL FROM, a broken
// connection before the end of DATA), so the caller can try another host.
func (c *client) send(m *Message, host string) ([]Result, error) {
	results := make([]Result, len(m.Rcpts))
	pending := make([]int, len(m.Rcpts))
	for i := range pending {
		pending[i] = i
	}
	for first := true; ; first = false {
		more, err := c.transaction(m, host, pending, results)
		var he *hostError
		if err != nil && !first && errors.As(err, &he) {
			// Earlier transactions gave answers that hold (some
			// recipients have the message): only the recipients of this
			// one are left for later.
			for _, i := range pending {
				results[i] = Result{Rcpt: m.Rcpts[i], Status: Temporary, Reply: errorReply(err), Host: host}
			}
			return results, nil
		}
		if err != nil {
			if he != nil {
				return nil, err
			}
			return results, err
		}
		if len(more) == 0 || len(more) == len(pending) {
			// Done, or no progress: the rest keep their 452 and are
			// deferred.
			return results, nil
		}
		pending = more
	}
}

// xtext encodes s as RFC 3461 §4 xtext: "+", "=" and bytes outside
// printable US-ASCII become "+XX".
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// tooMany reports whether r, a reply to RCPT TO, says the transaction has
// all the recipients the server takes (RFC 5321 §4.5.3.1.10: 452, with the
// RFC 3463 code 4.5.3 or, from servers without enhanced codes, the words).
// A 452 for another reason (4.2.2 mailbox full) is not one.
func tooMany(r Reply) bool {
	if r.Code != 452 || len(r.Lines) == 0 {
		return false
	}
	text := r.Lines[0]
	if strings.HasPrefix(text, "4.5.3") {
		return true
	}
	if len(text) > 0 && text[0] >= '0' && text[0] <= '9' {
		return false // some other enhanced code
	}
	return strings.Contains(strings.ToLower(text), "too many recipients")
}

// transaction runs one mail transaction for the recipients of m at the
// indexes idx and writes their results. It returns the indexes of those the
// server refused with "too many recipients" (their results say Temporary
// with that reply), or a *hostError as send describes it.
func (c *client) transaction(m *Message, host string, idx []int, results []Result) (more []int, err error) {
	all := func(st Status, reply string) {
		for _, i := range idx {
			results[i] = Result{Rcpt: m.Rcpts[i], Status: st, Reply: reply, Host: host}
		}
	}
	body, err := m.open()
	if err != nil {
		// A local fault: retrying later is all that can be done.
		all(Temporary, "cannot read the queued message")
		return nil, fmt.Errorf("open message: %w", err)
	}
	defer body.Close()

	from := wireAddr(m.From)
	rcpts := make([]string, len(m.Rcpts))
	utf8 := !isASCII(from)
	for _, i := range idx {
		rcpts[i] = wireAddr(m.Rcpts[i])
		utf8 = utf8 || !isASCII(rcpts[i])
	}
	mail := "MAIL FROM:<" + from + ">"
	if c.has("SIZE") && m.Size > 0 {
		// RFC 1870 §6: lets the server refuse a message too big at once.
		mail += " SIZE=" + strconv.FormatInt(m.Size, 10)
	}
	if c.has("8BITMIME") || (c.has("SMTPUTF8") && !utf8) {
		eightBit, utf8Header, err := m.scan8Bit()
		if err != nil {
			all(Temporary, "cannot read the queued message")
			return nil, fmt.Errorf("read message: %w", err)
		}
		if eightBit && c.has("8BITMIME") {
			// RFC 6152 §3: 8-bit content is announced. To a server
			// without 8BITMIME it goes as it is, as from most MTAs.
			mail += " BODY=8BITMIME"
		}
		// RFC 6531 §3.4: UTF-8 in the header section asks for SMTPUTF8
		// where it is offered; elsewhere the message goes as it is.
		utf8 = utf8 || utf8Header && c.has("SMTPUTF8")
	}
	if utf8 {
		if !c.has("SMTPUTF8") {
			// RFC 6531 §3.2: such a message cannot go to this server.
			all(Permanent, "the remote server does not offer SMTPUTF8, which a UTF-8 local part needs (RFC 6531)")
			return nil, nil
		}
		mail += " SMTPUTF8"
	}
	if m.RequireTLS {
		// RFC 8689 §4.2.1: the next hop must take on the requirement;
		// another MX host may.
		if !c.has("REQUIRETLS") {
			return nil, &hostError{errRequireTLSUnsupported}
		}
		if !c.tls {
			// A smarthost reached without TLS (smarthost_tls = "none")
			// never gets such a message; a required and verified
			// STARTTLS or implicit TLS is the smarthost's validation.
			return nil, &hostError{errRequireTLSNoPolicy}
		}
		mail += " REQUIRETLS"
	}
	dsn := c.has("DSN")
	if dsn {
		// RFC 3461 §4.3, §4.4: passed on as they came.
		if m.Ret != "" {
			mail += " RET=" + m.Ret
		}
		if m.EnvID != "" {
			mail += " ENVID=" + xtext(m.EnvID)
		}
	}
	rcptLine := func(i int) string {
		l := "RCPT TO:<" + rcpts[i] + ">"
		if p, ok := m.RcptDSN[m.Rcpts[i]]; ok && dsn {
			// RFC 3461 §4.1, §4.2.
			if len(p.Notify) > 0 {
				l += " NOTIFY=" + strings.Join(p.Notify, ",")
			}
			if typ, addr, ok := strings.Cut(p.ORcpt, ";"); ok {
				l += " ORCPT=" + typ + ";" + xtext(addr)
			}
		}
		return l
	}
	// RFC 2920: to a server that offers PIPELINING, the RSET of a kept
	// session, MAIL FROM and every RCPT TO go in one write, and the
	// replies are read in order; otherwise each waits for its reply.
	pipe := c.has("PIPELINING")
	group := []string{mail}
	if pipe {
		for _, i := range idx {
			group = append(group, rcptLine(i))
		}
	}
	if err := c.open(group, pipe); err != nil {
		return nil, &hostError{err}
	}
	r, err := c.await("MAIL FROM", c.steps.Mail)
	if err == nil && r.Class() != 2 && pipe {
		// The RCPT TOs sent with it are answered too (503); their
		// replies are read so the conversation stays in step.
		for range idx {
			if _, err = c.await("RCPT TO", c.steps.Rcpt); err != nil {
				break
			}
		}
	}
	if err != nil {
		return nil, &hostError{err}
	}
	switch r.Class() {
	case 2:
	case 5:
		// RFC 5321 §4.2.1: the sender or the message is refused for good,
		// at every host of the domain.
		all(Permanent, r.String())
		return nil, nil
	default:
		return nil, &hostError{&replyError{cmd: "MAIL FROM", reply: r}}
	}

	var accepted []int
	for n, i := range idx {
		var r Reply
		var err error
		if pipe {
			r, err = c.await("RCPT TO", c.steps.Rcpt)
		} else {
			r, err = c.cmd("RCPT TO", rcptLine(i), c.steps.Rcpt)
		}
		if err != nil {
			return nil, &hostError{err}
		}
		results[i] = Result{Rcpt: m.Rcpts[i], Reply: r.String(), Host: host}
		switch {
		case r.Class() == 2:
			accepted = append(accepted, i)
		case r.Class() == 5:
			results[i].Status = Permanent
		case tooMany(r) && pipe:
			// RFC 5321 §4.5.3.1.10: this one waits for the next
			// transaction. Each pipelined recipient goes by its own
			// reply: one the server accepted after all gets the data
			// of this transaction and must not get it again.
			results[i].Status = Temporary
			more = append(more, i)
		case tooMany(r):
			// RFC 5321 §4.5.3.1.10: this transaction is full; the rest
			// would get the same answer, so they wait for the next one.
			for _, j := range idx[n:] {
				results[j] = Result{Rcpt: m.Rcpts[j], Status: Temporary, Reply: r.String(), Host: host}
			}
			more = idx[n:]
		default:
			results[i].Status = Temporary
		}
		if more != nil && !pipe {
			break
		}
	}
	setAccepted := func(st Status, reply string) {
		for _, i := range accepted {
			results[i].Status, results[i].Reply = st, reply
		}
	}
	if len(accepted) == 0 {
		// Every recipient refused: no DATA (RFC 5321 §3.3 would answer 554).
		if _, err := c.cmd("RSET", "RSET", c.steps.Command); err != nil {
			return nil, nil
		}
		return more, nil
	}

	r, err = c.cmd("DATA", "DATA", c.steps.DataInit)
	if err != nil {
		return nil, &hostError{err}
	}
	if r.Code != 354 {
		setAccepted(statusOf(r), r.String())
		return nil, nil
	}
	// RFC 5321 §4.5.3.2.5: each block written has its own limit, so a
	// large message to a slow server goes on as long as it moves.
	c.blocks = true
	dw := &dotWriter{w: c.bw}
	src := &errReader{r: body}
	if m.Data != nil {
		_, err = dw.Write(m.Data)
	} else {
		_, err = io.Copy(dw, src)
	}
	if err == nil {
		err = dw.Close()
	}
	c.blocks = false
	if err != nil {
		c.broken = true
		if src.err == nil {
			return nil, &hostError{c.ioError("sending message", err)}
		}
		// The spool could not be read: the data on the wire is cut short,
		// so the connection must be dropped without ending DATA.
		c.nc.Close()
		all(Temporary, "cannot read the queued message")
		return nil, fmt.Errorf("read message: %w", src.err)
	}
	// RFC 5321 §4.5.3.2.6: the reply to the final dot gets its own limit,
	// whatever is left of the overall one.
	c.step("the reply to the end of DATA", c.steps.DataTerm, false)
	r, err = c.read("end of DATA")
	if err != nil {
		// The whole message went out but its fate is unknown: retry later
		// rather than at the next host now (RFC 5321 §6.1 prefers a
		// duplicate to a loss, but one is enough).
		setAccepted(Temporary, "no reply after the end of DATA: "+err.Error())
		return nil, nil
	}
	if r.Class() != 2 {
		// The server refused the message itself: the recipients left
		// would only get it refused again.
		setAccepted(statusOf(r), r.String())
		return nil, nil
	}
	setAccepted(Delivered, r.String())
	if !dsn {
		for _, i := range accepted {
			results[i].Relayed = slices.Contains(m.RcptDSN[m.Rcpts[i]].Notify, "SUCCESS")
		}
	}
	return more, nil
}

// statusOf maps a failure reply to a status: 5xx permanent, else temporary.
func statusOf(r Reply) Status {
	if r.Class() == 5 {
		return Permanent
	}
	return Temporary
}

// wireAddr returns addr as it goes into MAIL FROM or RCPT TO: a non-ASCII
// domain in its A-label form, which names the same domain (RFC 5890 §2.3.2.1)
// and which every server understands, so that only a UTF-8 local part needs
// SMTPUTF8 (RFC 6531 §3.2). An address that does not parse is left alone.
func wireAddr(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || isASCII(addr[at+1:]) {
		return addr
	}
	d, err := address.Domain(addr[at+1:])
	if err != nil {
		return addr
	}
	return addr[:at+1] + d
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// errReader remembers the error of the reader it wraps, to tell a failing
// spool file from a failing connection.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}
