package delivery

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"submitd/internal/tlspolicy"
)

// ResolvConf is where the system's DNS server is read from when a Resolver
// has no address.
const ResolvConf = "/etc/resolv.conf"

// Resolver asks one DNS server (a recursive resolver) for the records
// delivery needs, with miekg/dns. Unlike the standard library's resolver it
// tells "the name does not exist" (NXDOMAIN: permanent) from "the DNS failed"
// (SERVFAIL, timeout: temporary), which decides between a bounce and a retry.
type Resolver struct {
	// Addr is "host:port" of the DNS server; empty: the first nameserver of
	// /etc/resolv.conf (127.0.0.1:53 if it has none).
	Addr string
	// Timeout bounds each query; default 5s. A UDP query that times out is
	// tried once more.
	Timeout time.Duration

	once    sync.Once
	sysAddr string
}

// DNSError is a failed lookup.
type DNSError struct {
	// Name is the queried name.
	Name string
	// Type is the query type, e.g. "MX".
	Type string
	// NotFound means the name does not exist (NXDOMAIN), a permanent answer.
	NotFound bool
	// Err says what else went wrong: a SERVFAIL or REFUSED answer, a timeout.
	Err error
}

func (e *DNSError) Error() string {
	if e.NotFound {
		return fmt.Sprintf("lookup %s %s: no such domain (NXDOMAIN)", e.Type, e.Name)
	}
	return fmt.Sprintf("lookup %s %s: %v", e.Type, e.Name, e.Err)
}

func (e *DNSError) Unwrap() error { return e.Err }

// Temporary reports whether a later lookup may succeed.
func (e *DNSError) Temporary() bool { return !e.NotFound }

// MXRecord is one MX record.
type MXRecord struct {
	// Host is the mail exchanger, lowercase, without the final dot; "" for a
	// null MX (RFC 7505).
	Host string
	// Pref is the preference; lower is tried first.
	Pref uint16
}

func (r *Resolver) server() string {
	if r.Addr != "" {
		return r.Addr
	}
	r.once.Do(func() {
		r.sysAddr = "127.0.0.1:53"
		if cc, err := dns.ClientConfigFromFile(ResolvConf); err == nil && len(cc.Servers) > 0 {
			r.sysAddr = net.JoinHostPort(cc.Servers[0], cmp.Or(cc.Port, "53"))
		}
	})
	return r.sysAddr
}

// exchange sends one question and returns an answer with rcode NOERROR, or a
// *DNSError. Answers truncated over UDP are asked again over TCP.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	tname := dns.TypeToString[qtype]
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	// RFC 6840 §5.7: the AD bit in a query asks a validating resolver
	// to say whether the answer is DNSSEC-validated, which DANE needs
	// (RFC 7672 §2.1); other resolvers ignore it.
	q.AuthenticatedData = true
	// RFC 6891; 1232 bytes avoids IP fragmentation (DNS flag day 2020).
	q.SetEdns0(1232, false)
	timeout := cmp.Or(r.Timeout, 5*time.Second)
	c := &dns.Client{Net: "udp", Timeout: timeout}
	srv := r.server()
	var resp *dns.Msg
	var err error
	for try := 0; try < 2; try++ {
		resp, _, err = c.ExchangeContext(ctx, q, srv)
		var ne net.Error
		if err == nil || ctx.Err() != nil || !errors.As(err, &ne) || !ne.Timeout() {
			break
		}
	}
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, q, srv)
	}
	if err != nil {
		return nil, &DNSError{Name: name, Type: tname, Err: fmt.Errorf("asking %s: %w", srv, err)}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		return resp, nil
	case dns.RcodeNameError:
		return nil, &DNSError{Name: name, Type: tname, NotFound: true}
	}
	return nil, &DNSError{Name: name, Type: tname, Err: fmt.Errorf("server %s answered %s", srv, dns.RcodeToString[resp.Rcode])}
}

// LookupMX returns the MX records of domain in answer order; none (and no
// error) when the domain exists without MX records.
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]MXRecord, error) {
	resp, err := r.exchange(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var out []MXRecord
	for _, rr := range resp.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, MXRecord{Host: strings.ToLower(strings.TrimSuffix(mx.Mx, ".")), Pref: mx.Preference})
		}
	}
	return out, nil
}

// LookupIP returns the IPv4 addresses of host, then its IPv6 addresses. It
// fails only when neither lookup gave an address: with NotFound when the
// name does not exist, temporarily when either lookup failed otherwise.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	var out []netip.Addr
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		resp, err := r.exchange(ctx, host, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range resp.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					out = append(out, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					out = append(out, a.Unmap())
				}
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	for _, err := range errs {
		var de *DNSError
		if errors.As(err, &de) && de.Temporary() {
			return nil, err
		}
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return nil, nil
}

// LookupTXT returns the TXT records of name, each record's strings joined
// (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	resp, err := r.exchange(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range resp.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

// MXSecure reports whether the MX answer for domain carries the AD bit of
// a validating resolver, the condition for DANE (RFC 7672 §2.2.1). A
// domain that does not exist is not secure, and no error: the MX lookup
// proper decides about it.
func (r *Resolver) MXSecure(ctx context.Context, domain string) (bool, error) {
	resp, err := r.exchange(ctx, domain, dns.TypeMX)
	if err != nil {
		var de *DNSError
		if errors.As(err, &de) && de.NotFound {
			return false, nil
		}
		return false, err
	}
	return resp.AuthenticatedData, nil
}

// HostSecure asks for the A and AAAA records of host and reports whether
// both answers carry the AD bit, the condition for looking up its TLSA
// records (RFC 7672 §2.2), and the host name's CNAME expansion when the
// chain is validated (RFC 7671 §7). A validating resolver sets the AD bit
// on an answer only when every RRset in it is validated, alias and
// addresses alike; when it is not set on an alias's answer, the
// expansion's own addresses are asked for: validated, they make the host
// secure though its expansion is not, and only the name itself is then a
// TLSA base domain. A host that does not exist is not secure, and no
// error: the address lookup proper decides about it.
func (r *Resolver) HostSecure(ctx context.Context, host string) (tlspolicy.HostAddrs, error) {
	if _, err := netip.ParseAddr(host); err == nil {
		return tlspolicy.HostAddrs{}, nil
	}
	secure, target, err := r.addrsSecure(ctx, host)
	if err != nil || target == "" {
		return tlspolicy.HostAddrs{}, err
	}
	if target == strings.ToLower(strings.TrimSuffix(host, ".")) {
		return tlspolicy.HostAddrs{Secure: secure}, nil
	}
	if secure {
		return tlspolicy.HostAddrs{Secure: true, Expanded: target}, nil
	}
	secure, _, err = r.addrsSecure(ctx, target)
	return tlspolicy.HostAddrs{Secure: secure}, err
}

// addrsSecure asks for the A and AAAA records of name and reports whether
// both answers are validated, and the end of name's CNAME chain in them,
// lowercase without the final dot; "" when the name does not exist.
func (r *Resolver) addrsSecure(ctx context.Context, name string) (secure bool, target string, err error) {
	secure = true
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		resp, err := r.exchange(ctx, name, qt)
		if err != nil {
			var de *DNSError
			if errors.As(err, &de) && de.NotFound {
				return false, "", nil
			}
			return false, "", err
		}
		secure = secure && resp.AuthenticatedData
		target = cnameTarget(resp, name)
	}
	return secure, target, nil
}

// cnameTarget follows the CNAME records of an answer from name to the end
// of the chain, and returns it lowercase without the final dot: name
// itself when it is no alias.
func cnameTarget(resp *dns.Msg, name string) string {
	alias := map[string]string{}
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			alias[strings.ToLower(c.Hdr.Name)] = strings.ToLower(dns.Fqdn(c.Target))
		}
	}
	cur := strings.ToLower(dns.Fqdn(name))
	// Each hop takes one record, so a looping chain ends too.
	for range len(alias) {
		next, ok := alias[cur]
		if !ok {
			break
		}
		cur = next
	}
	return strings.TrimSuffix(cur, ".")
}

// LookupTLSA returns the TLSA records of name ("_25._tcp.mx.example") and
// whether the answer carries the AD bit. A name that does not exist has no
// records, and no error (RFC 7672 §2.2.2). Records whose data is not hex
// are left out, as unusable.
func (r *Resolver) LookupTLSA(ctx context.Context, name string) ([]tlspolicy.TLSA, bool, error) {
	resp, err := r.exchange(ctx, name, dns.TypeTLSA)
	if err != nil {
		var de *DNSError
		if errors.As(err, &de) && de.NotFound {
			return nil, false, nil
		}
		return nil, false, err
	}
	var out []tlspolicy.TLSA
	for _, rr := range resp.Answer {
		t, ok := rr.(*dns.TLSA)
		if !ok {
			continue
		}
		data, err := hex.DecodeString(t.Certificate)
		if err != nil {
			continue
		}
		out = append(out, tlspolicy.TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
	}
	return out, resp.AuthenticatedData, nil
}

var _ tlspolicy.SecureDNS = (*Resolver)(nil)
var _ tlspolicy.DNS = (*Resolver)(nil)

// hostPort joins an address and a port.
func hostPort(a netip.Addr, port int) string {
	return net.JoinHostPort(a.String(), strconv.Itoa(port))
}
