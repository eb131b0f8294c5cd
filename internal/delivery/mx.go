package delivery

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"time"

	"submitd/internal/tlspolicy"
)

// MaxAddresses bounds how many addresses one delivery attempt connects to, over
// all MX hosts, so a domain with dozens of dead MX addresses cannot hold a
// worker for hours (RFC 5321 §5.1 lets a sender cap this).
const MaxAddresses = 10

// MaxHosts bounds how many MX hosts, the most preferred, one delivery attempt
// looks at. Each costs DNS lookups (its addresses, and under DANE its TLSA
// records) before any connection counts against MaxAddresses, and a domain's
// MX answer can name thousands (64 KB over TCP), where a real domain names a
// handful.
const MaxHosts = MaxAddresses

// MXConfig configures an MX sender.
type MXConfig struct {
	SessionConfig
	// Resolver answers the DNS questions; nil: the system's DNS server.
	Resolver *Resolver
	// Port is the remote SMTP port ([delivery] port); default 25.
	Port int
	// VerifyTLS requires STARTTLS with a certificate valid for the MX host
	// name ([delivery] tls = "verify"); otherwise STARTTLS is used when
	// offered and any certificate is accepted.
	VerifyTLS bool
	// Policy, when set, gives each recipient domain's TLS policy (SPEC
	// R23): DANE or an enforced MTA-STS policy make TLS with a checked
	// certificate a condition of delivery to a host.
	Policy *tlspolicy.Checker
	// Now is the clock of the back-off; nil: time.Now.
	Now func() time.Time
	// TLSResults, when set, counts each new session's TLS outcome under
	// its domain's policy for the daily TLS reports (RFC 8460).
	TLSResults *tlspolicy.Results
}

// MX delivers to the recipient domain's mail exchangers (SPEC R17): MX
// records by preference, the domain's own address when it has none (RFC 5321
// §5.1), opportunistic or verified STARTTLS.
type MX struct {
	cfg     MXConfig
	res     *Resolver
	d       dialer
	shuffle func(n int, swap func(i, j int))
	// bo keeps the MX hosts that asked to slow down.
	bo *backoffs
}

var _ Sender = (*MX)(nil)

// NewMX returns an MX sender.
func NewMX(cfg MXConfig) *MX {
	d := newDialer(&cfg.SessionConfig)
	cfg.Port = cmp.Or(cfg.Port, 25)
	res := cfg.Resolver
	if res == nil {
		res = &Resolver{}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	bo := newBackoffs(d.Pool.MaxPerDestination, now)
	d.pool.limit = bo.limit
	return &MX{cfg: cfg, res: res, d: d, shuffle: rand.Shuffle, bo: bo}
}

// Backoffs returns the MX hosts in back-off: those that asked to slow
// down (a 421 or a 4.7.x reply) within the last pause and quiet time.
func (x *MX) Backoffs() []Backoff { return x.bo.list() }

// routeError is a failure to find where to deliver.
type routeError struct {
	status Status
	reply  string
	// code is the RFC 3463 code for the DSN, when there is a fitting one.
	code string
}

func (e *routeError) Error() string { return e.reply }

// Hosts returns the hosts to try for domain, best first: its MX hosts by
// preference, in random order among equal preferences (RFC 5321 §5.1), at most
// MaxHosts of them, or the domain itself when it has no MX records. A null MX, a domain that does not
// exist and a domain without MX or address records are permanent failures;
// a DNS failure is temporary.
func (x *MX) Hosts(ctx context.Context, domain string) ([]string, error) {
	mxs, err := x.res.LookupMX(ctx, domain)
	if err != nil {
		var de *DNSError
		if errors.As(err, &de) && de.NotFound {
			return nil, &routeError{Permanent, fmt.Sprintf("domain %s does not exist (NXDOMAIN)", domain), "5.1.2"}
		}
		return nil, &routeError{Temporary, fmt.Sprintf("DNS lookup failed: %v", err), "4.4.3"}
	}
	if len(mxs) == 0 {
		// RFC 5321 §5.1: no MX records means an implicit MX of preference
		// 0 at the domain itself, if it has an address.
		addrs, err := x.res.LookupIP(ctx, domain)
		if err != nil {
			var de *DNSError
			if errors.As(err, &de) && de.Temporary() {
				return nil, &routeError{Temporary, fmt.Sprintf("DNS lookup failed: %v", err), "4.4.3"}
			}
		}
		if len(addrs) == 0 {
			return nil, &routeError{Permanent, fmt.Sprintf("domain %s has no MX or address records", domain), "5.1.2"}
		}
		return []string{domain}, nil
	}
	// RFC 7505 §3: a single MX of "." means the domain accepts no mail. A
	// null MX next to real ones is a misconfiguration; the real ones are used.
	real := mxs[:0:0]
	for _, mx := range mxs {
		if mx.Host != "" {
			real = append(real, mx)
		}
	}
	if len(real) == 0 {
		return nil, &routeError{Permanent, "domain does not accept mail (null MX, RFC 7505)", "5.1.10"}
	}
	x.shuffle(len(real), func(i, j int) { real[i], real[j] = real[j], real[i] })
	slices.SortStableFunc(real, func(a, b MXRecord) int { return cmp.Compare(a.Pref, b.Pref) })
	hosts := make([]string, 0, min(len(real), MaxHosts))
	for _, mx := range real {
		if len(hosts) == MaxHosts {
			break
		}
		if !slices.Contains(hosts, mx.Host) {
			hosts = append(hosts, mx.Host)
		}
	}
	return hosts, nil
}

// Deliver sends m to the MX hosts of m.Domain, one after the other, until one
// gives every recipient an answer. When none does, every recipient is
// deferred with the last failure.
func (x *MX) Deliver(ctx context.Context, m *Message) []Result {
	log := x.cfg.Log.With("domain", m.Domain, "from", m.From)
	mode := tlsOpportunistic
	if x.cfg.VerifyTLS {
		mode = tlsStartTLS
	}
	var dom *tlspolicy.Domain
	if x.cfg.Policy != nil && !(m.TLSOptional && !m.RequireTLS) {
		var err error
		if dom, err = x.cfg.Policy.Domain(ctx, m.Domain); err != nil {
			// SPEC R23: mail is not sent while its domain's policy
			// cannot be known.
			log.Info("delivery: TLS policy unknown", "err", err)
			return fill(m, Temporary, err.Error(), "")
		}
	}
	if k, ok := x.d.pool.route(m.Domain); ok {
		// A session to one of the domain's MX hosts took a message for
		// it moments ago (the pool keeps it at most its idle timeout):
		// the message goes the same way without asking the DNS again,
		// if the domain's TLS policy for that host is still the one the
		// session was set up under. Should that fail, the whole MX walk
		// follows.
		t, perr := x.target(ctx, dom, k.name, k.addr, mode)
		_, paused := x.bo.paused(k.name)
		if perr == nil && keyOf(t) == k && !paused && !(m.RequireTLS && t.policy == tlspolicy.Opportunistic) {
			res, err := x.try(ctx, m, t, log)
			if err == nil {
				return res
			}
			if ctx.Err() != nil {
				return fill(m, Temporary, fmt.Sprintf("delivery interrupted: %v", ctx.Err()), t.label())
			}
		}
	}
	hosts, err := x.Hosts(ctx, m.Domain)
	if err != nil {
		re := err.(*routeError)
		log.Info("delivery: no route", "status", re.status, "reason", re.reply)
		out := fill(m, re.status, re.reply, "")
		for i := range out {
			out[i].Code = re.code
		}
		return out
	}
	var lastErr error
	lastHost := ""
	// onlyRequireTLS stays true while every host failed for the
	// REQUIRETLS conditions alone, which makes the failure permanent
	// (RFC 8689 §4.2.1: the message is returned, not sent otherwise).
	onlyRequireTLS := m.RequireTLS
	tried := 0
	for hi, h := range hosts {
		if tried == MaxAddresses || ctx.Err() != nil {
			break
		}
		// Every MX host gets at least one address before the cap is
		// reached, so many dead addresses of a preferred host cannot keep
		// the backup hosts from being tried: the budget left after this
		// host keeps one address for each later one.
		limit := max(tried+1, MaxAddresses-(len(hosts)-1-hi))
		if b, ok := x.bo.paused(h); ok {
			// The host asked to slow down: no connection until its
			// pause is over; another MX host may take the message.
			lastErr = fmt.Errorf("%s asked to slow down (%s); back-off until %s", h, b.Reason, b.Until.UTC().Format(time.RFC3339))
			lastHost, onlyRequireTLS = h, false
			continue
		}
		ht, err := x.target(ctx, dom, h, "", mode)
		if err != nil {
			// The domain's policy rules this host out (SPEC R23): the
			// reason is the deferral's, should no other host take the
			// message.
			log.Info("delivery: MX host not usable under the TLS policy", "host", h, "err", err)
			var pe *tlspolicy.HostError
			if x.cfg.TLSResults != nil && errors.As(err, &pe) {
				x.cfg.TLSResults.Add(x.now(), tlspolicy.Session{Domain: m.Domain, Kind: pe.Kind, MXHost: h, Result: pe.Result, Applied: pe.Applied})
			}
			lastErr, lastHost, onlyRequireTLS = err, h, false
			continue
		}
		if m.RequireTLS && ht.policy == tlspolicy.Opportunistic {
			lastErr, lastHost = errRequireTLSNoPolicy, h
			continue
		}
		addrs, err := x.res.LookupIP(ctx, h)
		if err == nil && len(addrs) == 0 {
			err = fmt.Errorf("MX host %s has no address records", h)
		}
		if err != nil {
			log.Info("delivery: MX host skipped", "host", h, "err", err)
			lastErr, lastHost, onlyRequireTLS = err, h, false
			continue
		}
		for _, a := range addrs {
			if tried == limit || ctx.Err() != nil {
				break
			}
			tried++
			t := ht
			t.addr = hostPort(a, x.cfg.Port)
			res, herr := x.try(ctx, m, t, log)
			if herr == nil {
				return res
			}
			lastErr, lastHost = herr, target{name: h, addr: hostPort(a, x.cfg.Port)}.label()
			onlyRequireTLS = onlyRequireTLS && errors.Is(herr, errRequireTLSUnsupported)
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no MX host could be tried")
	}
	if ctx.Err() != nil {
		lastErr = fmt.Errorf("delivery interrupted: %w", ctx.Err())
		onlyRequireTLS = false
	}
	if onlyRequireTLS && lastErr != nil {
		out := fill(m, Permanent, lastErr.Error(), lastHost)
		code := "5.7.10"
		if errors.Is(lastErr, errRequireTLSUnsupported) {
			code = "5.7.30"
		}
		for i := range out {
			out[i].Code = code
		}
		return out
	}
	return fill(m, Temporary, errorReply(lastErr), lastHost)
}

// The REQUIRETLS failures (RFC 8689 §4.2.1), with the codes of its §6:
// 5.7.30 for a next hop without REQUIRETLS, 5.7.10 (encryption needed,
// RFC 5248) for a host whose TLS nothing validates.
var (
	errRequireTLSUnsupported = errors.New("REQUIRETLS: the server does not offer REQUIRETLS")
	errRequireTLSNoPolicy    = errors.New("REQUIRETLS: no DANE or MTA-STS policy validates TLS to the MX host")
)

// target is how to reach host at addr under the domain's TLS policy dom
// (nil: none), with mode when the policy leaves TLS opportunistic. An error
// says the policy rules the host out.
func (x *MX) target(ctx context.Context, dom *tlspolicy.Domain, host, addr string, mode tlsMode) (target, error) {
	t := target{name: host, addr: addr, mode: mode}
	if dom == nil {
		return t, nil
	}
	hp, err := dom.Host(ctx, host)
	if err != nil {
		return t, err
	}
	t.note = hp.Note
	if hp.Testing {
		t.testing, t.testingResult, t.applied = true, hp.TestingResult, hp.Applied
	}
	if hp.Kind != tlspolicy.Opportunistic {
		t.mode, t.policy, t.verify, t.applied = tlsStartTLS, hp.Kind, hp.Verify, hp.Applied
		if t.verify == nil {
			// DANE with only unusable TLSA records: TLS is required,
			// any certificate will do (RFC 7672 §2.2).
			t.verify = func(tls.ConnectionState) error { return nil }
		}
	}
	return t, nil
}

// try delivers to one address of one MX host, t; in opportunistic mode a
// failed STARTTLS is followed by a clear-text session with the same
// address, since a server that botches TLS still deserves the mail (RFC 7435
// §3). Only a session set up in t's mode is recorded as the domain's route,
// not such a fallback.
func (x *MX) try(ctx context.Context, m *Message, t target, log *slog.Logger) ([]Result, error) {
	mode := t.mode
	res, info, err := x.d.attempt(ctx, m, t)
	if err != nil && t.mode == tlsOpportunistic && info.handshakeFailed && ctx.Err() == nil {
		log.Info("delivery: STARTTLS failed, retrying without TLS", "host", t.label(), "err", err)
		t.mode = tlsNone
		res, info, err = x.d.attempt(ctx, m, t)
	}
	logAttempt(log, t, info, res, err)
	x.countTLS(m.Domain, t, info, err)
	if reply := slowDownReply(res, err); reply != "" {
		b := x.bo.note(t.name, reply)
		log.Info("delivery: host asked to slow down", "host", t.label(), "reply", reply,
			"until", b.Until, "max_connections", b.MaxConnections, "level", b.Level)
	}
	var he *hostError
	if err != nil && errors.As(err, &he) {
		return nil, err
	}
	if t.mode == mode {
		x.d.pool.setRoute(m.Domain, keyOf(t))
	}
	res = withTLS(res, info)
	if t.note != "" {
		for i := range res {
			res[i].TLS += " (" + t.note + ")"
		}
	}
	return res, nil
}

// countTLS counts a new session's TLS outcome for the TLS reports (RFC
// 8460 §4.3): a success when TLS was set up as the policy wants, else the
// failure's result type; a connection that got nowhere near TLS is no
// TLS session and is not counted.
func (x *MX) countTLS(domain string, t target, info tlsInfo, err error) {
	if x.cfg.TLSResults == nil || info.reused {
		return
	}
	ip, _, _ := net.SplitHostPort(t.addr)
	s := tlspolicy.Session{Domain: domain, Kind: t.policy, MXHost: t.name, ReceivingIP: ip, Applied: t.applied}
	// Under an MTA-STS policy in testing mode the session is judged as
	// the policy would have judged it (RFC 8461 §5): a host outside the
	// policy, a certificate not valid for the host, no STARTTLS.
	opportunistic := t.policy == tlspolicy.Opportunistic && !t.testing
	if t.testing {
		s.Kind = tlspolicy.MTASTS
	}
	switch {
	case t.testingResult != "" && (info.used || err == nil || errors.Is(err, errNoSTARTTLS)):
		s.Result = t.testingResult
	case info.used && (opportunistic || info.verified):
	case info.verifyErr != nil && t.policy == tlspolicy.DANE:
		s.Result = tlspolicy.ResultValidationFailure
	case info.verifyErr != nil:
		s.Result = tlspolicy.CertResult(info.verifyErr)
	case errors.Is(err, errNoSTARTTLS) || err == nil && !info.used:
		s.Result = tlspolicy.ResultStartTLSNotSupported
	default:
		return
	}
	x.cfg.TLSResults.Add(x.now(), s)
}

// now is the sender's clock.
func (x *MX) now() time.Time {
	if x.cfg.Now != nil {
		return x.cfg.Now()
	}
	return time.Now()
}

// slowDownReply returns the reply of an attempt that asks to slow down
// (isSlowDown), "" when none does.
func slowDownReply(res []Result, err error) string {
	if err != nil {
		if r := errorReply(err); isSlowDown(r) {
			return r
		}
	}
	for _, r := range res {
		if r.Status == Temporary && isSlowDown(r.Reply) {
			return r.Reply
		}
	}
	return ""
}

// logAttempt logs how an attempt with one host went: a host that could not
// take the message, and a new session with its TLS details, at Info; the
// per-recipient results at Debug, since the queue logs each of them.
func logAttempt(log *slog.Logger, t target, info tlsInfo, res []Result, err error) {
	attrs := []any{"host", t.label(), "tls", info.used, "tls_verified", info.verified, "tls_policy", t.policy.String()}
	if info.verifyErr != nil {
		attrs = append(attrs, "tls_verify_err", info.verifyErr.Error())
	}
	if t.note != "" {
		attrs = append(attrs, "tls_policy_note", t.note)
	}
	var he *hostError
	if err != nil && errors.As(err, &he) {
		log.Info("delivery: host failed", append(attrs, "err", err)...)
		return
	}
	if !info.reused {
		log.Info("delivery: session opened", attrs...)
	}
	if err != nil {
		log.Info("delivery: message could not be read", append(attrs, "err", err)...)
	}
	for _, r := range res {
		log.Debug("delivery: result", append(attrs, "rcpt", r.Rcpt, "status", r.Status.String(), "reply", r.Reply, "reused", info.reused)...)
	}
}

// CloseIdle ends the sessions waiting for a message and keeps no more.
func (x *MX) CloseIdle() { x.d.pool.shutdown() }
