// Package dnshealth checks what a hosted domain publishes in DNS for its
// mail to be delivered (SPEC R17): its MX, whether its SPF record
// authorizes the provider's outbound addresses (RFC 7208), and its DMARC
// policy and alignment with what submitd signs (RFC 7489); the DKIM record
// is checked where the keys are (internal/admin). For each problem it
// names the exact record to publish. Lookups go through the project's
// resolver, are bounded in time and cached briefly; they are made for
// support's pages and the API, never on the SMTP path.
package dnshealth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"submitd/internal/delivery"
)

// Resolver looks names up; delivery.Resolver is one. An error with a
// Temporary method answering false means the name does not exist.
type Resolver interface {
	LookupMX(ctx context.Context, domain string) ([]delivery.MXRecord, error)
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// notFound reports whether err says the name does not exist.
func notFound(err error) bool {
	var tmp interface{ Temporary() bool }
	return errors.As(err, &tmp) && !tmp.Temporary()
}

// The states of a Check.
const (
	// OK: published as it should be.
	OK = "ok"
	// Problem: missing or wrong; Fix says what to publish.
	Problem = "problem"
	// Unknown: the DNS did not answer, or there is nothing to check
	// against (no outbound addresses configured).
	Unknown = "unknown"
)

// Check is one part of a domain's health.
type Check struct {
	// Status is OK, Problem or Unknown.
	Status string `json:"status"`
	// Name is the DNS name looked up.
	Name string `json:"name"`
	// Found are the records found there.
	Found []string `json:"found"`
	// Message says the result in plain words.
	Message string `json:"message"`
	// Fix is the record to publish, in zone-file syntax, when there is a
	// problem and the record is known.
	Fix string `json:"fix,omitempty"`
}

// Report is a domain's DNS health, without DKIM (see the package comment).
type Report struct {
	// Domain is the domain checked.
	Domain string `json:"domain"`
	// Checked is when the lookups were made (a cached report keeps it).
	Checked time.Time `json:"checked"`
	// MX, SPF and DMARC are the checks.
	MX    Check `json:"mx"`
	SPF   Check `json:"spf"`
	DMARC Check `json:"dmarc"`
}

// Config is what a Checker needs.
type Config struct {
	// Resolver makes the lookups ([delivery] resolver).
	Resolver Resolver
	// SPFInclude is [delivery] spf_include, "" when not set.
	SPFInclude string
	// Outbound are [delivery] outbound_ips.
	Outbound []netip.Prefix
	// Timeout bounds one domain's lookups; default 5s.
	Timeout time.Duration
	// TTL is how long a report is reused; default 2 minutes.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// maxCached bounds the reports kept; past it the cache starts over.
const maxCached = 1000

// Checker checks domains and caches the reports briefly.
type Checker struct {
	cfg Config

	mu    sync.Mutex
	cache map[string]cached
}

// cached is a report and whether its domain is signed, the key of DMARC's
// alignment.
type cached struct {
	rep    *Report
	signed bool
}

// New returns a Checker over cfg.
func New(cfg Config) *Checker {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checker{cfg: cfg, cache: map[string]cached{}}
}

// Check returns domain's health; signed says submitd has a DKIM key for
// the domain, so its mail carries an aligned signature (SPEC R17). A report
// younger than the TTL is reused.
func (c *Checker) Check(ctx context.Context, domain string, signed bool) *Report {
	now := c.cfg.Now()
	c.mu.Lock()
	if e, ok := c.cache[domain]; ok && e.signed == signed && now.Sub(e.rep.Checked) < c.cfg.TTL {
		c.mu.Unlock()
		return e.rep
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	rep := &Report{Domain: domain, Checked: now}
	var wg sync.WaitGroup
	wg.Go(func() { rep.MX = c.mx(ctx, domain) })
	wg.Go(func() { rep.SPF = c.spf(ctx, domain) })
	wg.Go(func() { rep.DMARC = c.dmarc(ctx, domain, signed) })
	wg.Wait()
	c.mu.Lock()
	if len(c.cache) >= maxCached {
		c.cache = map[string]cached{}
	}
	c.cache[domain] = cached{rep: rep, signed: signed}
	c.mu.Unlock()
	return rep
}

// txt is a zone-file TXT record for name.
func txt(name, value string) string { return fmt.Sprintf("%s. TXT %q", name, value) }

// mx checks that the domain receives mail: the reports (DSNs) submitd
// sends back and the replies to what it delivers go there, and receivers
// may refuse mail from a domain that takes none (RFC 7505 §4.3).
func (c *Checker) mx(ctx context.Context, domain string) Check {
	ch := Check{Name: domain, Found: []string{}}
	mxs, err := c.cfg.Resolver.LookupMX(ctx, domain)
	if err != nil && !notFound(err) {
		ch.Status, ch.Message = Unknown, "DNS lookup failed: "+err.Error()
		return ch
	}
	for _, m := range mxs {
		ch.Found = append(ch.Found, fmt.Sprintf("%d %s", m.Pref, cmp.Or(m.Host, ".")))
	}
	switch {
	case len(mxs) == 1 && mxs[0].Host == "":
		ch.Status = Problem
		ch.Message = "null MX (RFC 7505): the domain takes no mail, so bounces and replies to its mail are lost, and receivers may refuse its mail"
		ch.Fix = domain + ". MX 10 <the domain's mailbox server>"
	case len(mxs) == 0:
		ch.Status = Problem
		ch.Message = "no MX record: bounces and replies go to the domain's address record, if it has one, and receivers may refuse its mail"
		ch.Fix = domain + ". MX 10 <the domain's mailbox server>"
	default:
		ch.Status, ch.Message = OK, "mail for the domain goes to "+strings.Join(ch.Found, ", ")
	}
	return ch
}

// providerTerms are the SPF terms that authorize the provider.
func (c *Checker) providerTerms() []string {
	if c.cfg.SPFInclude != "" {
		return []string{"include:" + c.cfg.SPFInclude}
	}
	var out []string
	for _, p := range c.cfg.Outbound {
		kind := "ip4"
		if p.Addr().Is6() {
			kind = "ip6"
		}
		if p.IsSingleIP() {
			out = append(out, kind+":"+p.Addr().String())
		} else {
			out = append(out, kind+":"+p.String())
		}
	}
	return out
}

// spf checks that the domain's SPF record authorizes the provider's
// outbound addresses (RFC 7208 §4): each passes, or the record includes
// [delivery] spf_include.
func (c *Checker) spf(ctx context.Context, domain string) Check {
	ch := Check{Name: domain, Found: []string{}}
	e := &spfEval{res: c.cfg.Resolver}
	txts, err := c.cfg.Resolver.LookupTXT(ctx, domain)
	if err != nil && !notFound(err) {
		ch.Status, ch.Message = Unknown, "DNS lookup failed: "+err.Error()
		return ch
	}
	for _, t := range txts {
		if f := strings.Fields(t); len(f) > 0 && strings.EqualFold(f[0], "v=spf1") {
			ch.Found = append(ch.Found, t)
		}
	}
	terms := c.providerTerms()
	if len(terms) == 0 {
		ch.Status = Unknown
		ch.Message = "the provider's outbound addresses are not configured ([delivery] spf_include or outbound_ips), so the SPF record cannot be checked"
		return ch
	}
	switch len(ch.Found) {
	case 0:
		ch.Status, ch.Message = Problem, "no SPF record: receivers cannot tell that the provider may send the domain's mail"
		ch.Fix = txt(domain, "v=spf1 "+strings.Join(terms, " ")+" ~all")
		return ch
	case 1:
	default:
		ch.Status, ch.Message = Problem, "more than one SPF record, which is an error to receivers (RFC 7208 §4.5): merge them into one"
		ch.Fix = txt(domain, withTerms(ch.Found[0], terms))
		return ch
	}
	if _, err := parseSPF(ch.Found[0]); err != nil {
		ch.Status, ch.Message = Problem, "the SPF record does not parse: "+err.Error()
		ch.Fix = txt(domain, "v=spf1 "+strings.Join(terms, " ")+" ~all")
		return ch
	}
	if c.cfg.SPFInclude != "" && e.includes(ctx, domain, c.cfg.SPFInclude) {
		ch.Status, ch.Message = OK, "the SPF record includes "+c.cfg.SPFInclude+", the provider's outbound addresses"
		return ch
	}
	var bad []string
	for _, p := range c.cfg.Outbound {
		e.lookups = 0
		switch r := e.check(ctx, p.Addr(), domain); r {
		case spfPass:
		case spfTempError:
			ch.Status, ch.Message = Unknown, "DNS lookup failed while evaluating the SPF record"
			return ch
		default:
			bad = append(bad, p.Addr().String()+" ("+r+")")
		}
	}
	if len(c.cfg.Outbound) > 0 && len(bad) == 0 {
		ch.Status, ch.Message = OK, "the SPF record authorizes the provider's outbound addresses"
		return ch
	}
	ch.Status = Problem
	if len(bad) > 0 {
		ch.Message = "the SPF record does not authorize the provider's outbound address(es) " + strings.Join(bad, ", ")
	} else {
		ch.Message = "the SPF record does not include " + c.cfg.SPFInclude
	}
	ch.Fix = txt(domain, withTerms(ch.Found[0], terms))
	return ch
}

// dmarc checks the DMARC record (RFC 7489 §6.1): present, and its
// alignment met by what submitd signs (a DKIM signature with d= the From:
// domain when the domain has a key, §3.1.1).
func (c *Checker) dmarc(ctx context.Context, domain string, signed bool) Check {
	name := "_dmarc." + domain
	ch := Check{Name: name, Found: []string{}}
	txts, err := c.cfg.Resolver.LookupTXT(ctx, name)
	if err != nil && !notFound(err) {
		ch.Status, ch.Message = Unknown, "DNS lookup failed: "+err.Error()
		return ch
	}
	for _, t := range txts {
		if strings.HasPrefix(strings.TrimSpace(t), "v=DMARC1") {
			ch.Found = append(ch.Found, t)
		}
	}
	suggest := txt(name, "v=DMARC1; p=none; rua=mailto:postmaster@"+domain)
	if len(ch.Found) != 1 {
		ch.Status, ch.Fix = Problem, suggest
		ch.Message = "no DMARC record: receivers apply their own policy to mail that fails SPF and DKIM, and the domain gets no reports"
		if len(ch.Found) > 1 {
			ch.Message = "more than one DMARC record, which receivers ignore (RFC 7489 §6.6.3): keep one"
		}
		return ch
	}
	tags := parseTags(ch.Found[0])
	p := strings.ToLower(tags["p"])
	if !slices.Contains([]string{"none", "quarantine", "reject"}, p) {
		ch.Status, ch.Fix = Problem, suggest
		ch.Message = fmt.Sprintf("the DMARC record's policy p=%q is not none, quarantine or reject", tags["p"])
		return ch
	}
	adkim := cmp.Or(strings.ToLower(tags["adkim"]), "r")
	if !signed {
		ch.Status = Problem
		ch.Message = fmt.Sprintf("policy p=%s, but submitd has no DKIM key for %s, so its mail carries no aligned signature and passes DMARC only by SPF: generate a key (submitd dkim generate %s) and publish its record", p, domain, domain)
		return ch
	}
	ch.Status = OK
	ch.Message = fmt.Sprintf("policy p=%s; submitd signs the domain's mail with d=%s, aligned under adkim=%s", p, domain, adkim)
	return ch
}

// parseTags parses a DMARC tag list (RFC 7489 §6.3): "tag=value" pairs
// separated by ';'; a pair without '=' is left out.
func parseTags(s string) map[string]string {
	out := map[string]string{}
	for part := range strings.SplitSeq(s, ";") {
		name, val, ok := strings.Cut(part, "=")
		if ok {
			out[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(val)
		}
	}
	return out
}
