// Package tlspolicy decides how outbound mail to a domain must use TLS
// (SPEC R23): DANE (RFC 7672) when the domain's MX records, the MX host's
// address records and its TLSA records are DNSSEC-validated, else the
// domain's MTA-STS policy (RFC 8461) in enforce mode, else opportunistic
// STARTTLS. It knows nothing of SMTP: the DNS, the dialer for policy
// fetches and the clock are given to it, and internal/delivery asks it
// before each host and applies the answer to its STARTTLS.
package tlspolicy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DNS answers the MTA-STS lookups, through the ordinary resolver
// ([delivery] resolver): TXT records and the policy host's addresses.
type DNS interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// SecureDNS answers through a validating resolver ([delivery]
// dnssec_resolver) and says whether the answer carried the AD bit. A name
// that does not exist, or has no records of the type, is no records and
// no error; an error is a failed lookup (SERVFAIL, timeout), which is what
// a validating resolver answers for bogus data.
type SecureDNS interface {
	// MXSecure reports whether the MX answer for domain is validated.
	MXSecure(ctx context.Context, domain string) (bool, error)
	// HostSecure says whether the address records of an MX host are
	// validated, and how its name expands through CNAME records.
	HostSecure(ctx context.Context, host string) (HostAddrs, error)
	// LookupTLSA returns the TLSA records of name ("_25._tcp.mx.example").
	LookupTLSA(ctx context.Context, name string) (recs []TLSA, secure bool, err error)
}

// Config configures a Checker.
type Config struct {
	// DNS answers MTA-STS lookups; nil: no MTA-STS.
	DNS DNS
	// SecureDNS answers DANE lookups; nil: no DANE.
	SecureDNS SecureDNS
	// Roots verify MTA-STS policy hosts and MX hosts under an enforced
	// policy (the system's roots plus [delivery] ca_roots); nil: the
	// system's roots.
	Roots *x509.CertPool
	// PolicyPort is the HTTPS port of policy hosts; default 443. Tests
	// point it at a loopback server.
	PolicyPort int
	// Dial opens connections to policy hosts; nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// FetchTimeout bounds one policy fetch, connection to last byte;
	// default 1 minute (RFC 8461 §3.3 suggests no less).
	FetchTimeout time.Duration
	// MaxCached bounds the domains whose policy is kept when Cache is
	// nil; default 10000.
	MaxCached int
	// Cache keeps the fetched policies; nil: a cache of this Checker's
	// own. The node keeps one over reloads, saved in its store.
	Cache *Cache
	// Results, when set, counts failed policy fetches for the TLS
	// reports (RFC 8460 §4.3.2).
	Results *Results
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Log gets a line per policy fetched or failing; nil discards.
	Log *slog.Logger
}

// Checker looks up and caches TLS policies. It is safe for concurrent use.
type Checker struct {
	cfg Config

	// cache keeps the fetched policies: Config.Cache, or one of its own.
	cache *Cache

	mu         sync.Mutex
	refreshing map[string]bool
	// wg counts background refreshes, for Wait.
	wg sync.WaitGroup
}

// New returns a Checker.
func New(cfg Config) *Checker {
	if cfg.PolicyPort == 0 {
		cfg.PolicyPort = 443
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cache := cfg.Cache
	if cache == nil {
		cache = NewCache(cfg.MaxCached)
	}
	return &Checker{cfg: cfg, cache: cache, refreshing: map[string]bool{}}
}

// Kind says which policy governs TLS with one MX host.
type Kind int

const (
	// Opportunistic: STARTTLS when offered, any certificate, clear text
	// when it fails (RFC 7435).
	Opportunistic Kind = iota
	// DANE: STARTTLS required, certificate checked against TLSA records.
	DANE
	// MTASTS: STARTTLS required, PKIX certificate valid for the host.
	MTASTS
)

func (k Kind) String() string {
	switch k {
	case DANE:
		return "dane"
	case MTASTS:
		return "mta-sts"
	}
	return "opportunistic"
}

// Host is the TLS policy for one MX host.
type Host struct {
	// Kind names the policy; anything but Opportunistic requires TLS and
	// forbids clear text.
	Kind Kind
	// Verify checks the server's certificate during the handshake; nil:
	// any certificate (opportunistic, or DANE with only unusable TLSA
	// records, RFC 7672 §2.2).
	Verify func(cs tls.ConnectionState) error
	// TLSA are the usable TLSA records under DANE, for the log.
	TLSA []TLSA
	// Note says why DANE does not apply to the host although the
	// domain's MX records are validated, when that is not simply the
	// absence of TLSA records; "" otherwise. It is for the log and the
	// delivery history.
	Note string
	// Applied names the policy in the TLS reports.
	Applied
	// Testing is set for a host under an MTA-STS policy in testing mode
	// (RFC 8461 §5): Kind is Opportunistic, mail goes out as without a
	// policy, and the sessions are reported under the policy, with its
	// failures. TestingResult is the failure already known, the host not
	// being in the policy; "" when it is.
	Testing       bool
	TestingResult string
}

// HostError is why a policy rules an MX host out.
type HostError struct {
	// Kind is the policy that rules the host out, Result the RFC 8460
	// §4.3 result type and Applied the policy's name, for TLS reports.
	Kind   Kind
	Result string
	Applied
	// Err says why.
	Err error
}

func (e *HostError) Error() string { return e.Err.Error() }
func (e *HostError) Unwrap() error { return e.Err }

// Domain is the policy of one recipient domain, from which each MX host's
// is derived.
type Domain struct {
	// Name is the recipient domain.
	Name string
	// DANE says the domain's MX records are DNSSEC-validated, so the
	// TLSA records of its MX hosts whose address records are validated
	// too are looked up (RFC 7672 §2.2.1).
	DANE bool

	c *Checker
	// stsOnce looks the MTA-STS policy up, into sts, once (STS).
	stsOnce sync.Once
	sts     *Policy
}

// STS returns the domain's MTA-STS policy in force, nil for none. It is
// looked up at the first MX host that DANE does not govern (SPEC R23:
// DANE first, else MTA-STS), so mail to a domain whose every host DANE
// governs waits for no policy fetch, and a policy host that fails to
// answer is not reported for it.
func (d *Domain) STS(ctx context.Context) *Policy {
	d.stsOnce.Do(func() {
		if d.c.cfg.DNS != nil {
			d.sts = d.c.sts(ctx, d.Name)
		}
	})
	return d.sts
}

// Domain looks up the policy of domain. An error means mail to it cannot
// be sent under its policy now and must be deferred: the validating
// resolver failed on its MX records (RFC 7672 §2.2.1).
func (c *Checker) Domain(ctx context.Context, domain string) (*Domain, error) {
	d := &Domain{Name: domain, c: c}
	if c.cfg.SecureDNS != nil {
		secure, err := c.cfg.SecureDNS.MXSecure(ctx, domain)
		if err != nil {
			return nil, fmt.Errorf("DANE: the validating resolver failed on the MX records of %s: %w", domain, err)
		}
		d.DANE = secure
	}
	return d, nil
}

// Host returns the policy for the MX host name of d. An error means the
// host must not be used (it is not in an enforced MTA-STS policy, or the
// validating resolver failed on its address or TLSA records), and says
// why.
func (d *Domain) Host(ctx context.Context, host string) (Host, error) {
	c := d.c
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	note := ""
	if d.DANE {
		h, applies, err := d.dane(ctx, host)
		if err != nil || applies {
			return h, err
		}
		note = h.Note
	}
	sts := d.STS(ctx)
	if sts != nil && sts.Mode == ModeEnforce {
		// RFC 8461 §4.1: only MX hosts the policy names.
		if !sts.Matches(host) {
			return Host{}, &HostError{Kind: MTASTS, Result: ResultValidationFailure, Applied: STSApplied(sts), Err: fmt.Errorf("MTA-STS: MX host %s is not in the enforced policy of %s", host, d.Name)}
		}
		roots := c.cfg.Roots
		return Host{Kind: MTASTS, Note: note, Applied: STSApplied(sts), Verify: func(cs tls.ConnectionState) error {
			// RFC 8461 §4.2: a certificate valid for the MX host name,
			// chaining to a trusted root, not expired.
			if err := verifyPKIX(cs.PeerCertificates, host, roots, c.cfg.Now()); err != nil {
				return fmt.Errorf("MTA-STS: certificate of %s: %w", host, err)
			}
			return nil
		}}, nil
	}
	if sts != nil && sts.Mode == ModeTesting {
		// RFC 8461 §5: a policy in testing mode is checked and its
		// failures reported (RFC 8460), and the mail delivered as
		// without it.
		h := Host{Kind: Opportunistic, Note: note, Applied: STSApplied(sts), Testing: true}
		if !sts.Matches(host) {
			h.TestingResult = ResultValidationFailure
			h.Note = joinNote(note, fmt.Sprintf("MTA-STS testing: MX host %s is not in the policy of %s", host, d.Name))
		}
		return h, nil
	}
	return Host{Kind: Opportunistic, Note: note}, nil
}

// joinNote joins two notes of a host's policy.
func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// verifyPKIX checks a presented chain for name against roots, as
// crypto/tls would.
func verifyPKIX(chain []*x509.Certificate, name string, roots *x509.CertPool, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("the server sent no certificate")
	}
	opts := x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: x509.NewCertPool(), CurrentTime: now}
	for _, ic := range chain[1:] {
		opts.Intermediates.AddCert(ic)
	}
	_, err := chain[0].Verify(opts)
	return err
}
