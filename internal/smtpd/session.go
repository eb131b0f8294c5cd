package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/address"
	"submitd/internal/directory"
	"submitd/internal/message"
	"submitd/internal/policy"
	"submitd/internal/sessionlog"
	"submitd/internal/spool"
)

// backend creates go-smtp sessions for one listener.
type backend struct {
	s  *Server
	lc ListenerConfig
}

var _ smtp.Backend = (*backend)(nil)

// NewSession is called at EHLO/HELO, and again after STARTTLS.
func (b *backend) NewSession(sc *smtp.Conn) (smtp.Session, error) {
	c := ourConn(sc.Conn())
	if c == nil {
		return nil, errors.New("internal error: unknown connection")
	}
	sess := &session{s: b.s, c: c, sc: sc}
	c.setTop(sc.Conn())
	tlsState, isTLS := sc.TLSConnectionState()
	c.update(func(r *sessionlog.Record) {
		r.HELO = sc.Hostname()
		if isTLS && r.TLS == "" {
			r.TLS = tls.VersionName(tlsState.Version) + " " + tls.CipherSuiteName(tlsState.CipherSuite)
		}
	})
	if isTLS {
		sess.tls = tls.VersionName(tlsState.Version)
		sess.cipher = tls.CipherSuiteName(tlsState.CipherSuite)
	}
	sess.tx.helo = sc.Hostname()
	return sess, nil
}

// ourConn finds the conn below any TLS layers.
func ourConn(nc net.Conn) *conn {
	for {
		switch v := nc.(type) {
		case *conn:
			return v
		case *tls.Conn:
			nc = v.NetConn()
		default:
			return nil
		}
	}
}

// session is one go-smtp session: from EHLO (or STARTTLS) to the end of the
// connection. The account lives here because STARTTLS forgets it.
type session struct {
	// s is the server, c our view of the connection, sc go-smtp's.
	s  *Server
	c  *conn
	sc *smtp.Conn
	// tls is the TLS version in use, "" without TLS; cipher its cipher suite.
	tls, cipher string

	// acct is the authenticated account, nil before AUTH succeeds; pacc is
	// what the sender policy needs of it.
	acct *directory.Account
	pacc *policy.Account
	// authPending is set while an AUTH exchange is under way; one that never
	// finishes (cancelled with "*", bad base64) still counts as a failure
	// (SPEC R11), noticed at the next command or at the end.
	authPending bool

	// mu guards tx. Over BDAT, go-smtp runs Data in a goroutine of its own
	// while the connection's goroutine goes on with the next commands, and
	// RSET or EHLO there resets the transaction under it.
	mu sync.Mutex
	tx transaction
}

// transaction is what Data needs of the session; Data takes a copy.
type transaction struct {
	// from is the envelope sender; "" is the null sender, allowed only
	// when From: passes (SPEC R7).
	from  string
	rcpts []string
	// helo is the last EHLO/HELO name, for the Received header.
	helo string
}

var _ smtp.AuthSession = (*session)(nil)

func (s *session) vars() Vars {
	return Vars{SID: s.c.sid, IP: s.c.client.Addr().String()}
}

// checkGuard settles an unfinished AUTH and ends the session of a client
// blocked while it was connected (SPEC R11). conn.Read catches that at the
// next read; this catches commands the client had pipelined before it.
func (s *session) checkGuard() error {
	s.settlePendingAuth()
	if s.c.refuseIfBlocked() {
		// The reply is written and the connection closed; go-smtp's own
		// write of this error then goes nowhere.
		return s.s.Replies.Err(ReplyBlocked, s.vars())
	}
	return nil
}

func (s *session) settlePendingAuth() {
	if s.authPending {
		s.authPending = false
		s.c.record("auth", "", "exchange abandoned or malformed")
		s.c.log.Info("auth failed", "reason", "exchange abandoned or malformed")
		s.fail()
	}
}

// fail counts an AUTH failure and, when it blocks the client, arranges for
// the connection to close after the failure reply (SPEC R11).
func (s *session) fail() {
	if s.s.Guard != nil && s.s.Guard.Failure(s.c.client.Addr(), s.c.sid) {
		s.c.closeAfterWrite.Store(true)
		s.c.log.Warn("client blocked after too many AUTH failures")
	}
}

// Reset implements smtp.Session.
func (s *session) Reset() {
	s.mu.Lock()
	// go-smtp calls Reset also for a repeated EHLO, after taking its name.
	s.tx = transaction{helo: s.sc.Hostname()}
	s.mu.Unlock()
}

// Logout implements smtp.Session.
func (s *session) Logout() error {
	s.settlePendingAuth()
	return nil
}

// AuthMechanisms implements smtp.AuthSession (SPEC R1).
func (s *session) AuthMechanisms() []string { return Mechanisms }

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if err := s.checkGuard(); err != nil {
		return nil, err
	}
	if s.tls == "" && !s.sc.Server().AllowInsecureAuth {
		// go-smtp refuses this itself; kept for defence in depth (SPEC R3).
		return nil, s.s.Replies.Err(ReplyAuthNeedsTLS, s.vars())
	}
	if mech != sasl.Plain && mech != sasl.Login {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	s.authPending = true
	return &saslServer{
		mech:  mech,
		check: s.authenticate,
		malformed: func() error {
			s.authPending = false
			reply := s.s.Replies.Err(ReplyAuthMalformed, s.vars())
			s.c.record("auth", "", reply.Message)
			s.c.log.Info("auth failed", "mechanism", mech, "reason", "malformed")
			s.fail()
			return reply
		},
	}, nil
}

// authenticate checks credentials and returns the reply error, or nil.
// Every outcome takes at least MinAuthDuration, so timing does not tell an
// unknown login from a wrong password.
func (s *session) authenticate(cr credentials) error {
	s.authPending = false
	start := time.Now()
	defer func() {
		if d := s.s.MinAuthDuration - time.Since(start); d > 0 {
			time.Sleep(d)
		}
	}()
	key, acct, reason := s.check(cr)
	login := oneLine(cr.login)
	if key == "" {
		s.acct = acct
		s.pacc = &policy.Account{Domain: acct.Domain, Aliases: acct.Aliases, Identities: acct.Identities}
		s.c.update(func(r *sessionlog.Record) { r.Account = acct.Address })
		s.c.record("auth", login, "235 2.7.0 Authentication succeeded")
		s.c.log.Info("auth ok", "login", login)
		return nil
	}
	reply := s.s.Replies.Err(key, s.vars())
	s.c.record("auth", login, fmt.Sprintf("%d %s", reply.Code, reply.Message))
	s.c.log.Info("auth failed", "login", login, "reason", reason)
	s.fail()
	return reply
}

// check decides an AUTH attempt: reply key ("" for success), the account,
// and a reason for the log.
func (s *session) check(cr credentials) (string, *directory.Account, string) {
	if cr.authzid != "" && cr.authzid != cr.login {
		return ReplyAuthzid, nil, "authorization identity differs from login"
	}
	// SPEC R2: the login is the full address.
	if _, err := address.Parse(cr.login); err != nil {
		return ReplyAuthRejected, nil, "login is not a full address"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	acct, err := s.s.Directory.Account(ctx, cr.login)
	if errors.Is(err, directory.ErrNotFound) {
		return ReplyAuthRejected, nil, "unknown login"
	}
	if err != nil {
		s.c.log.Error("directory lookup failed", "err", err)
		return ReplyTempFailure, nil, "directory error"
	}
	if !acct.SMTPAccess {
		// SPEC R4: whatever the password.
		return ReplyAuthDisabled, nil, "SMTP access disabled"
	}
	ok, err := s.s.Verify(acct.PasswordHash, cr.password)
	if err != nil {
		s.c.log.Error("stored password hash unusable", "account", acct.Address, "err", err)
	}
	if !ok {
		return ReplyAuthFailed, nil, "wrong password"
	}
	return "", acct, ""
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if err := s.checkGuard(); err != nil {
		return err
	}
	v := s.vars()
	v.Address = from
	if s.acct == nil {
		// SPEC R1, R10: nothing without AUTH.
		return s.reply("mail", from, s.s.Replies.Err(ReplyMailNoAuth, v))
	}
	if from != "" && !s.s.Policy.MaySend(s.pacc, s.c.client.Addr(), from) {
		// SPEC R5, R6, R8, R9.
		return s.reply("mail", from, s.s.Replies.Err(ReplySenderRejected, v))
	}
	s.mu.Lock()
	s.tx.from = from
	s.mu.Unlock()
	s.c.dotCR.take()
	s.c.record("mail", from, "250 2.0.0 OK")
	return nil
}

// reply records and logs a refusal and returns it.
func (s *session) reply(kind, detail string, e *smtp.SMTPError) error {
	line := replyLine(e)
	s.c.record(kind, oneLine(detail), line)
	s.c.log.Info(kind+" refused", "arg", oneLine(detail), "reply", line)
	return e
}

// Rcpt implements smtp.Session.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := s.checkGuard(); err != nil {
		return err
	}
	v := s.vars()
	v.Address = to
	if s.acct == nil {
		return s.reply("rcpt", to, s.s.Replies.Err(ReplyMailNoAuth, v))
	}
	if _, err := address.Parse(to); err != nil {
		return s.reply("rcpt", to, s.s.Replies.Err(ReplyBadRecipient, v))
	}
	s.mu.Lock()
	s.tx.rcpts = append(s.tx.rcpts, to)
	s.mu.Unlock()
	s.c.record("rcpt", to, "250 2.0.0 OK")
	return nil
}

// Data implements smtp.Session. The reply comes only after the message is on
// disk (SPEC R15); a rejected message leaves nothing behind (SPEC R8).
func (s *session) Data(r io.Reader) error {
	if err := s.checkGuard(); err != nil {
		return err
	}
	v := s.vars()
	s.mu.Lock()
	tx := s.tx
	tx.rcpts = slices.Clone(tx.rcpts)
	s.mu.Unlock()
	if s.acct == nil || len(tx.rcpts) == 0 {
		return s.reply("data", "", s.s.Replies.Err(ReplyMailNoAuth, v))
	}
	err := s.data(r, tx)
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		if se.Code == 250 {
			return se
		}
		return s.reply("data", "", se)
	}
	return err
}

func (s *session) data(r io.Reader, tx transaction) error {
	v := s.vars()
	lim := s.s.Limits
	br := bufio.NewReaderSize(message.NewLineEndings(r), 32<<10)
	raw, err := message.ReadHeader(br, lim.MaxHeaderSize)
	if err != nil {
		return s.dataErr(err)
	}
	h, err := message.Parse(raw)
	if err != nil {
		v.Detail = err.Error()
		return s.s.Replies.Err(ReplyBadHeader, v)
	}
	if e := s.checkHeaderSenders(h); e != nil {
		return e
	}

	now := s.s.now()
	env := &spool.Envelope{
		From: tx.from, To: tx.rcpts, Account: s.acct.Address, SessionID: s.c.sid,
		ClientIP: s.c.client.Addr().String(), Received: now,
	}
	w, err := s.s.Spool.Create(env)
	if err != nil {
		s.c.log.Error("spool create failed", "err", err)
		return s.s.Replies.Err(ReplySpoolFailed, v)
	}
	io.WriteString(w, s.receivedHeader(now, tx))
	// RFC 6409 §8.3, §8.1: a submission server adds what the client left out.
	if !h.Has("Message-ID") {
		fmt.Fprintf(w, "Message-ID: <%s@%s>\r\n", env.ID, s.s.Hostname)
	}
	if !h.Has("Date") {
		fmt.Fprintf(w, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	w.Write(raw)
	if _, err := io.Copy(w, br); err != nil {
		w.Abort()
		return s.dataErr(err)
	}
	if s.c.dotCR.take() {
		w.Abort()
		return s.dataErr(message.ErrBareLineEnding)
	}
	if err := w.Commit(); err != nil {
		s.c.log.Error("spool commit failed", "queue_id", env.ID, "err", err)
		return s.s.Replies.Err(ReplySpoolFailed, v)
	}
	v.QueueID = env.ID
	ok := s.s.Replies.Err(ReplyQueued, v)
	s.c.record("data", fmt.Sprintf("%d bytes", env.Size), replyLine(ok))
	s.c.record("queued", env.ID, "")
	s.c.log.Info("message queued", "queue_id", env.ID, "from", tx.from, "rcpts", len(tx.rcpts), "size", env.Size)
	return ok
}

// dataErr maps an error while reading DATA to its reply.
func (s *session) dataErr(err error) error {
	v := s.vars()
	var se *smtp.SMTPError
	switch {
	case errors.Is(err, message.ErrBareLineEnding):
		return s.s.Replies.Err(ReplyBareLF, v)
	case errors.Is(err, smtp.ErrTooLongLine):
		// SPEC R14. Permanent: the same message would fail again. go-smtp
		// closes the connection after this reply, as the rest of the line
		// cannot be told from the next command.
		v.Limit = int64(s.s.Limits.MaxLineLength)
		return s.s.Replies.Err(ReplyLineTooLong, v)
	case errors.Is(err, message.ErrHeaderTooLarge):
		v.Limit = int64(s.s.Limits.MaxHeaderSize)
		return s.s.Replies.Err(ReplyHeaderTooLarge, v)
	case errors.As(err, &se) && se.Code == smtp.ErrDataTooLarge.Code:
		v.Limit = s.s.Limits.MaxMessageSize
		return s.s.Replies.Err(ReplyTooBig, v)
	case errors.As(err, &se):
		return se
	}
	s.c.log.Warn("reading message failed", "err", err)
	return s.s.Replies.Err(ReplyTempFailure, v)
}

// checkHeaderSenders applies the sender policy to every From: address and to
// Sender: (SPEC R7, R8). The null sender is allowed only through this check.
func (s *session) checkHeaderSenders(h *message.Header) error {
	v := s.vars()
	froms := h.Values("From")
	switch {
	case len(froms) == 0:
		return s.s.Replies.Err(ReplyNoFrom, v)
	case len(froms) > 1:
		return s.s.Replies.Err(ReplyManyFrom, v)
	}
	addrs, err := message.Addresses(froms[0])
	if err != nil {
		v.Detail = err.Error()
		return s.s.Replies.Err(ReplyBadFrom, v)
	}
	senders := h.Values("Sender")
	if len(senders) > 1 {
		return s.s.Replies.Err(ReplyManySender, v)
	}
	if len(senders) == 1 {
		sa, err := message.Addresses(senders[0])
		if err != nil || len(sa) != 1 {
			if err == nil {
				err = errors.New("it must hold exactly one address")
			}
			v.Detail = err.Error()
			return s.s.Replies.Err(ReplyBadSender, v)
		}
		addrs = append(addrs, sa[0])
	}
	for _, a := range addrs {
		if !s.s.Policy.MaySend(s.pacc, s.c.client.Addr(), a) {
			v.Address = a
			return s.s.Replies.Err(ReplyHeaderRejected, v)
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
