// Command ceiling is the reference point of the benchmarks: a go-smtp
// server that does the least a submission server must do (TLS, AUTH PLAIN
// against one password, read the message) and throws the message away. What
// submitd spends beyond it is the price of its checks, its disk writes and
// its bookkeeping.
//
// It listens with STARTTLS on -smtp and implicit TLS on -smtps. Connections
// from -block get "554" right after the TCP accept (after the handshake on
// the implicit-TLS port) and are closed, which is the least work a refusal
// of a blocked client can cost.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func main() {
	smtpAddr := flag.String("smtp", "127.0.0.1:3587", "STARTTLS listener (empty: none)")
	smtpsAddr := flag.String("smtps", "127.0.0.1:3465", "implicit-TLS listener (empty: none)")
	certFile := flag.String("cert", "", "PEM certificate")
	keyFile := flag.String("key", "", "PEM private key")
	password := flag.String("password", "bench-password", "the password every login must give")
	block := flag.String("block", "127.8.0.1/32", "refuse connections from this network (empty: none)")
	flag.Parse()
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("ceiling: %v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}}
	var blocked netip.Prefix
	if *block != "" {
		if blocked, err = netip.ParsePrefix(*block); err != nil {
			log.Fatalf("ceiling: -block: %v", err)
		}
	}
	be := &backend{password: *password}
	for _, l := range []struct {
		addr     string
		implicit bool
	}{{*smtpAddr, false}, {*smtpsAddr, true}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			log.Fatalf("ceiling: %v", err)
		}
		s := newServer(be, tc)
		go func() {
			if err := s.Serve(newFilterListener(ln, blocked, tc, l.implicit)); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Fatalf("ceiling: %v", err)
			}
		}()
		fmt.Fprintf(os.Stderr, "ceiling: listening on %s (implicit TLS %v)\n", ln.Addr(), l.implicit)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}

// newServer is a go-smtp server for be with limits no workload reaches.
func newServer(be *backend, tc *tls.Config) *smtp.Server {
	s := smtp.NewServer(be)
	s.Domain = "ceiling.test"
	s.TLSConfig = tc
	s.MaxMessageBytes = 64 << 20
	s.MaxRecipients = 100
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = time.Minute
	return s
}

// newFilterListener wraps ln: connections from blocked are refused, and
// with implicit the others get TLS from the first byte.
func newFilterListener(ln net.Listener, blocked netip.Prefix, tc *tls.Config, implicit bool) *filterListener {
	fl := &filterListener{Listener: ln, blocked: blocked}
	if implicit {
		fl.tls = tc
	}
	return fl
}

// filterListener refuses blocked clients before go-smtp sees them and wraps
// the others in TLS on an implicit-TLS port.
type filterListener struct {
	net.Listener
	// blocked is the refused network (invalid: none).
	blocked netip.Prefix
	// tls is the implicit-TLS configuration (nil: plain accept).
	tls *tls.Config
}

// Accept returns the next connection that is not refused.
func (l *filterListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if l.blocked.IsValid() && l.blocked.Contains(ap.Addr().Unmap()) {
			go l.refuse(c)
			continue
		}
		if l.tls != nil {
			// go-smtp completes the handshake itself.
			return tls.Server(c, l.tls), nil
		}
		return c, nil
	}
}

// refuse answers 554 and closes.
func (l *filterListener) refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if l.tls != nil {
		tc := tls.Server(c, l.tls)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	io.WriteString(c, "554 5.7.1 Connection refused\r\n")
}

// backend makes sessions that check one password and discard messages.
type backend struct {
	// password is the one accepted.
	password string
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{b: b}, nil }

// session is one SMTP session.
type session struct {
	// b holds the password.
	b *backend
	// authed is set by a successful AUTH.
	authed bool
}

var (
	_ smtp.Backend     = (*backend)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, _, pass string) error {
		if pass != s.b.password {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

func (s *session) Mail(string, *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	return nil
}

func (s *session) Rcpt(string, *smtp.RcptOptions) error { return nil }

func (s *session) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *session) Reset() {}

func (s *session) Logout() error { return nil }
