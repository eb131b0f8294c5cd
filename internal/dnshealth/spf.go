package dnshealth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// SPF results (RFC 7208 §2.6).
const (
	spfPass      = "pass"
	spfFail      = "fail"
	spfSoftFail  = "softfail"
	spfNeutral   = "neutral"
	spfNone      = "none"
	spfPermError = "permerror"
	spfTempError = "temperror"
)

// maxSPFLookups is RFC 7208 §4.6.4's limit on the DNS lookups of one
// evaluation: include, a, mx, exists and redirect count.
const maxSPFLookups = 10

// maxSPFRecord bounds the SPF text parsed: it comes from DNS, which anyone
// may publish.
const maxSPFRecord = 4096

// term is one SPF term: a mechanism with its qualifier, or a modifier.
type term struct {
	// qual is '+', '-', '~' or '?'.
	qual byte
	// name is the mechanism or modifier, lowercase.
	name string
	// arg is what follows ':' or '=' (or the CIDR lengths after '/').
	arg string
	// modifier says the term was name=value.
	modifier bool
}

// parseSPF splits an SPF record into its terms (RFC 7208 §4.6.1). It
// fails on a record that is not "v=spf1 …" or has a malformed term.
func parseSPF(rec string) ([]term, error) {
	if len(rec) > maxSPFRecord {
		return nil, errors.New("record longer than 4096 bytes")
	}
	f := strings.Fields(rec)
	if len(f) == 0 || !strings.EqualFold(f[0], "v=spf1") {
		return nil, errors.New("not an SPF record (v=spf1)")
	}
	var out []term
	for _, w := range f[1:] {
		t := term{qual: '+'}
		if strings.ContainsRune("+-~?", rune(w[0])) {
			t.qual, w = w[0], w[1:]
		}
		if i := strings.IndexAny(w, ":=/"); i >= 0 {
			t.name, t.arg = strings.ToLower(w[:i]), w[i:]
			if w[i] == '=' {
				t.modifier, t.arg = true, w[i+1:]
			} else if w[i] == ':' {
				t.arg = w[i+1:]
			}
		} else {
			t.name = strings.ToLower(w)
		}
		if t.name == "" {
			return nil, fmt.Errorf("malformed term %q", w)
		}
		out = append(out, t)
	}
	return out, nil
}

// spfEval evaluates SPF for one address (RFC 7208 §4), without macros:
// a term with a macro does not match, which can only make the check
// stricter than a receiver's.
type spfEval struct {
	res     Resolver
	lookups int
}

// txtSPF returns domain's one SPF record, or "" when it has none.
func (e *spfEval) txtSPF(ctx context.Context, domain string) (string, error) {
	txts, err := e.res.LookupTXT(ctx, domain)
	if err != nil {
		if notFound(err) {
			return "", nil
		}
		return "", err
	}
	var found []string
	for _, t := range txts {
		if f := strings.Fields(t); len(f) > 0 && strings.EqualFold(f[0], "v=spf1") {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%s has %d SPF records; RFC 7208 §4.5 allows one", domain, len(found))
}

// check is check_host(ip, domain): the result for mail from ip.
func (e *spfEval) check(ctx context.Context, ip netip.Addr, domain string) string {
	rec, err := e.txtSPF(ctx, domain)
	switch {
	case err != nil && strings.Contains(err.Error(), "SPF records"):
		return spfPermError
	case err != nil:
		return spfTempError
	case rec == "":
		return spfNone
	}
	terms, err := parseSPF(rec)
	if err != nil {
		return spfPermError
	}
	redirect := ""
	for _, t := range terms {
		if t.modifier {
			if t.name == "redirect" {
				redirect = t.arg
			}
			continue
		}
		m, res := e.match(ctx, ip, domain, t)
		if res != "" {
			return res
		}
		if m {
			return map[byte]string{'+': spfPass, '-': spfFail, '~': spfSoftFail, '?': spfNeutral}[t.qual]
		}
	}
	if redirect != "" && !strings.Contains(redirect, "%") {
		if e.lookups++; e.lookups > maxSPFLookups {
			return spfPermError
		}
		if r := e.check(ctx, ip, redirect); r != spfNone {
			return r
		}
		return spfPermError
	}
	return spfNeutral
}

// match reports whether mechanism t matches ip; res is set when the
// evaluation ends with an error.
func (e *spfEval) match(ctx context.Context, ip netip.Addr, domain string, t term) (bool, string) {
	if strings.Contains(t.arg, "%") {
		return false, ""
	}
	counts := t.name == "include" || t.name == "a" || t.name == "mx" || t.name == "exists" || t.name == "ptr"
	if counts {
		if e.lookups++; e.lookups > maxSPFLookups {
			return false, spfPermError
		}
	}
	switch t.name {
	case "all":
		return true, ""
	case "ip4", "ip6":
		p, err := netip.ParsePrefix(t.arg)
		if err != nil {
			a, aerr := netip.ParseAddr(t.arg)
			if aerr != nil {
				return false, spfPermError
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		return p.Contains(ip), ""
	case "include":
		switch e.check(ctx, ip, t.arg) {
		case spfPass:
			return true, ""
		case spfTempError:
			return false, spfTempError
		case spfPermError, spfNone:
			return false, spfPermError
		}
		return false, ""
	case "a", "mx":
		target, v4, v6 := domain, 32, 128
		if arg := t.arg; arg != "" {
			host, cidr, _ := strings.Cut(arg, "/")
			if strings.HasPrefix(arg, "/") {
				host = ""
			}
			if host != "" {
				target = host
			}
			if cidr != "" {
				c4, c6, _ := strings.Cut(cidr, "//")
				fmt.Sscan(c4, &v4)
				if c6 != "" {
					fmt.Sscan(c6, &v6)
				}
			}
		}
		hosts := []string{target}
		if t.name == "mx" {
			mxs, err := e.res.LookupMX(ctx, target)
			if err != nil && !notFound(err) {
				return false, spfTempError
			}
			hosts = hosts[:0]
			for i, mx := range mxs {
				if i == maxSPFLookups {
					return false, spfPermError
				}
				hosts = append(hosts, mx.Host)
			}
		}
		for _, h := range hosts {
			addrs, err := e.res.LookupIP(ctx, h)
			if err != nil && !notFound(err) {
				return false, spfTempError
			}
			for _, a := range addrs {
				bits := v4
				if a.Is6() {
					bits = v6
				}
				if p, err := a.Prefix(bits); err == nil && p.Contains(ip) {
					return true, ""
				}
			}
		}
		return false, ""
	}
	// exists, ptr and unknown mechanisms are not evaluated here.
	return false, ""
}

// includes reports whether the SPF record of domain includes target,
// directly or through nested includes and redirects, within the lookup
// limit.
func (e *spfEval) includes(ctx context.Context, domain, target string) bool {
	rec, err := e.txtSPF(ctx, domain)
	if err != nil || rec == "" {
		return false
	}
	terms, err := parseSPF(rec)
	if err != nil {
		return false
	}
	for _, t := range terms {
		if (t.name == "include" && !t.modifier) || (t.name == "redirect" && t.modifier) {
			if strings.EqualFold(strings.TrimSuffix(t.arg, "."), target) {
				return true
			}
			if e.lookups++; e.lookups > maxSPFLookups {
				return false
			}
			if e.includes(ctx, t.arg, target) {
				return true
			}
		}
	}
	return false
}

// withTerms is rec with terms added before its all term or redirect (or
// at the end): the record that authorizes the provider too.
func withTerms(rec string, terms []string) string {
	f := strings.Fields(rec)
	for i, w := range f {
		if l := strings.ToLower(strings.TrimLeft(w, "+-~?")); l == "all" || strings.HasPrefix(l, "redirect=") {
			return strings.Join(append(f[:i:i], append(terms, f[i:]...)...), " ")
		}
	}
	return strings.Join(append(f, terms...), " ")
}
