// Package smtpd is the SMTP side of submitd: listeners, TLS, connection
// limits and the go-smtp session glue. It parses, asks the directory, policy
// and guard packages, and turns their answers into the replies of the reply
// table (replies.go); it holds no policy of its own.
package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"

	"submitd/internal/directory"
	"submitd/internal/ids"
	"submitd/internal/policy"
	"submitd/internal/sessionlog"
	"submitd/internal/spool"
)

// Guard is the brute-force guard as the SMTP side needs it (SPEC R11).
// Blocked is on the path of every connection and must not do I/O.
type Guard interface {
	// Blocked reports whether ip is blocked now.
	Blocked(ip netip.Addr) bool
	// Failure records a failed AUTH from ip in session sid and reports
	// whether ip is blocked as a result.
	Failure(ip netip.Addr, sid string) bool
}

// Spool is where accepted messages go (SPEC R15). Create assigns the queue id;
// Commit on the writer must make the message durable before returning.
type Spool interface {
	Create(env *spool.Envelope) (MessageWriter, error)
}

// MessageWriter receives one message.
type MessageWriter interface {
	io.Writer
	Commit() error
	Abort()
}

// SessionLog receives finished session records (SPEC R13).
type SessionLog interface {
	Save(r *sessionlog.Record)
}

// Hasher verifies passwords; it is password.Verify in production.
type Hasher func(hash, pw string) (bool, error)

// Limits are the per-connection limits (SPEC R14).
type Limits struct {
	// MaxMessageSize is the largest message, advertised in SIZE.
	MaxMessageSize int64
	// MaxRecipients is the most recipients per message.
	MaxRecipients int
	// MaxLineLength is the longest line.
	MaxLineLength int
	// MaxHeaderSize is the largest header section.
	MaxHeaderSize int
	// CommandTimeout is the idle time allowed between reads.
	CommandTimeout time.Duration
	// SessionTimeout is the longest a connection may last.
	SessionTimeout time.Duration
	// MaxConnsPerIP is the most connections from one client address; IPv6
	// clients are counted by their IPv6Prefix, since one host or customer
	// holds a whole /64 and could otherwise open connections without limit.
	MaxConnsPerIP int
	// IPv6Prefix is the prefix length IPv6 clients are counted by; 0 means 64.
	IPv6Prefix int
	// MaxConns is the most connections in all.
	MaxConns int
}

// Server accepts SMTP connections for all listeners.
type Server struct {
	// Hostname is used in the greeting and Received headers.
	Hostname string
	// Directory finds accounts.
	Directory directory.Store
	// Policy decides which senders an account may use.
	Policy *policy.Policy
	// Guard counts AUTH failures and blocks; nil disables blocking.
	Guard Guard
	// Spool stores accepted messages.
	Spool Spool
	// SessionLog stores session records; nil keeps none.
	SessionLog SessionLog
	// Replies is the reply table.
	Replies *Replies
	// Verify checks a password against a stored hash.
	Verify Hasher
	// TLS is the server certificate configuration.
	TLS *tls.Config
	// Limits are the connection limits.
	Limits Limits
	// MinAuthDuration is the least time an AUTH attempt takes, so that the
	// reply time does not reveal whether a login exists.
	MinAuthDuration time.Duration
	// TrustedProxies may send PROXY headers (SPEC R11b).
	TrustedProxies []netip.Prefix
	// Log is the server log; session lines carry the session id.
	Log *slog.Logger
	// Now is the clock.
	Now func() time.Time

	// mu guards the connection accounting below.
	mu sync.Mutex
	// perIP counts open connections by connKey; total counts them all.
	perIP map[netip.Prefix]int
	total int
	// conns are the open connections, closed at the end of Shutdown.
	conns map[*conn]struct{}
	// closing is set by Shutdown.
	closing atomic.Bool
}

// ListenerConfig describes one listener.
type ListenerConfig struct {
	// Name is "smtp", "submission" or "submissions".
	Name string
	// ImplicitTLS starts TLS at connect (port 465 style).
	ImplicitTLS bool
	// AllowPlaintextAuth offers AUTH outside TLS (SPEC R3).
	AllowPlaintextAuth bool
	// ProxyProtocol expects a PROXY header first (SPEC R11b).
	ProxyProtocol bool
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Serve accepts connections on ln until it is closed. A temporary accept
// error, above all running out of file descriptors, is waited out with a
// growing delay (acceptRetry) while open sessions go on; only an error that
// will not pass is returned.
func (s *Server) Serve(ln net.Listener, lc ListenerConfig) error {
	s.mu.Lock()
	if s.perIP == nil {
		s.perIP = map[netip.Prefix]int{}
		s.conns = map[*conn]struct{}{}
	}
	s.mu.Unlock()
	var retry acceptRetry
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !temporaryAcceptError(err) {
				return err
			}
			wait, n := retry.failed(time.Now())
			if n > 0 {
				s.Log.Warn("accept failed, retrying", "listener", lc.Name, "err", err, "errors", n, "retry_in", wait.String())
			}
			time.Sleep(wait)
			continue
		}
		if n, lasted, ok := retry.accepted(time.Now()); ok {
			s.Log.Info("accepting again", "listener", lc.Name, "unreported_errors", n, "after", lasted.Round(time.Millisecond).String())
		}
		go s.handle(raw, lc)
	}
}

// newSMTP makes the go-smtp server for one connection. One per connection
// lets its Debug hook watch that connection's decrypted input (dotCRScanner).
func (s *Server) newSMTP(lc ListenerConfig, c *conn) *smtp.Server {
	srv := smtp.NewServer(&backend{s: s, lc: lc})
	srv.Domain = s.Hostname
	srv.MaxMessageBytes = s.Limits.MaxMessageSize
	srv.MaxRecipients = s.Limits.MaxRecipients
	srv.MaxLineLength = s.Limits.MaxLineLength
	srv.AllowInsecureAuth = lc.AllowPlaintextAuth
	srv.TLSConfig = s.TLS
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogAdapter{c.log}
	srv.Debug = &c.dotCR
	// Timeouts are applied by conn: idle per read, and per session.
	return srv
}

// handle prepares one connection before go-smtp greets it: PROXY header,
// limits, and the guard's refusal, which must come before any command
// (SPEC R11).
func (s *Server) handle(raw net.Conn, lc ListenerConfig) {
	sid := ids.Session()
	start := s.now()
	nc := raw
	if lc.ProxyProtocol {
		var err error
		if nc, err = s.readProxy(raw); err != nil {
			s.Log.Warn("PROXY header refused", "session", sid, "listener", lc.Name, "peer", raw.RemoteAddr().String(), "err", err)
			raw.Close()
			return
		}
	}
	ap, err := netip.ParseAddrPort(nc.RemoteAddr().String())
	if err != nil {
		s.Log.Error("cannot parse client address", "session", sid, "addr", nc.RemoteAddr().String())
		nc.Close()
		return
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	ip := ap.Addr()
	c := &conn{
		Conn:    nc,
		srv:     s,
		sid:     sid,
		client:  ap,
		idle:    s.Limits.CommandTimeout,
		done:    make(chan struct{}),
		expires: start.Add(s.Limits.SessionTimeout),
		log:     s.Log.With("session", sid, "client", ip.String(), "listener", lc.Name),
		rec: &sessionlog.Record{
			ID: sid, Start: start, Listener: lc.Name,
			ClientIP: ip.String(), ClientPort: int(ap.Port()),
		},
	}
	vars := Vars{SID: sid, IP: ip.String()}

	// SPEC R11: a blocked client is refused before the greeting. The check is
	// in memory; the refusal writes no record and no per-connection log line,
	// so a flood of refused connections costs no disk I/O.
	if s.Guard != nil && s.Guard.Blocked(ip) {
		s.refuse(nc, lc, s.Replies.Line(ReplyBlocked, vars))
		return
	}
	if key, ok := s.admit(c); !ok {
		c.log.Warn("connection refused", "reason", key)
		s.refuse(nc, lc, s.Replies.Line(key, vars))
		return
	}
	c.log.Info("connected", "port", ap.Port())
	c.rec.Add("connect", fmt.Sprintf("%s port %d", ip, ap.Port()), "")
	var out net.Conn = c
	if lc.ImplicitTLS {
		out = tls.Server(c, s.TLS)
		c.setTop(out)
	}
	s.newSMTP(lc, c).Serve(&oneConnListener{c: out, addr: raw.LocalAddr(), done: c.done})
}

// refuse answers a connection with one reply line and closes it. On an
// implicit-TLS listener the reply goes inside TLS, or the client would only
// see a handshake failure.
func (s *Server) refuse(nc net.Conn, lc ListenerConfig, line string) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	var w io.Writer = nc
	if lc.ImplicitTLS {
		tc := tls.Server(nc, s.TLS)
		if err := tc.Handshake(); err != nil {
			return
		}
		w = tc
	}
	io.WriteString(w, line+"\r\n")
}

// admit applies the connection limits and registers c; it returns the reply
// key when c must be refused.
func (s *Server) admit(c *conn) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.connKey(c.client.Addr())
	if s.total >= s.Limits.MaxConns {
		return ReplyServerBusy, false
	}
	if s.perIP[key] >= s.Limits.MaxConnsPerIP {
		return ReplyTooManyConns, false
	}
	s.total++
	s.perIP[key]++
	s.conns[c] = struct{}{}
	return "", true
}

func (s *Server) release(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	s.total--
	key := s.connKey(c.client.Addr())
	if s.perIP[key]--; s.perIP[key] <= 0 {
		delete(s.perIP, key)
	}
}

// connKey is what the per-IP connection limit counts by: the IPv4 address,
// or the IPv6 prefix.
func (s *Server) connKey(ip netip.Addr) netip.Prefix {
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	bits := s.Limits.IPv6Prefix
	if bits <= 0 || bits > 128 {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// readProxy reads the PROXY header from a trusted proxy (SPEC R11b). A
// connection from an address that is not a trusted proxy, or without a valid
// header, is refused: on such a listener the peer address is the balancer's,
// and accepting it would count every client as one.
func (s *Server) readProxy(raw net.Conn) (net.Conn, error) {
	peer, err := netip.ParseAddrPort(raw.RemoteAddr().String())
	if err != nil {
		return nil, err
	}
	trusted := false
	for _, p := range s.TrustedProxies {
		if p.Contains(peer.Addr().Unmap()) {
			trusted = true
			break
		}
	}
	if !trusted {
		return nil, fmt.Errorf("%s is not a trusted proxy", peer.Addr())
	}
	br := bufio.NewReader(raw)
	hdr, err := proxyproto.ReadHeaderTimeout(raw, br, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("reading PROXY header: %w", err)
	}
	if hdr.Command.IsLocal() {
		// A v2 LOCAL header or a v1 "PROXY UNKNOWN" is the proxy's own
		// connection, such as a health check; the PROXY protocol
		// specification (§2.1, §2.2) has the receiver use the real
		// addresses then, so it is served as coming from the proxy.
		return &proxiedConn{Conn: raw, r: br, remote: raw.RemoteAddr()}, nil
	}
	src, ok := hdr.SourceAddr.(*net.TCPAddr)
	if !ok || hdr.Command != proxyproto.PROXY {
		return nil, fmt.Errorf("PROXY header carries no TCP source address (command %v)", hdr.Command)
	}
	return &proxiedConn{Conn: raw, r: br, remote: src}, nil
}

// proxiedConn reads through the buffer the PROXY header was read with and
// reports the client address the proxy gave.
type proxiedConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr
}

func (p *proxiedConn) Read(b []byte) (int, error) { return p.r.Read(b) }
func (p *proxiedConn) RemoteAddr() net.Addr       { return p.remote }

// Shutdown stops accepting and waits for open sessions to end until ctx is
// done, then closes what is left. Messages are spooled only with a 250, so a
// session cut here loses nothing the client was told was accepted.
func (s *Server) Shutdown(ctx context.Context) {
	s.closing.Store(true)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := s.total
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	s.mu.Lock()
	open := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

// oneConnListener hands go-smtp a single connection, then reports itself
// closed once that connection has closed.
type oneConnListener struct {
	c    net.Conn
	addr net.Addr
	done chan struct{}
	used bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.used {
		l.used = true
		return l.c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.addr }

// conn is one client connection as submitd tracks it: below TLS, so that it
// sees every byte and outlives STARTTLS.
type conn struct {
	net.Conn
	srv *Server
	// sid is the session id (SPEC R12).
	sid string
	// client is the client's address, from PROXY when the listener uses it.
	client netip.AddrPort
	// idle is the longest wait for the client; expires ends the session.
	idle    time.Duration
	expires time.Time
	// log carries the session id in every line.
	log *slog.Logger

	// closeAfterWrite closes the connection after the next reply is written:
	// used when the guard blocks the client (SPEC R11).
	closeAfterWrite atomic.Bool
	// top is the layer replies are written through; nil means this conn.
	top atomic.Pointer[net.Conn]
	// refused is set once the blocked reply has been sent.
	refused atomic.Bool

	// dotCR sees the connection's decrypted input (see dotCRScanner).
	dotCR dotCRScanner
	// done is closed when the connection closes.
	done chan struct{}

	mu     sync.Mutex
	rec    *sessionlog.Record
	closed bool
}

// Read applies the idle timeout to every read and the session timeout to the
// whole connection (SPEC R14). go-smtp's own per-line deadline would also
// bound a whole DATA transfer, which is wrong for large messages on slow links.
func (c *conn) Read(b []byte) (int, error) {
	d := time.Now().Add(c.idle)
	if d.After(c.expires) {
		d = c.expires
	}
	c.Conn.SetReadDeadline(d)
	n, err := c.Conn.Read(b)
	if n > 0 && c.refuseIfBlocked() {
		// SPEC R11: a session whose client was blocked while it was open
		// gets the refusal at its next command, whatever the command.
		return 0, net.ErrClosed
	}
	return n, err
}

// refuseIfBlocked reports whether the client is blocked and, the first time
// it is, writes the blocked reply through the topmost layer (TLS when the
// session uses it) and closes the connection.
func (c *conn) refuseIfBlocked() bool {
	if c.srv.Guard == nil || !c.srv.Guard.Blocked(c.client.Addr()) {
		return false
	}
	if !c.refused.CompareAndSwap(false, true) {
		return true
	}
	line := c.srv.Replies.Line(ReplyBlocked, Vars{SID: c.sid, IP: c.client.Addr().String()})
	c.record("refused", "client blocked", line)
	c.log.Warn("session ended: client is blocked")
	top := c.top.Load()
	if top == nil {
		top = &c.Conn
	}
	(*top).Write([]byte(line + "\r\n"))
	c.Close()
	return true
}

// setTop records the layer replies go through: the tls.Conn once TLS is up.
func (c *conn) setTop(nc net.Conn) { c.top.Store(&nc) }

// SetReadDeadline ignores go-smtp's deadlines; Read sets its own.
func (c *conn) SetReadDeadline(time.Time) error { return nil }

// SetDeadline sets only the write deadline, for the same reason.
func (c *conn) SetDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(t) }

// Write writes, then closes the connection if a block was decided.
func (c *conn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(b)
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	return n, err
}

// Close closes the connection once and saves its session record.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	c.rec.End = c.srv.now()
	c.rec.Add("close", "", "")
	rec := c.rec
	c.mu.Unlock()
	err := c.Conn.Close()
	c.log.Info("closed", "duration", rec.End.Sub(rec.Start).Round(time.Millisecond).String(), "account", rec.Account)
	if c.srv.SessionLog != nil {
		c.srv.SessionLog.Save(rec)
	}
	// Released last: Shutdown waits for every connection to be released, and
	// the session log must have the record by then.
	c.srv.release(c)
	return err
}

// record adds an event to the session record.
func (c *conn) record(kind, detail, reply string) {
	c.mu.Lock()
	c.rec.Add(kind, detail, reply)
	c.mu.Unlock()
}

// update changes record fields under the lock.
func (c *conn) update(f func(r *sessionlog.Record)) {
	c.mu.Lock()
	f(c.rec)
	c.mu.Unlock()
}

// slogAdapter routes go-smtp's internal error log to slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Println(v ...any)               { a.l.Warn(fmt.Sprint(v...)) }

// SpoolDir adapts a spool directory to Spool.
func SpoolDir(s *spool.Spool) Spool { return spoolDir{s} }

type spoolDir struct{ s *spool.Spool }

func (d spoolDir) Create(env *spool.Envelope) (MessageWriter, error) {
	w, err := d.s.Create(env)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// dotCRScanner watches a connection's input for a line that starts with
// ".\r" not followed by "\n". go-smtp's DATA reader drops those two bytes
// silently, so the session could not see the bare CR; SPEC R16 wants every
// end-of-data lookalike refused, never reinterpreted. It is go-smtp's Debug
// writer, so it also sees replies, which never contain that sequence; and no
// reply is written while DATA content is being read.
type dotCRScanner struct {
	state int32
	hit   atomic.Bool
}

// Write implements io.Writer.
func (d *dotCRScanner) Write(p []byte) (int, error) {
	st := d.state
	for _, b := range p {
		switch {
		case st == 3 && b != '\n':
			d.hit.Store(true)
			st = 0
		case b == '\n':
			st = 1
		case st == 1 && b == '.':
			st = 2
		case st == 2 && b == '\r':
			st = 3
		default:
			st = 0
		}
	}
	d.state = st
	return len(p), nil
}

// take reports whether the sequence was seen since the last call.
func (d *dotCRScanner) take() bool { return d.hit.Swap(false) }
