package delivery

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"submitd/internal/tlspolicy"
)

// DialFunc opens a connection; net.Dialer.DialContext has this shape. Tests
// inject one to reach loopback receivers.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// tlsMode is how a session uses TLS.
type tlsMode int

const (
	// tlsNone never starts TLS.
	tlsNone tlsMode = iota
	// tlsOpportunistic starts TLS when offered and accepts any certificate
	// (RFC 3207 §4.1, RFC 7435): encryption against passive eavesdroppers.
	tlsOpportunistic
	// tlsStartTLS requires STARTTLS and a certificate valid for the host.
	tlsStartTLS
	// tlsImplicit speaks TLS from the first byte and verifies the certificate
	// (RFC 8314 §3).
	tlsImplicit
)

// SessionConfig is what every outbound session needs, whoever the next hop
// is; MXConfig and SmarthostConfig embed it.
type SessionConfig struct {
	// Hostname is the name in EHLO ([hostname]); default "localhost".
	Hostname string
	// RootCAs verify certificates; nil: the system's roots.
	RootCAs *x509.CertPool
	// Dial opens connections; nil: a plain net.Dialer.
	Dial DialFunc
	// ConnectTimeout bounds opening one connection; default 30s.
	ConnectTimeout time.Duration
	// Timeout bounds one message's attempt with one host, from the dial
	// (on a kept session, from its RSET) up to the end of the data
	// transfer; the wait for the reply after the final dot and QUIT have
	// only their step limits, so a message that is all out is not given up
	// on (and later sent twice) for the session's length; default 10m.
	Timeout time.Duration
	// Steps bound each step of a session (RFC 5321 §4.5.3.2); zero fields
	// take the RFC's values.
	Steps StepTimeouts
	// Log gets a line per session; nil discards.
	Log *slog.Logger
	// Pool says how connections are kept for further messages.
	Pool PoolConfig
}

// dialer runs sessions with a SessionConfig whose defaults are filled in.
type dialer struct {
	SessionConfig
	// pool keeps sessions between messages.
	pool *pool
}

// newDialer fills the defaults of c (c.Log too, which callers share).
func newDialer(c *SessionConfig) dialer {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	c.Hostname = cmp.Or(c.Hostname, "localhost")
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, 30*time.Second)
	c.Timeout = cmp.Or(c.Timeout, 10*time.Minute)
	c.Pool = c.Pool.withDefaults()
	d := dialer{SessionConfig: *c}
	d.pool = newPool(c.Pool, closeSession)
	return d
}

// target is one host to talk to.
type target struct {
	// name is the host name, for certificate checks and Result.Host.
	name string
	// addr is "ip:port" (or "host:port" for a smarthost) to dial.
	addr string
	// mode is how to use TLS.
	mode tlsMode
	// user and pass, when user is set, authenticate with AUTH PLAIN.
	user, pass string
	// plainAuthLoopback allows AUTH without TLS when the host is named by
	// a loopback address or "localhost" and the connection goes there.
	plainAuthLoopback bool
	// policy is the recipient domain's TLS policy for this host (SPEC
	// R23); anything but Opportunistic comes with mode tlsStartTLS.
	policy tlspolicy.Kind
	// applied names the policy in the TLS reports (tlspolicy.Applied).
	applied tlspolicy.Applied
	// testing is set under an MTA-STS policy in testing mode: the session
	// is opportunistic and reported under the policy, testingResult being
	// the failure known before it starts (tlspolicy.Host.Testing).
	testing       bool
	testingResult string
	// verify, when set, replaces the PKIX check of the certificate: the
	// DANE or MTA-STS check of the policy.
	verify func(tls.ConnectionState) error
	// note says why the domain's DANE policy does not apply to the host
	// (tlspolicy.Host.Note), for the log and the delivery history.
	note string
}

// label names the target in results and logs: "mx.example.com [192.0.2.1]".
func (t target) label() string {
	h, _, err := net.SplitHostPort(t.addr)
	if err != nil || h == t.name {
		return t.name
	}
	return fmt.Sprintf("%s [%s]", t.name, h)
}

// tlsInfo says how a session went as far as TLS is concerned.
type tlsInfo struct {
	// used: the transaction ran inside TLS.
	used bool
	// verified: the certificate is valid for the host name.
	verified bool
	// verifyErr says why it is not, in opportunistic mode.
	verifyErr error
	// handshakeFailed: STARTTLS was tried and failed, so an opportunistic
	// sender may try again in clear text.
	handshakeFailed bool
	// reused: the message went over a session kept from an earlier one,
	// whose TLS details were logged when it was opened.
	reused bool
	// version is the negotiated TLS version, 0 without TLS.
	version uint16
}

// String says how the session was protected, as Result.TLS tells it.
func (i tlsInfo) String() string {
	switch {
	case !i.used:
		return "none"
	case i.verified:
		return tls.VersionName(i.version) + ", certificate verified"
	case i.verifyErr != nil:
		return tls.VersionName(i.version) + ", certificate not verified: " + i.verifyErr.Error()
	}
	return tls.VersionName(i.version) + ", certificate not verified"
}

// withTLS notes in each result how the session that gave it was protected.
func withTLS(res []Result, info tlsInfo) []Result {
	s := info.String()
	for i := range res {
		res[i].TLS = s
	}
	return res
}

// attempt sends m to t over a session of the pool when one is idle, else
// over a new one. It returns the per-recipient results, or a *hostError
// when the host could not take the message and the next one should be
// tried.
//
// A reused session is checked with RSET first (which also ends whatever
// the last transaction left, RFC 5321 §4.1.1.5). When it turns out to be
// dead, or breaks before any recipient has an answer that holds, the
// message goes over a new connection at once: nothing of it was committed,
// so nothing can arrive twice.
func (d *dialer) attempt(ctx context.Context, m *Message, t target) ([]Result, tlsInfo, error) {
	k := keyOf(t)
	s, err := d.pool.get(ctx, k)
	if err != nil {
		return nil, tlsInfo{}, &hostError{fmt.Errorf("waiting for a connection to %s: %w: %w", t.label(), errInterrupted, err)}
	}
	if s != nil {
		res, err, retry := d.reuse(ctx, s, m, t)
		if !retry {
			info := s.info
			info.reused = true
			return res, info, err
		}
		d.Log.Debug("delivery: reused connection failed, opening a new one", "host", t.label(), "err", err)
		// The slot of the dead session goes to its replacement.
	}
	s, err = d.open(ctx, t)
	if err != nil {
		d.pool.release(k)
		var info tlsInfo
		if s != nil {
			info = s.info
		}
		return nil, info, err
	}
	res, err := d.run(ctx, s, m, t)
	return res, s.info, err
}

// reuse sends m over the pooled session s. retry says s was dead or broke
// before the message was committed anywhere; s is then closed but its slot
// is kept for a new connection.
func (d *dialer) reuse(ctx context.Context, s *session, m *Message, t target) (res []Result, err error, retry bool) {
	c := s.c
	// The overall limit runs from here for a message that has a session
	// ready.
	c.end = time.Now().Add(c.total)
	stop := c.watch(ctx)
	// The transaction starts with RSET. The connection stands in for a
	// new one, so the check that it is alive gets no longer than opening
	// one would.
	c.rsetDue, c.rsetFailed = true, false
	c.rsetLimit = min(c.steps.Command, d.ConnectTimeout)
	res, err = c.send(m, t.label())
	var he *hostError
	if err != nil && errors.As(err, &he) && (c.rsetFailed || c.broken && !c.closing) && ctx.Err() == nil {
		stop()
		c.nc.Close()
		return nil, err, true
	}
	d.finish(ctx, s, stop)
	return res, err, false
}

// run sends m over the new session s and then keeps or ends it. The
// overall limit runs from the dial, as open set it.
func (d *dialer) run(ctx context.Context, s *session, m *Message, t target) ([]Result, error) {
	c := s.c
	stop := c.watch(ctx)
	res, err := c.send(m, t.label())
	d.finish(ctx, s, stop)
	return res, err
}

// finish ends a transaction on s: the session goes back to the pool when
// it is sound, else it is closed (with QUIT unless the connection broke).
// stop ends the watch on the attempt's context.
func (d *dialer) finish(ctx context.Context, s *session, stop func() bool) {
	c := s.c
	s.used++
	if !stop() || ctx.Err() != nil {
		// The attempt was cancelled: the connection's deadline is in the
		// past and the conversation may be cut anywhere.
		c.nc.Close()
		d.pool.release(s.key)
		return
	}
	if c.broken || c.closing {
		c.quit()
		d.pool.release(s.key)
		return
	}
	d.pool.put(s)
}

// quitLimit bounds the QUIT of a session the pool ends; nothing depends on
// its answer.
const quitLimit = 10 * time.Second

// closeSession ends a session that leaves the pool.
func closeSession(s *session) {
	s.c.steps.Command = min(s.c.steps.Command, quitLimit)
	s.c.quit()
}

// open dials t and sets up a session: greeting, EHLO, STARTTLS and AUTH as
// t asks. On failure it returns a *hostError and, when the connection got
// that far, the session with its TLS details (closed).
func (d *dialer) open(ctx context.Context, t target) (*session, error) {
	s := &session{key: keyOf(t)}
	info := &s.info
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, d.ConnectTimeout)
	nc, err := dial(dctx, "tcp", t.addr)
	cancel()
	if err != nil {
		return nil, &hostError{fmt.Errorf("connect: %w", err)}
	}
	tconf := &tls.Config{ServerName: t.name, RootCAs: d.RootCAs, MinVersion: tls.VersionTLS12}
	if t.mode == tlsOpportunistic {
		// Accept any certificate, but find out whether it would have
		// passed, for the log.
		tconf.InsecureSkipVerify = true
		tconf.VerifyConnection = func(cs tls.ConnectionState) error {
			info.verifyErr = verifyChain(cs, t.name, d.RootCAs)
			info.verified = info.verifyErr == nil
			return nil
		}
	}
	if t.verify != nil {
		// The policy's check decides, during the handshake: a
		// certificate it refuses ends the connection before any mail
		// is sent (RFC 7672 §2.2, RFC 8461 §4.2).
		tconf.InsecureSkipVerify = true
		tconf.VerifyConnection = func(cs tls.ConnectionState) error {
			info.verifyErr = t.verify(cs)
			info.verified = info.verifyErr == nil
			return info.verifyErr
		}
	}
	if t.mode == tlsImplicit {
		nc = tls.Client(nc, tconf)
	}
	c := newClient(nc, d.Steps)
	s.c = c
	c.total = d.Timeout
	c.end = time.Now().Add(c.total)
	stop := c.watch(ctx)
	err = d.setup(ctx, c, t, tconf, info)
	if !stop() || ctx.Err() != nil {
		c.nc.Close()
		if err == nil {
			err = &hostError{fmt.Errorf("session setup: %w", errInterrupted)}
		}
		return s, err
	}
	if err != nil {
		c.quit()
		return s, err
	}
	return s, nil
}

// setup runs the conversation up to the first transaction.
func (d *dialer) setup(ctx context.Context, c *client, t target, tconf *tls.Config, info *tlsInfo) error {
	if t.mode == tlsImplicit {
		c.step("the TLS handshake", c.steps.Command, true)
		if err := c.nc.(*tls.Conn).HandshakeContext(ctx); err != nil {
			c.broken = true
			return &hostError{c.ioError("TLS handshake", err)}
		}
		info.used, info.verified = true, true
		info.version = c.nc.(*tls.Conn).ConnectionState().Version
		c.tls = true
	}
	if err := c.greet(); err != nil {
		// RFC 5321 §3.1: a 554 greeting means "not here"; like a broken
		// connection, it sends the client to the next host.
		return &hostError{err}
	}
	if err := c.hello(d.Hostname); err != nil {
		return &hostError{err}
	}
	switch {
	case t.mode == tlsStartTLS && !c.has("STARTTLS") && t.policy != tlspolicy.Opportunistic:
		return &hostError{fmt.Errorf("%s: %w", policyName(t.policy), errNoSTARTTLS)}
	case t.mode == tlsStartTLS && !c.has("STARTTLS"):
		return &hostError{errNoSTARTTLS}
	case (t.mode == tlsStartTLS || t.mode == tlsOpportunistic) && c.has("STARTTLS"):
		if err := c.startTLS(tconf, d.Hostname); err != nil {
			var re *replyError
			info.handshakeFailed = !errors.As(err, &re) || re.cmd == "STARTTLS"
			return &hostError{err}
		}
		info.used = true
		if tc, ok := c.nc.(*tls.Conn); ok {
			info.version = tc.ConnectionState().Version
		}
		if t.mode == tlsStartTLS && t.verify == nil {
			info.verified = true
		}
	}
	if t.user != "" {
		if !c.tls && !(t.plainAuthLoopback && isLoopbackName(t.name) && isLoopback(c.conn.RemoteAddr())) {
			return &hostError{errors.New("refusing to send the password without TLS")}
		}
		if !c.has("AUTH") {
			return &hostError{errors.New("AUTH configured but the server does not offer it")}
		}
		if err := c.authPlain(t.user, t.pass); err != nil {
			return &hostError{err}
		}
	}
	return nil
}

// errNoSTARTTLS is the failure of a session that requires TLS with a
// server that does not offer STARTTLS.
var errNoSTARTTLS = errors.New("TLS required but the server does not offer STARTTLS")

// policyName names a TLS policy in a deferral reason.
func policyName(k tlspolicy.Kind) string {
	if k == tlspolicy.MTASTS {
		return "MTA-STS"
	}
	return strings.ToUpper(k.String())
}

// verifyChain checks the peer's certificate chain for name against roots,
// as crypto/tls would without InsecureSkipVerify.
func verifyChain(cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: x509.NewCertPool()}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

// isLoopbackName reports whether the configured host names this machine.
func isLoopbackName(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isLoopback reports whether the connection really goes to this machine.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// fill returns one result per recipient of m, all with st and reply.
func fill(m *Message, st Status, reply, host string) []Result {
	out := make([]Result, len(m.Rcpts))
	for i, r := range m.Rcpts {
		out[i] = Result{Rcpt: r, Status: st, Reply: reply, Host: host}
	}
	return out
}

// errorReply is the Reply text of a host-level failure: the remote reply
// when there was one, else what went wrong.
func errorReply(err error) string {
	var re *replyError
	if errors.As(err, &re) {
		return re.reply.String()
	}
	return err.Error()
}
