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
	// MaxConnsPerIP is the most connections from one client address.
	MaxConnsPerIP int
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

	mu      sync.Mutex
	perIP   map[netip.Addr]int
	total   int
	conns   map[*conn]struct{}
	servers []*smtp.Server
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

// Serve accepts connections on ln until it is closed.
func (s *Server) Serve(ln net.Listener, lc ListenerConfig) error {
	srv := smtp.NewServer(&backend{s: s, lc: lc})
	srv.Domain = s.Hostname
	srv.MaxMessageBytes = s.Limits.MaxMessageSize
	srv.MaxRecipients = s.Limits.MaxRecipients
	srv.MaxLineLength = s.Limits.MaxLineLength
	srv.AllowInsecureAuth = lc.AllowPlaintextAuth
	srv.TLSConfig = s.TLS
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogAdapter{s.Log.With("listener", lc.Name)}
	// Timeouts are applied per read by conn (idle) and per session, see conn.

	handoff := &handoffListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
	s.mu.Lock()
	if s.perIP == nil {
		s.perIP = map[netip.Addr]int{}
		s.conns = map[*conn]struct{}{}
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()

	go srv.Serve(handoff)
	defer handoff.Close()

	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go s.handle(raw, lc, handoff)
	}
}

// handle prepares one connection before go-smtp greets it: PROXY header,
// limits, and the guard's refusal, which must come before any command
// (SPEC R11).
func (s *Server) handle(raw net.Conn, lc ListenerConfig, handoff *handoffListener) {
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
	}
	select {
	case handoff.ch <- out:
	case <-handoff.done:
		c.Close()
	}
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
	ip := c.client.Addr()
	if s.total >= s.Limits.MaxConns {
		return ReplyServerBusy, false
	}
	if s.perIP[ip] >= s.Limits.MaxConnsPerIP {
		return ReplyTooManyConns, false
	}
	s.total++
	s.perIP[ip]++
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
	ip := c.client.Addr()
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
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

// Shutdown stops accepting, tells clients 421 at their next command, and waits
// for sessions to end until ctx is done, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) {
	s.closing.Store(true)
	s.mu.Lock()
	servers := append([]*smtp.Server(nil), s.servers...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
			}
		}()
	}
	wg.Wait()
}

// handoffListener gives go-smtp the connections handle has prepared.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoffListener) Addr() net.Addr { return h.addr }

// conn is one client connection as submitd tracks it: below TLS, so that it
// sees every byte and outlives STARTTLS.
type conn struct {
	net.Conn
	srv     *Server
	sid     string
	client  netip.AddrPort
	idle    time.Duration
	expires time.Time
	log     *slog.Logger

	// closeAfterWrite closes the connection after the next reply is written:
	// used when the guard blocks the client (SPEC R11).
	closeAfterWrite atomic.Bool

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
	return c.Conn.Read(b)
}

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
	c.rec.End = c.srv.now()
	c.rec.Add("close", "", "")
	rec := c.rec
	c.mu.Unlock()
	err := c.Conn.Close()
	c.srv.release(c)
	c.log.Info("closed", "duration", rec.End.Sub(rec.Start).Round(time.Millisecond).String(), "account", rec.Account)
	if c.srv.SessionLog != nil {
		c.srv.SessionLog.Save(rec)
	}
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
