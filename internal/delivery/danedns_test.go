package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"submitd/internal/testutil"
	"submitd/internal/tlspolicy"
)

// What DANE asks of the DNS beyond the MX records (RFC 7672 §2.2, RFC
// 7671 §7): the MX host's address records must be validated, or its TLSA
// records are not even looked up; an alias's validated CNAME expansion is
// the first TLSA base domain, the name itself the second; a TLSA lookup
// that fails makes the host unusable. example.test has a signed MX record
// naming mx.example.test; the receiver at 127.0.0.2 presents cert.
func TestDANEHostDNS(t *testing.T) {
	ca := testutil.NewCA(t)
	self, _ := testutil.NewCert(t, "mx.example.test")
	other, _ := testutil.NewCert(t, "mx.example.test")
	forTarget := ca.Issue(t, "mx.provider.test")
	const (
		orig   = "_25._tcp.mx.example.test."
		target = "_25._tcp.mx.provider.test."
	)
	// alias makes mx.example.test an alias of mx.provider.test at
	// 127.0.0.2; secure names the links and addresses that are signed.
	alias := func(w *world, secure ...string) {
		w.dns.AddCNAME("mx.example.test", "mx.provider.test")
		w.dns.AddA("mx.provider.test", "127.0.0.2")
		for _, n := range secure {
			w.dns.SetSecure(n, true)
		}
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		// setup publishes the records past the MX record.
		setup func(w *world)
		// want is "" for delivered, else the start of the deferral.
		want string
		// policy is the TLS policy the delivery went under; note what
		// the delivery history says of DANE after the TLS details.
		policy, note string
		// noTLSA: no TLSA query may be asked.
		noTLSA bool
	}{
		{name: "secure alias: TLSA of the expansion used", cert: self,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test", target)
				w.dns.Add(t, tlsa(target, 3, self.Leaf))
			},
			policy: "dane"},
		{name: "secure alias: TLSA of the expansion enforced", cert: other,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test", target)
				w.dns.Add(t, tlsa(target, 3, self.Leaf))
			},
			want: "TLS handshake: DANE: mx.example.test: no TLSA record matches the certificate"},
		{name: "secure alias: the expansion's TLSA comes first", cert: other,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test", target, orig)
				w.dns.Add(t, tlsa(target, 3, self.Leaf), tlsa(orig, 3, other.Leaf))
			},
			want: "TLS handshake: DANE: mx.example.test: no TLSA record matches the certificate"},
		{name: "secure alias: TLSA of the name itself when the expansion has none", cert: other,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test", orig)
				w.dns.AddTXT("_25._tcp.mx.provider.test", "x")
				w.dns.Add(t, tlsa(orig, 3, self.Leaf))
			},
			want: "TLS handshake: DANE: mx.example.test: no TLSA record matches the certificate"},
		{name: "secure alias: matching TLSA of the name itself", cert: self,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test", orig)
				w.dns.Add(t, tlsa(orig, 3, self.Leaf))
			},
			policy: "dane"},
		// RFC 7672 §3.2.2: with DANE-TA, a certificate for the expanded
		// name is one for the MX host.
		{name: "secure alias: DANE-TA certificate for the expanded name", cert: forTarget,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test", orig)
				w.dns.Add(t, tlsa(orig, 2, ca.Cert))
			},
			policy: "dane"},
		{name: "insecure alias: TLSA of the expansion ignored", cert: other,
			setup: func(w *world) {
				alias(w, "mx.provider.test", target)
				w.dns.Add(t, tlsa(target, 3, self.Leaf))
			},
			policy: "opportunistic"},
		{name: "insecure alias: TLSA of the name itself used", cert: self,
			setup: func(w *world) {
				alias(w, "mx.provider.test", target, orig)
				w.dns.Add(t, tlsa(target, 3, other.Leaf), tlsa(orig, 3, self.Leaf))
			},
			policy: "dane"},
		{name: "insecure alias to insecure addresses: no DANE", cert: other,
			setup: func(w *world) {
				alias(w, target, orig)
				w.dns.Add(t, tlsa(target, 3, self.Leaf), tlsa(orig, 3, self.Leaf))
			},
			policy: "opportunistic", note: "DANE not applied: the address records of mx.example.test are not DNSSEC-validated", noTLSA: true},
		{name: "insecure addresses: TLSA not looked up", cert: other,
			setup: func(w *world) {
				w.dns.AddA("mx.example.test", "127.0.0.2")
				w.dns.Add(t, tlsa(orig, 3, self.Leaf))
				w.dns.SetSecure(orig, true)
			},
			policy: "opportunistic", note: "DANE not applied: the address records of mx.example.test are not DNSSEC-validated", noTLSA: true},
		{name: "insecure addresses: failing TLSA lookup not asked", cert: other,
			setup: func(w *world) {
				w.dns.AddA("mx.example.test", "127.0.0.2")
				w.dns.SetRcode(orig, dns.RcodeServerFailure)
			},
			policy: "opportunistic", note: "DANE not applied", noTLSA: true},
		{name: "secure addresses, insecure TLSA", cert: other,
			setup: func(w *world) {
				w.dns.AddA("mx.example.test", "127.0.0.2")
				w.dns.SetSecure("mx.example.test", true)
				w.dns.Add(t, tlsa(orig, 3, self.Leaf))
			},
			policy: "opportunistic", note: "DANE not applied: the TLSA records of _25._tcp.mx.example.test are not DNSSEC-validated"},
		{name: "secure addresses, TLSA lookup fails", cert: self,
			setup: func(w *world) {
				w.dns.AddA("mx.example.test", "127.0.0.2")
				w.dns.SetSecure("mx.example.test", true)
				w.dns.SetRcode(orig, dns.RcodeServerFailure)
			},
			want: "DANE: TLSA lookup of _25._tcp.mx.example.test failed: lookup TLSA _25._tcp.mx.example.test: server"},
		{name: "secure alias, TLSA lookup of the expansion fails", cert: self,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test")
				w.dns.SetRcode(target, dns.RcodeServerFailure)
				w.dns.Add(t, tlsa(orig, 3, self.Leaf))
				w.dns.SetSecure(orig, true)
			},
			want: "DANE: TLSA lookup of _25._tcp.mx.provider.test failed"},
		{name: "address lookup fails at the validating resolver", cert: self,
			setup: func(w *world) {
				alias(w, "mx.example.test", "mx.provider.test")
				w.dns.AddAAAA("mx.provider.test", "::1")
				w.dns.SetRcode("mx.provider.test", dns.RcodeServerFailure)
			},
			want: "DANE: the validating resolver failed on the address records of mx.example.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": starttls(tc.cert)}, "127.0.0.2")
			w.dns.AddMX("example.test", 10, "mx.example.test")
			w.dns.SetSecure("example.test", true)
			tc.setup(w)
			x, _ := w.policyMX(ca.Pool, 0)
			res := x.Deliver(context.Background(), msg("example.test", "x@example.test"))
			checkPolicy(t, res, "x@example.test", w.rx["127.0.0.2"], tc.want)
			if tc.want != "" {
				return
			}
			if log := w.log.String(); !strings.Contains(log, "tls_policy="+tc.policy) {
				t.Errorf("log does not say tls_policy=%s:\n%s", tc.policy, log)
			}
			if tc.note == "" && strings.Contains(res[0].TLS, "DANE") || !strings.Contains(res[0].TLS, tc.note) {
				t.Errorf("TLS in the history: %q, want a note %q", res[0].TLS, tc.note)
			}
			if tc.note != "" && !strings.Contains(w.log.String(), tc.note) {
				t.Errorf("log does not say %q:\n%s", tc.note, w.log.String())
			}
			for _, q := range w.dns.Queries() {
				if q.Type == dns.TypeTLSA && tc.noTLSA {
					t.Errorf("TLSA of %s asked for a host whose addresses are not validated", q.Name)
				}
			}
		})
	}
}

// SPEC R23 after DANE: a host whose address records are not validated
// comes under the domain's enforced MTA-STS policy, though TLSA records
// it has would not match its certificate; the history says why DANE was
// not applied.
func TestDANEInsecureAddressesMTASTS(t *testing.T) {
	ca := testutil.NewCA(t)
	other, _ := testutil.NewCert(t, "mx.example.test")
	w, res := deliverDANESTS(t, ca, ca.Issue(t, "mx.example.test"), "example.test", other.Leaf,
		"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n")
	check(t, res, "x@example.test", Delivered, "250")
	const note = "DANE not applied: the address records of mx.example.test are not DNSSEC-validated"
	if !strings.Contains(res[0].TLS, "certificate verified ("+note+")") {
		t.Errorf("TLS in the history: %q, want the verified certificate and %q", res[0].TLS, note)
	}
	if log := w.log.String(); !strings.Contains(log, "tls_policy=mta-sts") || !strings.Contains(log, note) {
		t.Errorf("log does not say the host went under MTA-STS and why:\n%s", log)
	}
}

// deliverDANESTS sends a message to x@domain, whose validated MX record
// names mx.domain at 127.0.0.3, where a receiver presents cert; the host
// has a validated DANE-EE record of pub, and domain the MTA-STS policy
// sts, served with a certificate of ca. secure names what else is
// validated.
func deliverDANESTS(t *testing.T, ca *testutil.CA, cert tls.Certificate, domain string, pub *x509.Certificate, sts string, secure ...string) (*world, []Result) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": starttls(cert)}, "127.0.0.3")
	w.dns.AddMX(domain, 10, "mx."+domain)
	w.dns.AddA("mx."+domain, "127.0.0.3")
	w.dns.AddTXT("_mta-sts."+domain, "v=STSv1; id=1;")
	w.dns.Add(t, tlsa("_25._tcp.mx."+domain+".", 3, pub))
	for _, n := range append([]string{domain, "_25._tcp.mx." + domain}, secure...) {
		w.dns.SetSecure(n, true)
	}
	var policy atomic.Value
	policy.Store(sts)
	var fetches atomic.Int32
	port := stsServer(t, w, ca, &policy, &fetches, domain)
	x, _ := w.policyMX(ca.Pool, port)
	return w, x.Deliver(context.Background(), msg(domain, "x@"+domain))
}

// HostSecure reads the AD bit of the address answers and the CNAME chain
// in them as a validating resolver gives them.
func TestResolverHostSecure(t *testing.T) {
	s := testutil.NewDNSServer(t)
	s.AddA("plain.test", "127.0.0.2")
	s.AddAAAA("signed.test", "::1")
	s.AddCNAME("alias.test", "Link.Test")
	s.AddCNAME("link.test", "signed.test")
	s.AddCNAME("unsigned-alias.test", "signed.test")
	s.AddCNAME("to-plain.test", "plain.test")
	s.AddCNAME("loop1.test", "loop2.test")
	s.AddCNAME("loop2.test", "loop1.test")
	s.SetRcode("broken.test", dns.RcodeServerFailure)
	for _, n := range []string{"signed.test", "alias.test", "link.test", "to-plain.test", "loop1.test", "loop2.test"} {
		s.SetSecure(n, true)
	}
	r := &Resolver{Addr: s.Addr, Timeout: 2 * time.Second}
	for _, tc := range []struct {
		host     string
		secure   bool
		expanded string
		err      string
	}{
		{host: "plain.test"},
		{host: "signed.test", secure: true},
		{host: "Alias.Test.", secure: true, expanded: "signed.test"},
		// The chain is not validated, the expansion's addresses are.
		{host: "unsigned-alias.test", secure: true},
		{host: "to-plain.test"},
		{host: "nowhere.test"},
		// A looping chain is followed to an end: no expansion.
		{host: "loop1.test", secure: true},
		{host: "127.0.0.2"},
		{host: "broken.test", err: "lookup A broken.test: server"},
	} {
		got, err := r.HostSecure(context.Background(), tc.host)
		if tc.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q…", tc.host, err, tc.err)
			}
			continue
		}
		if err != nil || got.Secure != tc.secure || got.Expanded != tc.expanded {
			t.Errorf("%s: %+v, %v; want secure %v, expanded %q", tc.host, got, err, tc.secure, tc.expanded)
		}
	}
}

// SPEC R23, DANE first: a domain whose every MX host DANE governs gets no
// MTA-STS policy fetch, so a policy host that fails to answer neither
// delays its mail nor shows in its TLS report as a failed fetch.
func TestDANEDomainFetchesNoPolicy(t *testing.T) {
	self, _ := testutil.NewCert(t, "mx.sts.test")
	ca := testutil.NewCA(t)
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": starttls(self)}, "127.0.0.3")
	w.dns.AddMX("sts.test", 10, "mx.sts.test")
	w.dns.AddA("mx.sts.test", "127.0.0.3")
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=1;")
	w.dns.Add(t, tlsa("_25._tcp.mx.sts.test.", 3, self.Leaf))
	for _, n := range []string{"sts.test", "mx.sts.test", "_25._tcp.mx.sts.test"} {
		w.dns.SetSecure(n, true)
	}
	var policy atomic.Value
	policy.Store("status 500")
	var fetches atomic.Int32
	port := stsServer(t, w, ca, &policy, &fetches, "sts.test")
	results := tlspolicy.NewResults()
	clock := testutil.NewClock(time.Now())
	res := &Resolver{Addr: w.dns.Addr, Timeout: 2 * time.Second}
	pc := tlspolicy.New(tlspolicy.Config{DNS: res, SecureDNS: res, Roots: ca.Pool, PolicyPort: port, FetchTimeout: 10 * time.Second,
		Results: results, Now: clock.Now})
	x := w.mx(func(c *MXConfig) { c.Policy, c.RootCAs, c.TLSResults, c.Now = pc, ca.Pool, results, clock.Now })
	check(t, x.Deliver(context.Background(), msg("sts.test", "x@sts.test")), "x@sts.test", Delivered, "250")
	if n := fetches.Load(); n != 0 {
		t.Errorf("the MTA-STS policy was fetched %d times for a domain DANE governs", n)
	}
	day := clock.Now().UTC().Format(time.DateOnly)
	clock.Advance(24 * time.Hour)
	days, err := results.Take(context.Background(), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	rep := days[day]["sts.test"]
	if rep == nil || len(rep.Policies) != 1 || rep.Policies[0].Policy.Type != "tlsa" || rep.Policies[0].Summary.Failure != 0 {
		t.Fatalf("report %+v, want one tlsa policy without failures", rep)
	}
}
