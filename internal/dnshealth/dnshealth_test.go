package dnshealth

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/testutil"
)

// world is the test DNS server with the provider's SPF include and four
// customer domains: one set up right, one whose SPF omits the provider,
// one without DMARC, one without MX or SPF.
func world(t *testing.T) *testutil.DNSServer {
	dns := testutil.NewDNSServer(t)
	dns.AddTXT("_spf.provider.test", "v=spf1 ip4:192.0.2.0/28 -all")
	dns.AddMX("good.test", 10, "mx.good.test")
	dns.AddA("mx.good.test", "198.51.100.1")
	dns.AddTXT("good.test", "v=spf1 mx include:_spf.provider.test -all", "google-site-verification=x")
	dns.AddTXT("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s")
	dns.AddMX("nospf.test", 10, "mx.good.test")
	dns.AddTXT("nospf.test", "v=spf1 mx -all")
	dns.AddTXT("_dmarc.nospf.test", "v=DMARC1; p=quarantine")
	dns.AddMX("nodmarc.test", 10, "mx.good.test")
	dns.AddTXT("nodmarc.test", "v=spf1 include:_spf.provider.test ~all")
	dns.AddA("bare.test", "198.51.100.9")
	return dns
}

func TestHealth(t *testing.T) {
	dns := world(t)
	res := &delivery.Resolver{Addr: dns.Addr}
	byInclude := New(Config{Resolver: res, SPFInclude: "_spf.provider.test"})
	byAddress := New(Config{Resolver: res, Outbound: []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32")}})
	ctx := context.Background()
	for _, c := range []struct {
		checker          *Checker
		domain           string
		signed           bool
		mx, spf, dmarc   string
		spfFix, dmarcFix string
		spfWhy, dmarcWhy string
	}{
		{byInclude, "good.test", true, OK, OK, OK, "", "", "includes _spf.provider.test", "p=reject"},
		{byAddress, "good.test", true, OK, OK, OK, "", "", "authorizes", "adkim=s"},
		{byInclude, "nospf.test", true, OK, Problem, OK,
			`nospf.test. TXT "v=spf1 mx include:_spf.provider.test -all"`, "", "does not include", "p=quarantine"},
		{byAddress, "nospf.test", true, OK, Problem, OK,
			`nospf.test. TXT "v=spf1 mx ip4:192.0.2.5 -all"`, "", "192.0.2.5 (fail)", ""},
		{byInclude, "nodmarc.test", true, OK, OK, Problem,
			"", `_dmarc.nodmarc.test. TXT "v=DMARC1; p=none; rua=mailto:postmaster@nodmarc.test"`, "", "no DMARC record"},
		{byInclude, "good.test", false, OK, OK, Problem, "", "", "", "no DKIM key"},
		{byInclude, "bare.test", true, Problem, Problem, Problem,
			`bare.test. TXT "v=spf1 include:_spf.provider.test ~all"`, `_dmarc.bare.test. TXT "v=DMARC1; p=none; rua=mailto:postmaster@bare.test"`, "no SPF record", ""},
	} {
		r := c.checker.Check(ctx, c.domain, c.signed)
		if r.MX.Status != c.mx || r.SPF.Status != c.spf || r.DMARC.Status != c.dmarc {
			t.Errorf("%s (signed %v): mx %s, spf %s (%s), dmarc %s (%s); want %s %s %s", c.domain, c.signed,
				r.MX.Status, r.SPF.Status, r.SPF.Message, r.DMARC.Status, r.DMARC.Message, c.mx, c.spf, c.dmarc)
		}
		if r.SPF.Fix != c.spfFix || r.DMARC.Fix != c.dmarcFix {
			t.Errorf("%s: fixes %q, %q; want %q, %q", c.domain, r.SPF.Fix, r.DMARC.Fix, c.spfFix, c.dmarcFix)
		}
		if !strings.Contains(r.SPF.Message, c.spfWhy) || !strings.Contains(r.DMARC.Message, c.dmarcWhy) {
			t.Errorf("%s: messages %q, %q; want %q, %q", c.domain, r.SPF.Message, r.DMARC.Message, c.spfWhy, c.dmarcWhy)
		}
	}
	// Without the provider's addresses there is nothing to check against.
	if r := New(Config{Resolver: res}).Check(ctx, "good.test", true); r.SPF.Status != Unknown {
		t.Errorf("unconfigured: %+v", r.SPF)
	}
}

// TestHealthCachedAndBounded: a report is reused within the TTL without a
// lookup; a DNS server that does not answer costs at most the timeout.
func TestHealthCachedAndBounded(t *testing.T) {
	dns := world(t)
	clock := time.Now()
	c := New(Config{Resolver: &delivery.Resolver{Addr: dns.Addr}, SPFInclude: "_spf.provider.test", Timeout: time.Second,
		Now: func() time.Time { return clock }})
	ctx := context.Background()
	c.Check(ctx, "good.test", true)
	n := len(dns.Queries())
	c.Check(ctx, "good.test", true)
	if len(dns.Queries()) != n {
		t.Errorf("a cached report made %d lookups", len(dns.Queries())-n)
	}
	clock = clock.Add(3 * time.Minute)
	c.Check(ctx, "good.test", true)
	if len(dns.Queries()) == n {
		t.Error("a stale report was reused")
	}
	dns.SetDelay("_dmarc.slow.test", time.Minute)
	dns.SetDelay("slow.test", time.Minute)
	start := time.Now()
	r := c.Check(ctx, "slow.test", true)
	if took := time.Since(start); took > 10*time.Second || r.DMARC.Status != Unknown {
		t.Errorf("slow DNS: took %v, dmarc %+v", took, r.DMARC)
	}
}

// FuzzSPF: whatever a domain publishes as its SPF record, parsing and
// adding the provider's terms neither panics nor loses the record's terms.
func FuzzSPF(f *testing.F) {
	for _, s := range []string{"v=spf1 mx include:_spf.provider.test -all", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all",
		"v=spf1 a:mail.example.org/24//64 redirect=_spf.example.org", "v=spf1 +", "v=spf1 exists:%{i}.x.test -all", "spf1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		terms, err := parseSPF(rec)
		if err != nil {
			return
		}
		out := withTerms(rec, []string{"include:_spf.provider.test"})
		again, err := parseSPF(out)
		if err != nil || len(again) != len(terms)+1 {
			t.Fatalf("withTerms(%q) = %q: %v, %d terms after %d", rec, out, err, len(again), len(terms))
		}
	})
}
