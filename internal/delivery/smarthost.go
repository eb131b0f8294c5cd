package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// SmarthostConfig configures a Smarthost sender.
type SmarthostConfig struct {
	// Addr is the next hop's "host:port" ([delivery] smarthost).
	Addr string
	// TLS is "starttls" (required, certificate verified), "implicit" (TLS
	// from the first byte, certificate verified) or "none"
	// ([delivery] smarthost_tls).
	TLS string
	// User and Password, when User is set, authenticate with AUTH PLAIN.
	// The password is sent only inside TLS, or in clear text to a loopback
	// address when TLS is "none".
	User, Password string
	SessionConfig
}

// Smarthost sends every message to one next hop (SPEC R17), which then does
// the MX routing.
type Smarthost struct {
	cfg SmarthostConfig
	t   target
	d   dialer
}

var _ Sender = (*Smarthost)(nil)

// NewSmarthost returns a smarthost sender, or an error naming a bad setting.
func NewSmarthost(cfg SmarthostConfig) (*Smarthost, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("smarthost %q: must be host:port", cfg.Addr)
	}
	t := target{name: host, addr: cfg.Addr, user: cfg.User, pass: cfg.Password}
	switch cfg.TLS {
	case "starttls", "":
		t.mode = tlsStartTLS
	case "implicit":
		t.mode = tlsImplicit
	case "none":
		t.mode = tlsNone
		t.plainAuthLoopback = true
	default:
		return nil, fmt.Errorf("smarthost_tls %q: must be starttls, implicit or none", cfg.TLS)
	}
	d := newDialer(&cfg.SessionConfig)
	return &Smarthost{cfg: cfg, t: t, d: d}, nil
}

// Deliver sends m to the smarthost. Whatever keeps the smarthost from taking
// the message (unreachable, TLS, AUTH refused) defers every recipient: it is
// the operator's to fix, not the sender's.
func (s *Smarthost) Deliver(ctx context.Context, m *Message) []Result {
	log := s.cfg.Log.With("domain", m.Domain, "from", m.From, "smarthost", s.cfg.Addr)
	res, info, err := s.d.attempt(ctx, m, s.t)
	logAttempt(log, s.t, info, res, err)
	var he *hostError
	if err != nil && errors.As(err, &he) {
		return fill(m, Temporary, errorReply(err), s.t.label())
	}
	return withTLS(res, info)
}

// CloseIdle ends the sessions waiting for a message and keeps no more.
func (s *Smarthost) CloseIdle() { s.d.pool.shutdown() }
