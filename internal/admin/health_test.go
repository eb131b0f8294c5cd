package admin

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"submitd/internal/delivery"
	"submitd/internal/dkim"
	"submitd/internal/dnshealth"
	"submitd/internal/testutil"
)

// TestDomainHealth: against the test DNS server, the domain detail names
// each problem with the record to publish: a domain set up right has none;
// one without its DKIM record gets the key's record; one whose SPF omits
// the provider gets its record with the provider's include; one without
// DMARC gets a DMARC record.
func TestDomainHealth(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	dns := testutil.NewDNSServer(t)
	dns.AddTXT("_spf.provider.test", "v=spf1 ip4:192.0.2.0/28 -all")
	records := map[string]string{}
	for _, d := range []string{"good.cz", "nodkim.cz", "nospf.cz", "nodmarc.cz"} {
		must(t, w.dir.AddDomain(ctx, d))
		k, err := dkim.Generate(d, "s1", dkim.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		must(t, w.srv.cfg.DKIM.Put(ctx, k, false))
		records[d] = k.DNSRecord()
		dns.AddMX(d, 10, "mx."+d)
		dns.AddA("mx."+d, "198.51.100.1")
		if d != "nodkim.cz" {
			dns.AddTXT(k.RecordName(), k.TXTValue())
		}
		spf := "v=spf1 mx include:_spf.provider.test -all"
		if d == "nospf.cz" {
			spf = "v=spf1 mx -all"
		}
		dns.AddTXT(d, spf)
		if d != "nodmarc.cz" {
			dns.AddTXT("_dmarc."+d, "v=DMARC1; p=quarantine")
		}
	}
	cfg := w.srv.cfg
	res := &delivery.Resolver{Addr: dns.Addr}
	cfg.DNS = res
	cfg.Health = dnshealth.New(dnshealth.Config{Resolver: res, SPFInclude: "_spf.provider.test"})
	w.srv = New(cfg)
	w.ts = httptest.NewServer(w.srv.Handler())
	t.Cleanup(w.ts.Close)

	check := func(domain, part string) map[string]any {
		t.Helper()
		r := w.do("GET", "/api/v1/domains/"+domain, "", RoleSupport)
		h, _ := r.body["health"].(map[string]any)
		if r.status != 200 || h == nil {
			t.Fatalf("%s: %d %v", domain, r.status, r.body)
		}
		return h[part].(map[string]any)
	}
	for _, d := range []string{"good.cz", "nodkim.cz", "nospf.cz", "nodmarc.cz"} {
		for _, part := range []string{"mx", "spf", "dkim", "dmarc"} {
			c := check(d, part)
			bad := d == "nodkim.cz" && part == "dkim" || d == "nospf.cz" && part == "spf" || d == "nodmarc.cz" && part == "dmarc"
			want := dnshealth.OK
			if bad {
				want = dnshealth.Problem
			}
			if c["status"] != want || bad == (c["fix"] == nil) {
				t.Errorf("%s %s: %v, want %s", d, part, c, want)
			}
		}
	}
	if fix := check("nodkim.cz", "dkim")["fix"]; fix != records["nodkim.cz"] {
		t.Errorf("DKIM fix %v, want %s", fix, records["nodkim.cz"])
	}
	if fix := check("nospf.cz", "spf")["fix"]; fix != `nospf.cz. TXT "v=spf1 mx include:_spf.provider.test -all"` {
		t.Errorf("SPF fix %v", fix)
	}
	if fix := check("nodmarc.cz", "dmarc")["fix"]; fix != `_dmarc.nodmarc.cz. TXT "v=DMARC1; p=none; rua=mailto:postmaster@nodmarc.cz"` {
		t.Errorf("DMARC fix %v", fix)
	}
	page := webGetAs(t, w, "/domains/nospf.cz")
	if !strings.Contains(page, `id="health-SPF"`) || !strings.Contains(page, "include:_spf.provider.test") || !strings.Contains(page, "1 problem(s)") {
		t.Errorf("domain page:\n%s", page)
	}
}
