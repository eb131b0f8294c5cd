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
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"

	"submitd/internal/auth"
	"submitd/internal/directory"
	"submitd/internal/ids"
	"submitd/internal/loginwatch"
	"submitd/internal/policy"
	"submitd/internal/scan"
	"submitd/internal/sessionlog"
	"submitd/internal/spool"
)

// Guard is the brute-force guard as the SMTP side needs it (SPEC R11).
// Blocked is on the path of every connection and command and must not do
// I/O.
type Guard interface {
	// Blocked reports whether ip is blocked now.
	Blocked(ip netip.Addr) bool
	// Begin takes a place for one AUTH attempt from ip in session sid,
	// before its credentials are checked, so that attempts running at once
	// count against the limit too. ok is false when ip's key has no place
	// left: the attempt is refused with the blocked reply, unchecked.
	Begin(ip netip.Addr, sid string) (a Attempt, ok bool)
	// Open reports, taking no place, whether ip's key is below its limit:
	// false when an attempt would be refused with the blocked reply. An
	// answer from the credential cache asks it instead of Begin.
	Open(ip netip.Addr) bool
}

// Attempt is a place taken with Guard.Begin; exactly one of its methods
// settles it.
type Attempt interface {
	// Fail counts the attempt as a failure and reports whether the client
	// is blocked now.
	Fail() (blocked bool)
	// Succeed gives the place back without counting anything.
	Succeed()
}

// LoginWatch counts failed AUTHs per login across all client IPs and
// decides who may still try a login under attack (SPEC R21);
// loginwatch.Watch is one. Its methods run in the AUTH path.
type LoginWatch interface {
	// Check reports whether an attempt at login (normalized) from ip must
	// be refused without a password check, and why.
	Check(ctx context.Context, login string, ip netip.Addr) loginwatch.Decision
	// Failed counts a wrong password for the existing account login.
	Failed(ctx context.Context, login string, ip netip.Addr)
	// Succeeded records that login authenticated from ip.
	Succeeded(ctx context.Context, login string, ip netip.Addr)
}

// Spool is where accepted messages go (SPEC R15). Create assigns the queue id;
// Commit on the writer must make the message durable before returning.
type Spool interface {
	Create(env *spool.Envelope) (MessageWriter, error)
}

// MessageWriter receives one message.
type MessageWriter interface {
	io.Writer
	// Content reads back what was written, for the content scan before
	// Commit (SPEC R22); its error is one writing the message.
	Content() (*io.SectionReader, error)
	Commit() error
	Abort()
}

// Scanner is the content scanner (SPEC R22); scan.Client is one.
type Scanner interface {
	// Scan returns the verdict on m, or why there is none, within the
	// scanner's timeout.
	Scan(ctx context.Context, m *scan.Message) scan.Result
}

// SessionLog receives finished session records (SPEC R13).
type SessionLog interface {
	Save(r *sessionlog.Record)
}

// Refusals gives the connections refused at the greeting session ids that
// support can look up (SPEC R13a); trace.Refusals is one. Refused is on the
// refusal path and does no I/O; reply makes the refusal's line for an id.
type Refusals interface {
	Refused(sid string, ip netip.Addr, listener, key string, reply func(sid string) string) string
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

// Settings are the parts of the server's configuration that a reload may
// change while it serves. A connection takes the settings in force when it
// is accepted and keeps them to its end, so a session never sees its limits
// change under it (the SIZE it was offered, the replies it was given).
type Settings struct {
	// Policy decides which senders an account may use.
	Policy *policy.Policy
	// Replies is the reply table.
	Replies *Replies
	// Auth decides AUTH attempts: directory lookup, credential cache and the
	// bounded hashing pool. Nil makes one on first use from Directory and
	// Verify with the defaults of package auth.
	Auth *auth.Authenticator
	// Limits are the connection limits.
	Limits Limits
	// MinAuthDuration is the least time a failed AUTH attempt takes, so that
	// the reply time does not reveal whether a login exists. A success is
	// not delayed: its reply tells it apart anyway.
	MinAuthDuration time.Duration
	// TrustedProxies may send PROXY headers (SPEC R11b).
	TrustedProxies []netip.Prefix
}

// Server accepts SMTP connections for all listeners.
type Server struct {
	// Settings are those the server starts with; SetSettings replaces
	// them for the connections accepted after it.
	Settings
	// Hostname is used in the greeting and Received headers.
	Hostname string
	// Directory finds accounts.
	Directory directory.Store
	// Guard counts AUTH failures and blocks; nil disables blocking.
	Guard Guard
	// Logins counts failures per login across IPs (SPEC R21); nil counts
	// none.
	Logins LoginWatch
	// Limiter applies the sending limits (SPEC R19); nil has none.
	Limiter Limiter
	// Spool stores accepted messages.
	Spool Spool
	// SessionLog stores session records; nil keeps none.
	SessionLog SessionLog
	// Refusals gives refused connections ids that can be looked up; nil
	// gives them plain ids and records nothing.
	Refusals Refusals
	// Verify checks a password against a stored hash. It is used only when
	// Auth is nil, by the authenticator made then with default settings.
	Verify Hasher
	// AuthKey is the client key that AUTH attempts are queued by, one hash
	// in flight per key (the guard's key, guard.Config.Key). Nil means the
	// IPv4 address or the IPv6 /64.
	AuthKey func(netip.Addr) netip.Prefix
	// defaultAuth is the authenticator made when Auth is nil; authOnce
	// makes it once.
	defaultAuth *auth.Authenticator
	authOnce    sync.Once
	// TLS is the server certificate configuration.
	TLS *tls.Config
	// Log is the server log; session lines carry the session id.
	Log *slog.Logger
	// Now is the clock.
	Now func() time.Time
	// Metrics hears of connections, AUTH outcomes, refusals and queued
	// messages; nil counts nothing.
	Metrics Observer
	// Activity hears of logins and queued messages by account, for the
	// detection of compromised accounts (SPEC R20); nil: nobody.
	Activity Activity
	// Scanner scans every message's content before its 250 (SPEC R22);
	// nil scans nothing. SetScanner replaces it while the server runs.
	Scanner Scanner
	// OnSpam hears of every message the scanner refused or flagged as
	// spam, with rspamd's action: the compromised-account signal (SPEC
	// R22, R20); nil: nobody.
	OnSpam func(account, action string, at time.Time)

	// live are the settings SetSettings gave, nil before the first call.
	live atomic.Pointer[Settings]

	// mu guards the connection accounting below.
	mu sync.Mutex
	// perIP counts open connections by connKey; total counts them all.
	perIP map[netip.Prefix]int
	total int
	// conns are the open connections, closed at the end of Shutdown;
	// sessions counts them until their records are saved.
	conns    map[*conn]struct{}
	sessions sync.WaitGroup
	// closing is set by Shutdown.
	closing atomic.Bool
	// scanSet holds the scanner SetScanner gave, which replaces Scanner.
	scanSet atomic.Pointer[scannerRef]
	// closedAccounts are the accounts CloseAccount holds closed.
	closedAccounts map[string]struct{}
}

// SetSettings puts st in force for every connection accepted from now on;
// open sessions go on with the settings they started with. It is safe to
// call while the server serves (a reload).
func (s *Server) SetSettings(st Settings) { s.live.Store(&st) }

// Open returns how many connections hold a slot of the connection limits.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// CurrentSettings returns the settings new connections get.
func (s *Server) CurrentSettings() *Settings {
	if st := s.live.Load(); st != nil {
		return st
	}
	return &s.Settings
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

// handle prepares one connection before go-smtp greets it: PROXY header,
// limits, and the guard's refusal, which must come before any command
// (SPEC R11).
func (s *Server) handle(raw net.Conn, lc ListenerConfig) {
	sid := ids.Session()
	start := s.now()
	// The settings in force now are the session's to its end.
	set := s.CurrentSettings()
	nc := raw
	if lc.ProxyProtocol {
		var err error
		if nc, err = s.readProxy(raw, set.TrustedProxies); err != nil {
			s.Log.Warn("PROXY header refused", "session", sid, "listener", lc.Name, "peer", raw.RemoteAddr().String(), "err", err)
			s.observer().Connection(lc.Name, "proxy_refused")
			raw.Close()
			return
		}
	}
	ap, err := clientAddr(nc.RemoteAddr())
	if err != nil {
		s.Log.Error("cannot parse client address", "session", sid, "addr", nc.RemoteAddr().String())
		nc.Close()
		return
	}
	ip := ap.Addr()
	vars := Vars{SID: sid, IP: ip.String(), Host: s.Hostname}

	// SPEC R11: a blocked client is refused before the greeting. The check is
	// in memory and comes before anything is set up for the session; the
	// refusal writes no record and no per-connection log line, so a flood
	// of refused connections costs no disk I/O.
	if s.Guard != nil && s.Guard.Blocked(ip) {
		s.refuse(nc, lc, ReplyBlocked, s.refusal(vars, ip, lc, ReplyBlocked, set.Replies), set.Replies)
		return
	}
	if s.closing.Load() {
		s.refuse(nc, lc, ReplyShuttingDown, s.refusal(vars, ip, lc, ReplyShuttingDown, set.Replies), set.Replies)
		return
	}
	stopCtx, stopWork := context.WithCancel(context.Background())
	c := &conn{
		stopCtx:  stopCtx,
		stopWork: stopWork,
		Conn:     nc,
		srv:      s,
		sid:      sid,
		client:   ap,
		set:      set,
		idle:     set.Limits.CommandTimeout,
		expires:  start.Add(set.Limits.SessionTimeout),
		log:      s.Log.With("session", sid, "client", vars.IP, "listener", lc.Name),
		rec: &sessionlog.Record{
			ID: sid, Start: start, Listener: lc.Name,
			ClientIP: vars.IP, ClientPort: int(ap.Port()),
		},
	}
	if key, ok := s.admit(c); !ok {
		vars = s.refusal(vars, ip, lc, key, set.Replies)
		c.log.Warn("connection refused", "reason", key, "refusal", vars.SID)
		s.refuse(nc, lc, key, vars, set.Replies)
		return
	}
	c.log.Info("connected", "port", ap.Port())
	s.observer().Connection(lc.Name, "accepted")
	c.rec.Add("connect", fmt.Sprintf("%s port %d", ip, ap.Port()), "")
	sess := &session{s: s, c: c, lc: lc}
	if lc.ImplicitTLS {
		tc, err := c.handshake(s.TLS)
		if err != nil {
			c.record("tls", "", "TLS handshake failed")
			c.log.Info("session ended: TLS handshake failed", "err", err)
			s.release(c)
			c.Close()
			return
		}
		sess.attach(tc)
		sess.tlsUp(tc)
	} else {
		sess.attach(c)
	}
	sess.serve()
}

// tlsUp notes the TLS state of a session, for Received: and the record.
func (s *session) tlsUp(tc *tls.Conn) {
	st := tc.ConnectionState()
	s.tls = tls.VersionName(st.Version)
	s.cipher = tls.CipherSuiteName(st.CipherSuite)
	s.c.update(func(r *sessionlog.Record) {
		if r.TLS == "" {
			r.TLS = s.tls + " " + s.cipher
		}
	})
}

// clientAddr is the client's address and port, IPv4-mapped addresses
// unmapped.
func clientAddr(a net.Addr) (netip.AddrPort, error) {
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return ap, err
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// refusal gives a connection refused at the greeting with the reply for
// key the session id its refusal is recorded under (SPEC R13a). replies
// is the connection's table, the one refuse then answers from, so that
// the line recorded is the line sent.
func (s *Server) refusal(v Vars, ip netip.Addr, lc ListenerConfig, key string, replies *Replies) Vars {
	if s.Refusals != nil {
		v.SID = s.Refusals.Refused(v.SID, ip, lc.Name, key, func(sid string) string {
			w := v
			w.SID = sid
			return replies.Line(key, w)
		})
	}
	return v
}

// refuse answers a connection with the reply for key in replies and closes
// it. On an implicit-TLS listener the reply goes inside TLS, or the client
// would only see a handshake failure.
func (s *Server) refuse(nc net.Conn, lc ListenerConfig, key string, v Vars, replies *Replies) {
	defer nc.Close()
	s.observer().Connection(lc.Name, key)
	line := replies.Line(key, v)
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
	if s.perIP == nil {
		s.perIP = map[netip.Prefix]int{}
		s.conns = map[*conn]struct{}{}
	}
	// The key is kept for release: a reload may change how IPv6 clients
	// are counted while the connection is open.
	c.key = connKey(c.client.Addr(), c.set.Limits.IPv6Prefix)
	key := c.key
	if s.total >= c.set.Limits.MaxConns {
		return ReplyServerBusy, false
	}
	if s.perIP[key] >= c.set.Limits.MaxConnsPerIP {
		return ReplyTooManyConns, false
	}
	s.total++
	s.perIP[key]++
	s.conns[c] = struct{}{}
	s.sessions.Add(1)
	return "", true
}

// release gives back c's connection slot; later calls do nothing. It comes
// before the session's closing reply, so that a client that has read that
// reply finds its slot free (SPEC R14), and before the record is saved,
// which Shutdown waits for through sessions instead.
func (s *Server) release(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.released {
		return
	}
	c.released = true
	s.total--
	key := c.key
	if s.perIP[key]--; s.perIP[key] <= 0 {
		delete(s.perIP, key)
	}
}

// connKey is what the per-IP connection limit counts by: the IPv4 address,
// or the IPv6 prefix of bits.
func connKey(ip netip.Addr, bits int) netip.Prefix {
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
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
func (s *Server) readProxy(raw net.Conn, proxies []netip.Prefix) (net.Conn, error) {
	peer, err := netip.ParseAddrPort(raw.RemoteAddr().String())
	if err != nil {
		return nil, err
	}
	trusted := false
	for _, p := range proxies {
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

// Shutdown stops accepting and ends the sessions: those waiting for a
// command get a 421 at once, those taking in a message finish it, until ctx
// is done; then what is left is closed. Messages are spooled only with a
// 250, so a session cut here loses nothing the client was told was accepted.
func (s *Server) Shutdown(ctx context.Context) {
	s.closing.Store(true)
	for _, c := range s.openConns() {
		c.interrupt()
	}
	done := make(chan struct{})
	go func() {
		s.sessions.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	for _, c := range s.openConns() {
		c.Close()
	}
	<-done
}

// openConns lists the open connections.
func (s *Server) openConns() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.conns))
}

// conn is one client connection as submitd tracks it: below TLS, so that it
// sees every byte and outlives STARTTLS.
type conn struct {
	net.Conn
	srv *Server
	// sid is the session id (SPEC R12).
	sid string
	// client is the client's address, from PROXY when the listener uses it.
	client netip.AddrPort
	// set are the settings in force when the connection was accepted.
	set *Settings
	// key is what the per-IP limit counts the connection by (connKey).
	key netip.Prefix
	// idle is the longest wait for the client; expires ends the session.
	idle    time.Duration
	expires time.Time
	// log carries the session id in every line.
	log *slog.Logger
	// topConn is the layer the session reads and writes through: this
	// conn, or TLS over it.
	topConn net.Conn
	// released is set once the connection slot is given back; guarded by
	// srv.mu.
	released bool
	// stop is set by Shutdown; a read waiting for a command then ends.
	stop atomic.Bool
	// stopCtx ends when Shutdown interrupts the session: a password check
	// waiting for its turn gives up, so that a server handing over to a
	// new process is not held up by a queue of logins (SPEC R16a: the
	// client gets a temporary failure and comes back).
	stopCtx  context.Context
	stopWork context.CancelFunc

	// mu guards the fields below.
	mu sync.Mutex
	// idleWait is set while the session waits for a command.
	idleWait bool
	rec      *sessionlog.Record
	closed   bool
}

// errShutdown ends a read interrupted by Shutdown.
var errShutdown = errors.New("server shutting down")

// Read applies the idle timeout to every read and the session timeout to the
// whole connection (SPEC R14): a large message on a slow link is bounded by
// its progress, not by one deadline.
func (c *conn) Read(b []byte) (int, error) {
	d := time.Now().Add(c.idle)
	if d.After(c.expires) {
		d = c.expires
	}
	c.Conn.SetReadDeadline(d)
	if c.stop.Load() && c.waiting() {
		return 0, errShutdown
	}
	n, err := c.Conn.Read(b)
	if err != nil && c.stop.Load() && c.waiting() {
		err = errShutdown
	}
	return n, err
}

// Write applies the idle timeout to every write.
func (c *conn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(b)
}

// setIdle marks whether the session waits for a command; it reports false
// when the server is shutting down and the session must not wait.
func (c *conn) setIdle(idle bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idleWait = idle
	return !idle || !c.stop.Load()
}

func (c *conn) waiting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idleWait
}

// interrupt ends a wait for a command, for Shutdown; a session taking in a
// message is left to finish it.
func (c *conn) interrupt() {
	c.stop.Store(true)
	c.stopWork()
	if c.waiting() {
		c.Conn.SetReadDeadline(time.Now())
	}
}

// top is the layer the session reads and writes through.
func (c *conn) top() net.Conn { return c.topConn }

// setTop records the layer the session uses: the tls.Conn once TLS is up.
func (c *conn) setTop(nc net.Conn) { c.topConn = nc }

// handshake runs a server TLS handshake over c within the idle timeout.
func (c *conn) handshake(cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Server(c, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), c.idle)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// Close closes the connection once, saves its session record and gives
// back its slot if the session has not done so already.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.stopWork()
	c.rec.End = c.srv.now()
	c.rec.Add("close", "", "")
	rec := c.rec
	c.mu.Unlock()
	c.srv.release(c)
	c.srv.observer().Closed(rec.Listener)
	err := c.Conn.Close()
	c.log.Info("closed", "duration", rec.End.Sub(rec.Start).Round(time.Millisecond).String(), "account", rec.Account)
	if c.srv.SessionLog != nil {
		c.srv.SessionLog.Save(rec)
	}
	c.srv.forget(c)
	return err
}

// forget drops c from the open connections; Shutdown waits for this, after
// the session record is saved.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	_, ok := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	if ok {
		s.sessions.Done()
	}
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
