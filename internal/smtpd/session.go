package smtpd

import (
	"bufio"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/address"
	"submitd/internal/auth"
	"submitd/internal/directory"
	"submitd/internal/loginwatch"
	"submitd/internal/message"
	"submitd/internal/policy"
	"submitd/internal/sessionlog"
	"submitd/internal/spool"
)

// Protocol limits that are not configuration.
const (
	// readBufferSize is the connection's read buffer, and the longest
	// command line read whole: an AUTH PLAIN line with the longest login
	// and password parseLogin accepts fits (RFC 4954 §4 allows 12 288
	// octets; no real client needs more than this).
	readBufferSize = 4096
	// writeBufferSize holds the replies to a burst of pipelined commands.
	writeBufferSize = 1024
	// maxErrors is how many protocol errors (unknown commands, bad syntax,
	// bad sequence) a session may make before it is closed, and maxJunk
	// how many NOOP, RSET, VRFY and HELP between two messages: a client
	// that only burns server time goes away (Postfix's hard error and junk
	// command limits, RFC 5321 §4.5.3.2 leaves the policy to the server).
	maxErrors = 20
	maxJunk   = 100
)

// session is one SMTP conversation on one connection, from the greeting to
// the close, in the connection's goroutine: commands, AUTH exchanges, DATA
// and BDAT content are read in turn, never concurrently.
type session struct {
	// s is the server; c our view of the connection; lc its listener.
	s  *Server
	c  *conn
	lc ListenerConfig
	// br reads from the connection (through TLS once it is up); bw buffers
	// replies until the client's pipelined commands are all read.
	br *bufio.Reader
	bw *bufio.Writer
	// tls is the TLS version in use, "" without TLS; cipher its suite.
	tls, cipher string
	// helo is the name from EHLO/HELO, "" before it; esmtp is set by EHLO.
	helo  string
	esmtp bool
	// acct is the authenticated account, nil before AUTH succeeds; pacc is
	// what the sender policy needs of it.
	acct *directory.Account
	pacc *policy.Account
	// tx is the mail transaction, nil outside one.
	tx *transaction
	// errors and junk count towards maxErrors and maxJunk.
	errors, junk int
	// closing is set when the session must end after the current reply;
	// blockAfterReply when an AUTH failure blocked the client, whose
	// session ends after the failure's reply (SPEC R11).
	closing, blockAfterReply bool
}

// transaction is one message being submitted.
type transaction struct {
	// from is the envelope sender; "" is the null sender, allowed only
	// when From: passes (SPEC R7).
	from  string
	rcpts []string
	// helo is the EHLO/HELO name, for the Received header.
	helo string
	// in is the message being taken in over BDAT, nil before the first
	// chunk.
	in *intake
	// chunks counts BDAT chunks, so DATA cannot follow one.
	chunks int
	// lim is the message's count against the sending limits.
	lim LimitTx
	// dsn holds the RFC 3461 parameters given so far; nil for none.
	dsn *spool.DSN
	// requireTLS: MAIL FROM had REQUIRETLS (RFC 8689).
	requireTLS bool
}

func (s *session) vars() Vars {
	return Vars{SID: s.c.sid, IP: s.c.client.Addr().String(), Host: s.s.Hostname}
}

// write queues a reply; it is sent when the client has nothing more
// pipelined (flushingReader) or the session ends.
func (s *session) write(e *smtp.SMTPError) {
	s.bw.WriteString(replyLine(e))
	s.bw.WriteString("\r\n")
}

// writeKey queues the reply for key.
func (s *session) writeKey(key string, v Vars) { s.write(s.c.set.Replies.Err(key, v)) }

// flushingReader is the connection as the session's reader sees it: before
// it waits for the client, the replies written so far are sent. The client
// gets its replies as soon as it waits for them, and a burst of pipelined
// commands is answered in one write (RFC 2920 §3).
type flushingReader struct{ s *session }

func (f flushingReader) Read(p []byte) (int, error) {
	if f.s.bw.Buffered() > 0 {
		if err := f.s.bw.Flush(); err != nil {
			return 0, err
		}
	}
	return f.s.c.top().Read(p)
}

// attach sets up reading and writing through nc, the connection or the TLS
// layer over it.
func (s *session) attach(nc net.Conn) {
	s.c.setTop(nc)
	s.br = bufio.NewReaderSize(flushingReader{s}, readBufferSize)
	s.bw = bufio.NewWriterSize(nc, writeBufferSize)
}

// serve runs the session until the client leaves or is sent away.
func (s *session) serve() {
	defer s.abortTx()
	s.writeKey(ReplyGreeting, s.vars())
	for !s.closing {
		if s.s.closing.Load() {
			s.end(ReplyShuttingDown)
			return
		}
		line, err := s.readCommand()
		if errors.Is(err, errCommandTooLong) {
			v := s.vars()
			v.Limit = int64(s.c.set.Limits.MaxLineLength)
			s.protocolError(ReplyCommandTooLong, v)
			continue
		}
		if err != nil {
			s.readFailed(err)
			return
		}
		if s.refuseIfBlocked() {
			return
		}
		s.command(line)
	}
	s.end("")
}

// errCommandTooLong is returned by readLine for a line that does not fit
// the read buffer; the line has been read and dropped.
var errCommandTooLong = errors.New("command line too long")

// readLine reads one line, without its line ending. A line longer than the
// read buffer is dropped whole, so its tail is not taken for a command.
func (s *session) readLine() (string, error) {
	line, err := s.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = s.br.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errCommandTooLong
	}
	if err != nil {
		return "", err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line), nil
}

// readCommand reads a command line while the session is idle: Shutdown may
// interrupt that wait, and only that one.
func (s *session) readCommand() (string, error) {
	if !s.c.setIdle(true) {
		return "", errShutdown
	}
	defer s.c.setIdle(false)
	return s.readLine()
}

// readFailed ends the session after a failed read: a timeout gets its 421,
// a closed connection nothing.
func (s *session) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errShutdown):
		s.end(ReplyShuttingDown)
	case errors.As(err, &ne) && ne.Timeout():
		key := ReplyIdleTimeout
		if !time.Now().Before(s.c.expires) {
			key = ReplySessionTimeout
		}
		s.c.record("timeout", "", s.c.set.Replies.Line(key, s.vars()))
		s.c.log.Info("session ended: " + strings.ReplaceAll(key, "_", " "))
		s.end(key)
	default:
		s.end("")
	}
}

// end closes the session, after the reply for key unless key is "". The
// connection's slot is given back before that reply is written, so a client
// that has seen it can connect again at once (SPEC R14).
func (s *session) end(key string) {
	s.closing = true
	s.s.release(s.c)
	if key != "" {
		s.writeKey(key, s.vars())
	}
	s.bw.Flush()
	s.c.Close()
}

// refuseIfBlocked ends the session of a client blocked while it was
// connected (SPEC R11): whatever the command, the reply is the refusal.
func (s *session) refuseIfBlocked() bool {
	if s.s.Guard == nil || !s.s.Guard.Blocked(s.c.client.Addr()) {
		return false
	}
	s.refuseBlocked()
	return true
}

// refuseBlocked answers with the blocked reply and closes.
func (s *session) refuseBlocked() {
	s.c.record("refused", "client blocked", s.c.set.Replies.Line(ReplyBlocked, s.vars()))
	s.c.log.Warn("session ended: client is blocked")
	s.end(ReplyBlocked)
}

// command runs one command line.
func (s *session) command(line string) {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	arg = strings.TrimSpace(arg)
	if len(line) > s.c.set.Limits.MaxLineLength && verb != "AUTH" {
		// SPEC R14. Only AUTH carries long arguments (RFC 4954 §4).
		v := s.vars()
		v.Limit = int64(s.c.set.Limits.MaxLineLength)
		s.protocolError(ReplyCommandTooLong, v)
		return
	}
	switch verb {
	case "EHLO", "HELO":
		s.hello(verb, arg)
	case "STARTTLS":
		s.startTLS(arg)
	case "AUTH":
		s.auth(arg)
	case "MAIL":
		s.mail(arg)
	case "RCPT":
		s.rcpt(arg)
	case "DATA":
		s.data(arg)
	case "BDAT":
		s.bdat(arg)
	case "RSET":
		s.abortTx()
		s.junkCommand(ReplyOK)
	case "NOOP":
		s.junkCommand(ReplyOK)
	case "VRFY":
		s.junkCommand(ReplyVRFY)
	case "HELP":
		s.junkCommand(ReplyHelp)
	case "QUIT":
		s.c.record("quit", "", "")
		s.end(ReplyQuit)
	case "EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML":
		s.protocolError(ReplyNotImplemented, s.vars())
	default:
		s.protocolError(ReplyUnknownCommand, s.vars())
	}
}

// protocolError answers a command that was not understood or not allowed
// now, and ends a session that makes too many of them.
func (s *session) protocolError(key string, v Vars) {
	e := s.c.set.Replies.Err(key, v)
	s.c.record("error", "", replyLine(e))
	if s.errors++; s.errors >= maxErrors {
		s.c.log.Info("session ended: too many errors")
		s.end(ReplyTooManyErrors)
		return
	}
	s.write(e)
}

// badSequence answers a command given at the wrong time.
func (s *session) badSequence(detail string) {
	v := s.vars()
	v.Detail = detail
	s.protocolError(ReplyBadSequence, v)
}

// syntaxError answers a command with arguments that do not parse.
func (s *session) syntaxError(detail string) {
	v := s.vars()
	v.Detail = detail
	s.protocolError(ReplySyntax, v)
}

// junkCommand answers a command that does nothing towards a message.
func (s *session) junkCommand(key string) {
	if s.junk++; s.junk > maxJunk {
		s.c.log.Info("session ended: too many commands without a message")
		s.end(ReplyTooManyErrors)
		return
	}
	s.writeKey(key, s.vars())
}

// abortTx ends the transaction, dropping a message still being taken in
// and giving back what it counted against the sending limits.
func (s *session) abortTx() {
	if s.tx != nil {
		if s.tx.in != nil {
			s.tx.in.abort()
		}
		s.tx.lim.Abandon()
	}
	s.tx = nil
}

// hello runs EHLO and HELO (RFC 5321 §4.1.1.1): a new start, without a
// transaction.
func (s *session) hello(verb, arg string) {
	if arg == "" {
		s.syntaxError(verb + " needs the client's name")
		return
	}
	s.abortTx()
	s.helo = arg
	s.esmtp = verb == "EHLO"
	s.c.update(func(r *sessionlog.Record) { r.HELO = oneLine(arg) })
	e := s.c.set.Replies.Err(ReplyEHLO, s.vars())
	if !s.esmtp {
		s.write(e)
		return
	}
	lines := []string{
		"PIPELINING",
		"8BITMIME",
		"ENHANCEDSTATUSCODES",
		"CHUNKING",
		"SMTPUTF8",
		"SIZE " + strconv.FormatInt(s.c.set.Limits.MaxMessageSize, 10),
		// RFC 9422: clients learn the recipient limit before the 452.
		"LIMITS RCPTMAX=" + strconv.Itoa(s.c.set.Limits.MaxRecipients),
		// RFC 3461: RET, ENVID, NOTIFY and ORCPT are honoured.
		"DSN",
	}
	if s.tls == "" && s.s.TLS != nil {
		lines = append(lines, "STARTTLS")
	}
	if s.tls != "" {
		// RFC 8689 §4.1: offered only inside TLS, the condition for
		// taking such a message.
		lines = append(lines, "REQUIRETLS")
	}
	if s.authAllowed() {
		lines = append(lines, "AUTH "+strings.Join(Mechanisms, " "))
	}
	fmt.Fprintf(s.bw, "%d-%s\r\n", e.Code, e.Message)
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(s.bw, "%d%s%s\r\n", e.Code, sep, l)
	}
}

// authAllowed reports whether AUTH may be used now (SPEC R3).
func (s *session) authAllowed() bool { return s.tls != "" || s.lc.AllowPlaintextAuth }

// startTLS upgrades the connection (RFC 3207).
func (s *session) startTLS(arg string) {
	switch {
	case arg != "":
		s.syntaxError("STARTTLS takes no argument")
		return
	case s.tls != "":
		s.badSequence("TLS is already active")
		return
	case s.s.TLS == nil:
		s.writeKey(ReplyTLSUnavailable, s.vars())
		return
	}
	if n := s.br.Buffered(); n > 0 {
		// RFC 3207 §5 (CVE-2011-0411): what the client sent after STARTTLS
		// in plaintext must not run inside TLS.
		s.br.Discard(n)
		s.c.record("starttls", "", "plaintext pipelined after STARTTLS discarded")
	}
	s.writeKey(ReplyStartTLS, s.vars())
	if err := s.bw.Flush(); err != nil {
		s.end("")
		return
	}
	tc, err := s.c.handshake(s.s.TLS)
	if err != nil {
		// RFC 3207 §4.1: after a failed handshake the connection cannot go
		// on in plaintext, where bytes meant for TLS would be commands.
		s.c.record("starttls", "", "TLS handshake failed")
		s.c.log.Info("session ended: TLS handshake failed", "err", err)
		s.end("")
		return
	}
	s.attach(tc)
	s.tlsUp(tc)
	// RFC 3207 §4.2: the client starts over with EHLO, knowing nothing.
	s.helo, s.esmtp, s.acct, s.pacc = "", false, nil, nil
	s.abortTx()
}

// mail runs MAIL FROM.
func (s *session) mail(arg string) {
	if s.helo == "" {
		s.badSequence("send EHLO first")
		return
	}
	if s.tx != nil {
		s.badSequence("a transaction is already open; RSET first")
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		s.syntaxError("use MAIL FROM:<address>")
		return
	}
	from, params, err := parsePath(rest, true)
	if err != nil {
		s.syntaxError(err.Error())
		return
	}
	v := s.vars()
	v.Address = from
	if s.acct == nil {
		// SPEC R1, R10: nothing without AUTH.
		s.refusal("mail", ReplyMailNoAuth, from, v)
		return
	}
	var dsn *spool.DSN
	requireTLS := false
	for _, p := range params {
		key, val, _ := strings.Cut(p, "=")
		switch strings.ToUpper(key) {
		case "REQUIRETLS":
			// RFC 8689 §4.1: without a value, and only where offered.
			if s.tls == "" || strings.Contains(p, "=") {
				v.Detail = p
				s.refusal("mail", ReplyParamUnsupported, from, v)
				return
			}
			requireTLS = true
		case "RET", "ENVID":
			// RFC 3461 §4.3, §4.4; each at most once (§4).
			if dsn == nil {
				dsn = &spool.DSN{}
			}
			if strings.EqualFold(key, "RET") {
				u := strings.ToUpper(val)
				if dsn.Ret != "" || u != "FULL" && u != "HDRS" {
					s.syntaxError("RET must be given once, FULL or HDRS")
					return
				}
				dsn.Ret = u
				continue
			}
			id, err := parseEnvID(val)
			if err != nil || dsn.EnvID != "" {
				if err == nil {
					err = errors.New("ENVID must be given once")
				}
				s.syntaxError(err.Error())
				return
			}
			dsn.EnvID = id
		case "SIZE":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				s.syntaxError("SIZE must be a number")
				return
			}
			if n > s.c.set.Limits.MaxMessageSize {
				v.Limit = s.c.set.Limits.MaxMessageSize
				s.refusal("mail", ReplyTooBig, from, v)
				return
			}
		case "BODY":
			if u := strings.ToUpper(val); u != "7BIT" && u != "8BITMIME" {
				v.Detail = "BODY=" + val
				s.refusal("mail", ReplyParamUnsupported, from, v)
				return
			}
		case "SMTPUTF8", "AUTH":
			// RFC 6531 §3.4; RFC 4954 §5 lets the server ignore AUTH=.
		default:
			v.Detail = p
			s.refusal("mail", ReplyParamUnsupported, from, v)
			return
		}
	}
	if from != "" && !s.c.set.Policy.MaySend(s.pacc, s.c.client.Addr(), from) {
		// SPEC R5, R6, R8, R9.
		s.refusal("mail", ReplySenderRejected, from, v)
		return
	}
	var lim LimitTx = noLimitTx{}
	if s.s.Limiter != nil {
		// SPEC R19: the message counts against messages per hour.
		var hit *LimitHit
		if lim, hit = s.s.Limiter.Message(s.acct.Address, s.acct.Domain); hit != nil {
			s.refusal("mail", ReplySendingLimit, from, s.limitVars(hit))
			return
		}
	}
	s.tx = &transaction{from: from, helo: s.helo, lim: lim, dsn: dsn, requireTLS: requireTLS}
	e := s.c.set.Replies.Err(ReplyMailOK, v)
	s.c.record("mail", from, replyLine(e))
	s.write(e)
}

// rcpt runs RCPT TO.
func (s *session) rcpt(arg string) {
	if s.tx == nil {
		if s.acct == nil && s.helo != "" {
			// SPEC R10: nothing is accepted for anyone without AUTH.
			v := s.vars()
			s.refusal("rcpt", ReplyMailNoAuth, arg, v)
			return
		}
		s.badSequence("send MAIL first")
		return
	}
	if s.tx.chunks > 0 {
		s.badSequence("the message is being sent with BDAT")
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		s.syntaxError("use RCPT TO:<address>")
		return
	}
	to, params, err := parsePath(rest, false)
	if err != nil {
		s.syntaxError(err.Error())
		return
	}
	v := s.vars()
	v.Address = to
	var rd spool.RcptDSN
	for _, p := range params {
		key, val, _ := strings.Cut(p, "=")
		switch strings.ToUpper(key) {
		case "NOTIFY":
			// RFC 3461 §4.1.
			n, err := parseNotify(val)
			if err == nil && rd.Notify != nil {
				err = errors.New("NOTIFY must be given once")
			}
			if err != nil {
				s.syntaxError(err.Error())
				return
			}
			rd.Notify = n
		case "ORCPT":
			// RFC 3461 §4.2.
			o, err := parseORcpt(val)
			if err == nil && rd.ORcpt != "" {
				err = errors.New("ORCPT must be given once")
			}
			if err != nil {
				s.syntaxError(err.Error())
				return
			}
			rd.ORcpt = o
		default:
			v.Detail = p
			s.refusal("rcpt", ReplyParamUnsupported, to, v)
			return
		}
	}
	if _, err := address.Parse(to); err != nil {
		s.refusal("rcpt", ReplyBadRecipient, to, v)
		return
	}
	if !slices.Contains(s.tx.rcpts, to) {
		if len(s.tx.rcpts) >= s.c.set.Limits.MaxRecipients {
			v.Limit = int64(s.c.set.Limits.MaxRecipients)
			s.refusal("rcpt", ReplyTooManyRcpts, to, v)
			return
		}
		// SPEC R19: each distinct recipient counts, once.
		if hit := s.tx.lim.Recipient(to); hit != nil {
			s.refusal("rcpt", ReplySendingLimit, to, s.limitVars(hit))
			return
		}
		s.tx.rcpts = append(s.tx.rcpts, to)
	}
	if rd.Notify != nil || rd.ORcpt != "" {
		if s.tx.dsn == nil {
			s.tx.dsn = &spool.DSN{}
		}
		if s.tx.dsn.Rcpts == nil {
			s.tx.dsn.Rcpts = map[string]spool.RcptDSN{}
		}
		s.tx.dsn.Rcpts[to] = rd
	}
	e := s.c.set.Replies.Err(ReplyRcptOK, v)
	s.c.record("rcpt", to, replyLine(e))
	s.write(e)
}

// refusal records, logs, counts and answers a command refused with the
// reply for key.
func (s *session) refusal(kind, key, detail string, v Vars) {
	s.refused(kind, key, detail, s.c.set.Replies.Err(key, v))
}

// refused is refusal with the reply e for key already made.
func (s *session) refused(kind, key, detail string, e *smtp.SMTPError) {
	s.s.observer().Refused(kind, key)
	line := replyLine(e)
	s.c.record(kind, oneLine(detail), line)
	s.c.log.Info(kind+" refused", "arg", oneLine(detail), "reply", line)
	s.write(e)
}

// dataRefusal checks the transaction before DATA or BDAT and returns the
// reply key when the message cannot be taken, "" when it can.
func (s *session) dataRefusal() (string, Vars) {
	v := s.vars()
	switch {
	case s.acct == nil:
		return ReplyMailNoAuth, v
	case s.tx == nil:
		v.Detail = "send MAIL first"
	case len(s.tx.rcpts) == 0:
		v.Detail = "send RCPT first"
	default:
		return "", v
	}
	return ReplyBadSequence, v
}

// data runs DATA: the reply comes only after the message is on disk (SPEC
// R15); a refused message leaves nothing behind (SPEC R8).
func (s *session) data(arg string) {
	if arg != "" {
		s.syntaxError("DATA takes no argument")
		return
	}
	if s.tx != nil && s.tx.chunks > 0 {
		s.badSequence("the message is being sent with BDAT")
		return
	}
	if key, v := s.dataRefusal(); key == ReplyBadSequence {
		s.protocolError(key, v)
		return
	} else if key != "" {
		s.refusal("data", key, "", v)
		return
	}
	s.writeKey(ReplyDataGo, s.vars())
	tx := *s.tx
	tx.rcpts = slices.Clone(tx.rcpts)
	in := s.newIntake(tx)
	s.tx = nil
	if err := readDotData(s.br, in); err != nil {
		in.abort()
		s.readFailed(err)
		return
	}
	s.finishMessage(in)
}

// finishMessage ends a message and answers it.
func (s *session) finishMessage(in *intake) {
	key, e := in.finish()
	if key != ReplyQueued {
		// A refused message costs nothing against the sending limits: the
		// client will send it again.
		in.tx.lim.Abandon()
		s.refused("data", key, "", e)
		return
	}
	in.tx.lim.Accepted()
	s.junk = 0
	s.write(e)
}

// bdat runs BDAT (RFC 3030). The chunk is read whatever the answer, since
// its bytes are not commands.
func (s *session) bdat(arg string) {
	f := strings.Fields(arg)
	var size int64 = -1
	if len(f) == 1 || len(f) == 2 && strings.EqualFold(f[1], "LAST") {
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n >= 0 && f[0][0] != '+' {
			size = n
		}
	}
	if size < 0 {
		// Without a size, where the chunk ends is unknown: the rest of the
		// connection cannot be told apart from data, so it ends here.
		v := s.vars()
		v.Detail = "use BDAT size [LAST]"
		s.c.record("bdat", oneLine(arg), s.c.set.Replies.Line(ReplySyntax, v))
		s.writeKey(ReplySyntax, v)
		s.end("")
		return
	}
	last := len(f) == 2
	if key, v := s.dataRefusal(); key != "" {
		if err := s.readChunk(size, nil); err != nil {
			s.readFailed(err)
			return
		}
		s.refusal("bdat", key, "", v)
		return
	}
	tx := s.tx
	if tx.in == nil {
		c := *tx
		c.rcpts = slices.Clone(c.rcpts)
		tx.in = s.newIntake(c)
	}
	tx.chunks++
	if err := s.readChunk(size, tx.in); err != nil {
		s.readFailed(err)
		return
	}
	in := tx.in
	switch {
	case last:
		s.tx = nil
		s.finishMessage(in)
	case in.err != nil:
		// RFC 3030 §3: a refused chunk ends the transaction; the client
		// sends no more chunks of it.
		s.tx = nil
		s.finishMessage(in)
	default:
		v := s.vars()
		v.Limit = size
		s.writeKey(ReplyChunkOK, v)
	}
}

// readChunk reads size bytes of BDAT data into w, or drops them when w is
// nil.
func (s *session) readChunk(size int64, w *intake) error {
	for size > 0 {
		if _, err := s.br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		buf, _ := s.br.Peek(min(s.br.Buffered(), int(min(size, int64(readBufferSize)))))
		if w != nil {
			w.Write(buf)
		}
		s.br.Discard(len(buf))
		size -= int64(len(buf))
	}
	return nil
}

// auth runs AUTH (RFC 4954) with PLAIN or LOGIN (SPEC R1).
func (s *session) auth(arg string) {
	switch {
	case s.helo == "" || !s.esmtp:
		s.badSequence("send EHLO first")
		return
	case s.acct != nil:
		s.badSequence("already authenticated")
		return
	case s.tx != nil:
		s.badSequence("AUTH is not allowed during a mail transaction")
		return
	case !s.authAllowed():
		// SPEC R3.
		s.s.observer().Auth(ReplyAuthNeedsTLS)
		s.refusal("auth", ReplyAuthNeedsTLS, "", s.vars())
		return
	}
	mech, ir, _ := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if mech != sasl.Plain && mech != sasl.Login {
		s.authFailure(ReplyAuthMechanism, oneLine(mech), "unsupported mechanism")
		return
	}
	var resp []byte
	switch ir = strings.TrimSpace(ir); ir {
	case "":
	case "=":
		// RFC 4954 §4: an empty initial response.
		resp = []byte{}
	default:
		b, err := base64.StdEncoding.DecodeString(ir)
		if err != nil {
			s.authFailure(ReplyAuthMalformed, "", "initial response is not base64")
			return
		}
		resp = b
	}
	srv := &saslServer{
		mech:      mech,
		check:     s.authenticate,
		malformed: func() error { return errMalformed },
	}
	for {
		chal, done, err := srv.Next(resp)
		var e *smtp.SMTPError
		switch {
		case errors.Is(err, errMalformed):
			s.authFailure(ReplyAuthMalformed, "", "malformed")
			return
		case errors.Is(err, errRefused):
			return
		case errors.As(err, &e):
			s.write(e)
			if s.blockAfterReply {
				s.blockedNow()
			}
			return
		case err != nil:
			return
		case done:
			s.writeKey(ReplyAuthOK, s.vars())
			return
		}
		fmt.Fprintf(s.bw, "334 %s\r\n", base64.StdEncoding.EncodeToString(chal))
		line, err := s.readLine()
		switch {
		case errors.Is(err, errCommandTooLong):
			s.authFailure(ReplyAuthMalformed, "", "response line too long")
			return
		case err != nil:
			// The exchange was abandoned with the connection: it counts.
			s.authFailure("", "", "exchange abandoned")
			s.readFailed(err)
			return
		case line == "*":
			// RFC 4954 §4: the client cancelled.
			s.authFailure(ReplyAuthCancelled, "", "cancelled by the client")
			return
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			s.authFailure(ReplyAuthMalformed, "", "response is not base64")
			return
		}
		resp = b
	}
}

// authFailure answers an AUTH that ended before credentials could be
// checked: it still counts as a failure (SPEC R11: every AUTH that does not
// succeed). key "" records it without a reply, for a connection that is
// gone.
func (s *session) authFailure(key, detail, reason string) {
	var e *smtp.SMTPError
	line := ""
	if key != "" {
		e = s.c.set.Replies.Err(key, s.vars())
		line = replyLine(e)
	}
	s.c.record("auth", detail, line)
	s.c.log.Info("auth failed", "reason", reason)
	a, ok := s.beginAttempt()
	if !ok {
		return
	}
	s.s.observer().Auth(cmp.Or(key, "abandoned"))
	blocked := a.Fail()
	if e != nil {
		s.write(e)
	}
	if blocked {
		s.blockedNow()
	}
}

// beginAttempt takes the attempt's place with the guard before any
// credentials are checked (SPEC R11: at most max_failures checks per
// window, however many run at once). When the client's key has none left,
// the session is refused and ends.
func (s *session) beginAttempt() (Attempt, bool) {
	a, ok := s.takePlace()
	if !ok {
		s.s.observer().Auth(ReplyBlocked)
		s.refuseBlocked()
		return nil, false
	}
	return a, true
}

// takePlace takes the attempt's place with the guard; with no guard every
// attempt has one.
func (s *session) takePlace() (Attempt, bool) {
	if s.s.Guard == nil {
		return noAttempt{}, true
	}
	return s.s.Guard.Begin(s.c.client.Addr(), s.c.sid)
}

// blockedNow ends the session whose failure blocked its client, after the
// failure's reply (SPEC R11: the connection that hit the limit is closed).
func (s *session) blockedNow() {
	s.c.log.Warn("client blocked after too many AUTH failures")
	s.end("")
}

// keyRefused is check's answer when the guard had no place for the
// attempt: the session is refused, with no AUTH reply of its own.
const keyRefused = "\x00refused"

// errRefused ends an AUTH exchange whose session was refused and closed.
var errRefused = errors.New("session refused")

// noAttempt is the attempt when no guard runs.
type noAttempt struct{}

func (noAttempt) Fail() bool { return false }
func (noAttempt) Succeed()   {}

// cutPrefixFold is strings.CutPrefix ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// authenticate checks credentials and returns the reply error, or nil.
// Every failure takes at least MinAuthDuration, so timing does not tell an
// unknown login from a wrong password; a success is not delayed, since its
// reply tells it apart anyway.
func (s *session) authenticate(cr credentials) error {
	start := time.Now()
	// The guard's place is taken just before a password is hashed (SPEC
	// R11: attempts in flight count). An answer from the credential cache
	// takes none, but is given only while the client's key is below its
	// limit (authGate.Open); an answer that hashes nothing takes its place
	// only to count a failure.
	g := &authGate{s: s}
	key, acct, reason := s.check(cr, g)
	a := g.a
	if key == keyRefused {
		s.s.observer().Auth(ReplyBlocked)
		s.refuseBlocked()
		return errRefused
	}
	if key == "" {
		// The account is noted before the closed accounts are looked at
		// (CloseAccount), so a hold made meanwhile finds one or the other.
		s.c.update(func(r *sessionlog.Record) { r.Account = acct.Address })
		if s.s.closedAccount(acct.Address) {
			s.c.update(func(r *sessionlog.Record) { r.Account = "" })
			key, reason = ReplyAuthDisabled, "account held"
		}
	}
	switch {
	case a != nil:
	case key == "":
		// A success from the cache: no password was checked.
		a = noAttempt{}
	default:
		// A failure answered without a hash (from the cache, a disabled
		// account, a bad login) still counts.
		var ok bool
		if a, ok = s.beginAttempt(); !ok {
			return errRefused
		}
	}
	s.s.observer().Auth(cmp.Or(key, ReplyAuthOK))
	login := oneLine(cr.login)
	if key == "" {
		s.acct = acct
		s.pacc = &policy.Account{Domain: acct.Domain, Aliases: acct.Aliases, Identities: acct.Identities}
		s.s.activity().LoggedIn(acct.Address, s.c.client.Addr(), s.helo, s.s.now())
		s.c.record("auth", login, s.c.set.Replies.Line(ReplyAuthOK, s.vars()))
		s.c.log.Info("auth ok", "login", login, "checked", reason)
		a.Succeed()
		return nil
	}
	if d := s.c.set.MinAuthDuration - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	reply := s.c.set.Replies.Err(key, s.vars())
	s.c.record("auth", login, replyLine(reply))
	s.c.log.Info("auth failed", "login", login, "reason", reason)
	if reply.Code/100 == 4 {
		// A temporary failure checked no password: the place goes back
		// uncounted.
		a.Succeed()
	} else if a.Fail() {
		s.blockAfterReply = true
	}
	return reply
}

// authGate is the guard's gate over one AUTH check (auth.Gate): the place
// Admit takes is kept in a, for authenticate to settle.
type authGate struct {
	s *session
	a Attempt
}

func (g *authGate) Admit() bool {
	var ok bool
	g.a, ok = g.s.takePlace()
	return ok
}

func (g *authGate) Open() bool {
	return g.s.s.Guard == nil || g.s.s.Guard.Open(g.s.c.client.Addr())
}

// check decides an AUTH attempt: reply key ("" for success), the account,
// and a reason for the log (for a success, how the password was checked).
func (s *session) check(cr credentials, gate auth.Gate) (string, *directory.Account, string) {
	// SPEC R2: the login is the full address.
	login, err := address.Parse(cr.login)
	if cr.authzid != "" && cr.authzid != cr.login {
		// The same address in another case or Unicode form is the same
		// identity (SPEC §1).
		if z, zerr := address.Parse(cr.authzid); err != nil || zerr != nil || z != login {
			return ReplyAuthzid, nil, "authorization identity differs from login"
		}
	}
	if err != nil {
		return ReplyAuthRejected, nil, "login is not a full address"
	}
	a := s.c.set.Auth
	if a == nil {
		s.s.authOnce.Do(func() {
			var err error
			s.s.defaultAuth, err = auth.New(auth.Config{Directory: s.s.Directory, Verify: s.s.Verify, Log: s.s.Log})
			if err != nil {
				s.c.log.Error("authenticator unavailable", "err", err)
			}
		})
		if a = s.s.defaultAuth; a == nil {
			return ReplyAuthBusy, nil, "no authenticator"
		}
	}
	ip := s.c.client.Addr()
	var key netip.Prefix
	switch {
	case s.s.AuthKey != nil:
		key = s.s.AuthKey(ip)
	case ip.Is4():
		key = netip.PrefixFrom(ip, 32)
	default:
		key, _ = ip.Prefix(64)
	}
	ctx, cancel := context.WithTimeout(s.c.stopCtx, 10*time.Second)
	defer cancel()
	if s.s.Logins != nil {
		// SPEC R21: a login under attack is refused unchecked from networks
		// without an earlier success, with a wrong password's reply. This
		// comes after the guard let the client in (SPEC R11) and before the
		// cache or a hash, so the owner's network goes on to the check and
		// an attacker's learns nothing, not even from a cached answer.
		if d := s.s.Logins.Check(ctx, login.String(), ip); d.Refuse {
			s.c.record(loginwatch.EventKind, d.Reason, "")
			return ReplyAuthFailed, nil, "login under attack"
		}
	}
	r := a.CheckAdmitted(ctx, key, cr.login, cr.password, gate)
	if s.s.Logins != nil && r.Account != nil {
		// The key is the normalized login, as Check was asked with.
		switch r.Verdict {
		case auth.OK:
			s.s.Logins.Succeeded(ctx, login.String(), ip)
		case auth.WrongPassword:
			// Only existing accounts count: a million made-up logins cost
			// nothing to remember.
			s.s.Logins.Failed(ctx, login.String(), ip)
		}
	}
	switch r.Verdict {
	case auth.OK:
		if r.Cached {
			return "", r.Account, "credential cache"
		}
		return "", r.Account, "password hash"
	case auth.UnknownLogin:
		return ReplyAuthRejected, nil, "unknown login"
	case auth.Disabled:
		// SPEC R4: whatever the password.
		return ReplyAuthDisabled, nil, "SMTP access disabled"
	case auth.WrongPassword:
		if r.Err != nil {
			s.c.log.Error("stored password hash unusable", "account", r.Account.Address, "err", r.Err)
		}
		return ReplyAuthFailed, nil, "wrong password"
	case auth.Busy:
		// SPEC R16a: a check that cannot be served in time is temporary.
		return ReplyAuthBusy, nil, "password checks busy"
	case auth.Refused:
		return keyRefused, nil, "no guard place left"
	}
	if s.c.stop.Load() && errors.Is(r.Err, context.Canceled) {
		// Shutdown: the next command gets 421.
		return ReplyAuthBusy, nil, "server shutting down"
	}
	// SPEC R16a: with the directory unreachable the answer is unknown, so
	// temporary, never a false "rejected".
	s.c.log.Error("authentication check failed", "err", r.Err)
	return ReplyAuthBusy, nil, "directory error"
}

// dataErr maps an error found in a message to its reply key and reply.
// Every content error is permanent: the same message would fail again.
func (s *session) dataErr(err error) (string, *smtp.SMTPError) {
	v := s.vars()
	var re replyError
	key := ReplySpoolFailed
	switch {
	case errors.Is(err, message.ErrBareLineEnding):
		key = ReplyBareLF
	case errors.Is(err, errNUL):
		key = ReplyNUL
	case errors.Is(err, errLineTooLong):
		// SPEC R14.
		key, v.Limit = ReplyLineTooLong, int64(s.c.set.Limits.MaxLineLength)
	case errors.Is(err, message.ErrHeaderTooLarge):
		key, v.Limit = ReplyHeaderTooLarge, int64(s.c.set.Limits.MaxHeaderSize)
	case errors.Is(err, errTooBig):
		key, v.Limit = ReplyTooBig, s.c.set.Limits.MaxMessageSize
	case errors.As(err, &re):
		key, v = re.key, re.v
	default:
		// What is left is the spool failing to take the message (SPEC R15).
		s.c.log.Error("spool write failed", "err", err)
	}
	return key, s.c.set.Replies.Err(key, v)
}

// replyError is a refusal decided while a message comes in, kept as its
// reply key and variables until finish answers it.
type replyError struct {
	// key is the reply key; v fills its text.
	key string
	v   Vars
}

func (e replyError) Error() string { return e.key }

// checkHeaderSenders applies the sender policy to every From: address and to
// Sender: (SPEC R7, R8). The null sender is allowed only through this check.
func (s *session) checkHeaderSenders(h *message.Header) error {
	v := s.vars()
	froms := h.Values("From")
	switch {
	case len(froms) == 0:
		return replyError{ReplyNoFrom, v}
	case len(froms) > 1:
		return replyError{ReplyManyFrom, v}
	}
	addrs, err := message.Addresses(froms[0])
	if err != nil {
		v.Detail = err.Error()
		return replyError{ReplyBadFrom, v}
	}
	senders := h.Values("Sender")
	if len(senders) > 1 {
		return replyError{ReplyManySender, v}
	}
	if len(senders) == 1 {
		sa, err := message.Addresses(senders[0])
		if err != nil || len(sa) != 1 {
			if err == nil {
				err = errors.New("it must hold exactly one address")
			}
			v.Detail = err.Error()
			return replyError{ReplyBadSender, v}
		}
		addrs = append(addrs, sa[0])
	}
	for _, a := range addrs {
		if !s.c.set.Policy.MaySend(s.pacc, s.c.client.Addr(), a) {
			v.Address = a
			return replyError{ReplyHeaderRejected, v}
		}
	}
	return nil
}

// receivedHeader builds the trace header (RFC 5321 §4.4) with the protocol
// keyword of RFC 3848 and the session id (SPEC R12, R16).
func (s *session) receivedHeader(now time.Time, tx transaction) string {
	proto := "ESMTPA"
	if s.tls != "" {
		proto = "ESMTPSA"
	}
	helo := strings.Map(func(r rune) rune {
		if r <= ' ' || r == '(' || r == ')' || r == ';' || r > '~' {
			return -1
		}
		return r
	}, tx.helo)
	if helo == "" {
		helo = "unknown"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (submitd) with %s id %s", helo, s.c.client.Addr(), s.s.Hostname, proto, s.c.sid)
	if s.tls != "" {
		fmt.Fprintf(&b, "\r\n\t(%s %s)", s.tls, s.cipher)
	}
	if len(tx.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", tx.rcpts[0])
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", now.Format(time.RFC1123Z))
	return b.String()
}
