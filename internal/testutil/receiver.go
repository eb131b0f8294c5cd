package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Receiver is an SMTP server for tests, built on go-smtp's server, standing in
// for a remote MX or a smarthost. It records every message it accepts, and the
// test decides per recipient what it answers.
//
// Everything is recorded before the reply to the end of DATA is sent, so once a
// client has its 250 the message is in Messages.
type Receiver struct {
	// Addr is the "ip:port" the receiver listens on.
	Addr string
	// Port is the port of Addr.
	Port int
	// Pool trusts the receiver's certificate (nil without TLS), for clients
	// that verify it.
	Pool *x509.CertPool

	opts ReceiverOptions
	srv  *smtp.Server

	mu       sync.Mutex
	msgs     []Received
	conns    int
	closed   int // sessions ended
	datas    int // message data offered, over all connections
	attempts map[string]int
	rcptErr  map[string]*smtp.SMTPError
	log      []string
}

// ReceiverOptions configure a Receiver. The zero value is a plain receiver on
// 127.0.0.1 with a free port that accepts every message without TLS or AUTH.
type ReceiverOptions struct {
	// Addr is where to listen; default "127.0.0.1:0". Any 127.0.0.0/8 address
	// works on Linux, so several receivers can share a port on different
	// addresses (see ListenSamePort).
	Addr string
	// Listener, when set, is used instead of listening on Addr.
	Listener net.Listener
	// STARTTLS offers STARTTLS with a certificate generated for CertHosts.
	STARTTLS bool
	// ImplicitTLS speaks TLS from the first byte (port-465 style).
	ImplicitTLS bool
	// TLSConfig, when set, replaces the generated TLS configuration (e.g. to
	// offer STARTTLS with settings no client accepts); Pool is then nil.
	TLSConfig *tls.Config
	// CertHosts are the DNS names and IP addresses the certificate is for;
	// default "localhost" and "127.0.0.1".
	CertHosts []string
	// User and Password, when User is set, offer AUTH PLAIN and require it
	// before MAIL; wrong credentials get 535 5.7.8.
	User, Password string
	// AllowInsecureAuth offers AUTH outside TLS.
	AllowInsecureAuth bool
	// SMTPUTF8 advertises and accepts SMTPUTF8 (RFC 6531).
	SMTPUTF8 bool
	// DSN advertises and accepts the DSN parameters (RFC 3461), which
	// Received then records.
	DSN bool
	// REQUIRETLS advertises and accepts REQUIRETLS (RFC 8689), which
	// Received then records.
	REQUIRETLS bool
	// MaxMessageBytes is advertised in SIZE and enforced; 0: no limit.
	MaxMessageBytes int64
	// MaxRcpts, when set, accepts at most that many recipients per
	// transaction: a further RCPT TO gets "452 4.5.3" (RFC 5321
	// §4.5.3.1.10) until the next MAIL FROM. 0: no limit.
	MaxRcpts int
	// EHLOError, when set, is the reply to EHLO/HELO (go-smtp sends its
	// greeting before the backend is asked, so this is the earliest refusal a
	// receiver can give).
	EHLOError *smtp.SMTPError
	// MailError, when set, is the reply to every MAIL FROM.
	MailError *smtp.SMTPError
	// RcptHook, when set, decides the reply to RCPT TO: it gets the
	// recipient and how many times it has been offered before (0 the first
	// time) and returns nil to accept. It is consulted after SetRcptError.
	RcptHook func(rcpt string, attempt int) *smtp.SMTPError
	// DataError, when set, is the reply at the end of DATA; the message is
	// then not recorded.
	DataError *smtp.SMTPError
	// DataHook, when set, decides the reply at the end of DATA (after
	// DataError): it gets the message and returns nil to accept and record
	// it. It may block, e.g. to stand for a server that has the data but
	// hangs before answering; the receiver stops only once it returns.
	DataHook func(m Received) *smtp.SMTPError
	// IdleTimeout, when set, makes the receiver close a connection on
	// which no command came for that long (go-smtp answers 421 first);
	// default 30s.
	IdleTimeout time.Duration
	// CloseAfter, when set, makes the receiver close a connection that has
	// carried that many messages as soon as the client starts another
	// transaction: MAIL FROM gets no reply, as from a server that limits
	// messages per connection and hangs up abruptly.
	CloseAfter int
	// DropInData, when set, is asked for the n-th message data offered
	// (1 the first, over all connections); true: the receiver reads a
	// little of it and closes the connection, nothing recorded, no reply.
	DropInData func(n int) bool
	// DropAfterData, when set, is asked like DropInData; true: the
	// receiver reads and records the whole message, then closes the
	// connection instead of replying, so the client cannot know it
	// arrived.
	DropAfterData func(n int) bool
}

// Received is one message a Receiver accepted.
type Received struct {
	// From is the MAIL FROM address ("" for the null sender).
	From string
	// Rcpts are the accepted RCPT TO addresses, in order.
	Rcpts []string
	// Data is the message content as received (dot-unstuffed, CRLF lines).
	Data []byte
	// Helo is the name the client gave in EHLO/HELO.
	Helo string
	// TLS says whether the transaction ran inside TLS.
	TLS bool
	// AuthUser is the user the client authenticated as, "" if none.
	AuthUser string
	// Size is the SIZE= parameter of MAIL FROM, 0 if none.
	Size int64
	// Ret and EnvID are the RET= and ENVID= parameters of MAIL FROM.
	Ret, EnvID string
	// Notify and ORcpt are the NOTIFY= (joined with ",") and ORCPT=
	// ("type;address") parameters of each recipient that had them.
	Notify, ORcpt map[string]string
	// RequireTLS says MAIL FROM had REQUIRETLS.
	RequireTLS bool
}

// NewReceiver starts a receiver; it stops when the test ends.
func NewReceiver(t testing.TB, opts ReceiverOptions) *Receiver {
	t.Helper()
	r := &Receiver{opts: opts, attempts: map[string]int{}, rcptErr: map[string]*smtp.SMTPError{}}
	s := smtp.NewServer(smtp.BackendFunc(r.newSession))
	s.Domain = "receiver.test"
	s.ReadTimeout = 30 * time.Second
	if opts.IdleTimeout > 0 {
		s.ReadTimeout = opts.IdleTimeout
	}
	s.WriteTimeout = 30 * time.Second
	s.MaxMessageBytes = opts.MaxMessageBytes
	s.MaxRecipients = opts.MaxRcpts
	s.AllowInsecureAuth = opts.AllowInsecureAuth
	s.EnableSMTPUTF8 = opts.SMTPUTF8
	s.EnableDSN = opts.DSN
	s.EnableREQUIRETLS = opts.REQUIRETLS
	s.ErrorLog = logFunc(r.logf)
	var tlsConf *tls.Config
	if opts.STARTTLS || opts.ImplicitTLS {
		hosts := opts.CertHosts
		if len(hosts) == 0 {
			hosts = []string{"localhost", "127.0.0.1"}
		}
		cert, pool := NewCert(t, hosts...)
		r.Pool = pool
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if opts.TLSConfig != nil {
		tlsConf, r.Pool = opts.TLSConfig, nil
	}
	if opts.STARTTLS {
		s.TLSConfig = tlsConf
	}
	ln := opts.Listener
	if ln == nil {
		addr := opts.Addr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		var err error
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("receiver: listen %s: %v", addr, err)
		}
	}
	r.Addr = ln.Addr().String()
	r.Port = ln.Addr().(*net.TCPAddr).Port
	if opts.ImplicitTLS {
		ln = tls.NewListener(ln, tlsConf)
	}
	r.srv = s
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return r
}

// SetRcptError makes RCPT TO:<rcpt> answer with e (nil: accept again).
// Recipients compare case-insensitively.
func (r *Receiver) SetRcptError(rcpt string, e *smtp.SMTPError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e == nil {
		delete(r.rcptErr, strings.ToLower(rcpt))
		return
	}
	r.rcptErr[strings.ToLower(rcpt)] = e
}

// Messages returns the accepted messages so far, in order.
func (r *Receiver) Messages() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.msgs...)
}

// Connections returns how many SMTP sessions reached EHLO/HELO.
func (r *Receiver) Connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}

// Closed returns how many of the sessions that got past EHLO/HELO have
// ended.
func (r *Receiver) Closed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// ErrorLog returns what go-smtp's server logged (handshake failures etc.).
func (r *Receiver) ErrorLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

func (r *Receiver) logf(line string) {
	r.mu.Lock()
	r.log = append(r.log, line)
	r.mu.Unlock()
}

// logFunc adapts a function to go-smtp's Logger.
type logFunc func(line string)

func (f logFunc) Printf(format string, v ...any) { f(fmt.Sprintf(format, v...)) }
func (f logFunc) Println(v ...any)               { f(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (r *Receiver) newSession(c *smtp.Conn) (smtp.Session, error) {
	r.mu.Lock()
	r.conns++
	r.mu.Unlock()
	if r.opts.EHLOError != nil {
		return nil, r.opts.EHLOError
	}
	_, isTLS := c.TLSConnectionState()
	return &rsession{r: r, helo: c.Hostname(), tls: isTLS, conn: c.Conn()}, nil
}

type rsession struct {
	r    *Receiver
	helo string
	tls  bool
	user string
	cur  Received
	// conn is the connection, for the options that hang up on the client.
	conn net.Conn
	// done counts the messages accepted on this connection.
	done int
}

var _ smtp.AuthSession = (*rsession)(nil)

func (s *rsession) AuthMechanisms() []string {
	if s.r.opts.User == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *rsession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || s.r.opts.User == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if (identity != "" && identity != user) || user != s.r.opts.User || pass != s.r.opts.Password {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication failed"}
		}
		s.user = user
		return nil
	}), nil
}

func (s *rsession) Mail(from string, opts *smtp.MailOptions) error {
	if s.r.opts.User != "" && s.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	if s.r.opts.MailError != nil {
		return s.r.opts.MailError
	}
	if n := s.r.opts.CloseAfter; n > 0 && s.done >= n {
		s.conn.Close()
		return errors.New("connection closed by the test receiver")
	}
	s.cur = Received{From: from, Helo: s.helo, TLS: s.tls, AuthUser: s.user}
	if opts != nil {
		s.cur.Size = opts.Size
		s.cur.Ret, s.cur.EnvID = string(opts.Return), opts.EnvelopeID
		s.cur.RequireTLS = opts.RequireTLS
	}
	return nil
}

func (s *rsession) Rcpt(to string, opts *smtp.RcptOptions) error {
	key := strings.ToLower(to)
	s.r.mu.Lock()
	n := s.r.attempts[key]
	s.r.attempts[key] = n + 1
	e := s.r.rcptErr[key]
	s.r.mu.Unlock()
	if e != nil {
		return e
	}
	if h := s.r.opts.RcptHook; h != nil {
		if e := h(to, n); e != nil {
			return e
		}
	}
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	if opts != nil && len(opts.Notify) > 0 {
		var n []string
		for _, k := range opts.Notify {
			n = append(n, string(k))
		}
		if s.cur.Notify == nil {
			s.cur.Notify = map[string]string{}
		}
		s.cur.Notify[to] = strings.Join(n, ",")
	}
	if opts != nil && opts.OriginalRecipient != "" {
		if s.cur.ORcpt == nil {
			s.cur.ORcpt = map[string]string{}
		}
		s.cur.ORcpt[to] = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
	}
	return nil
}

func (s *rsession) Data(rd io.Reader) error {
	s.r.mu.Lock()
	s.r.datas++
	n := s.r.datas
	s.r.mu.Unlock()
	if h := s.r.opts.DropInData; h != nil && h(n) {
		io.CopyN(io.Discard, rd, 1024)
		s.conn.Close()
		return errors.New("connection dropped in the data by the test receiver")
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if s.r.opts.DataError != nil {
		return s.r.opts.DataError
	}
	m := s.cur
	m.Data = b
	m.Rcpts = append([]string(nil), m.Rcpts...)
	if h := s.r.opts.DataHook; h != nil {
		if e := h(m); e != nil {
			return e
		}
	}
	s.r.mu.Lock()
	s.r.msgs = append(s.r.msgs, m)
	s.r.mu.Unlock()
	s.done++
	if h := s.r.opts.DropAfterData; h != nil && h(n) {
		s.conn.Close()
		return errors.New("connection dropped after the data by the test receiver")
	}
	return nil
}

func (s *rsession) Reset() { s.cur = Received{} }

func (s *rsession) Logout() error {
	s.r.mu.Lock()
	s.r.closed++
	s.r.mu.Unlock()
	return nil
}

// NewCert makes a self-signed certificate for hosts (DNS names or IP
// addresses) and a pool that trusts it.
func NewCert(t testing.TB, hosts ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	return NewCertUntil(t, time.Now().Add(24*time.Hour), hosts...)
}

// NewCertUntil is NewCert with a certificate that expires at notAfter.
func NewCertUntil(t testing.TB, notAfter time.Time, hosts ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	tmpl := certTemplate(hosts[0], hosts)
	tmpl.NotAfter = notAfter
	tmpl.KeyUsage |= x509.KeyUsageCertSign
	tmpl.IsCA = true
	cert := signCert(t, tmpl, nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return cert, pool
}

// certTemplate is a certificate for hosts (DNS names or IP addresses)
// valid from an hour ago for a day.
func certTemplate(cn string, hosts []string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

// signCert makes a certificate of tmpl with a new key, signed by parent
// and parentKey, or self-signed when parent is nil.
func signCert(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("cert: %v", err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("cert: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("cert: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// CA is a certificate authority for tests: it issues server certificates
// that clients trusting Pool (or the PEM file of PEM) accept.
type CA struct {
	// Cert is the CA's own certificate.
	Cert *x509.Certificate
	// Pool trusts Cert.
	Pool *x509.CertPool
	// PEM is Cert in PEM, as a ca_roots file holds it.
	PEM []byte

	key *ecdsa.PrivateKey
}

// NewCA makes a CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	tmpl := certTemplate("submitd test CA", nil)
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = nil
	tmpl.IsCA = true
	c := signCert(t, tmpl, nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return &CA{Cert: c.Leaf, Pool: pool, key: c.PrivateKey.(*ecdsa.PrivateKey),
		PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Leaf.Raw})}
}

// Issue makes a certificate for hosts signed by the CA; its chain holds
// the CA's certificate after the leaf, as servers send it.
func (ca *CA) Issue(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	c := signCert(t, certTemplate(hosts[0], hosts), ca.Cert, ca.key)
	c.Certificate = append(c.Certificate, ca.Cert.Raw)
	return c
}

// ListenSamePort listens on TCP on each of the given loopback IPs with one
// port common to all, so that a client configured with one remote port (like
// an MX sender) can reach each of them. It fails the test when no common free
// port is found.
func ListenSamePort(t testing.TB, ips ...string) []net.Listener {
	t.Helper()
	var lastErr error
	for try := 0; try < 50; try++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", ips[0], err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				lastErr = err
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(ips) {
			return lns
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatalf("no port free on all of %v: %v", ips, lastErr)
	return nil
}

// FreePort returns a TCP port on which nothing listens on ip at the moment
// of the call: a "connection refused" target.
// A port is never returned twice in one test binary: the kernel may hand a
// port it just freed out again, and a test asking for a port for each of
// several servers must get different ones.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	freePorts.mu.Lock()
	defer freePorts.mu.Unlock()
	if freePorts.used == nil {
		freePorts.used = map[int]bool{}
	}
	for {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", ip, err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !freePorts.used[p] {
			freePorts.used[p] = true
			return p
		}
	}
}

// freePorts is every port FreePort has returned in this test binary.
var freePorts struct {
	// mu guards used.
	mu   sync.Mutex
	used map[int]bool
}
