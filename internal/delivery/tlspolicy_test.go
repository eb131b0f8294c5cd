package delivery

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"submitd/internal/testutil"
	"submitd/internal/tlspolicy"
)

// The tests of SPEC R23 put receivers with chosen certificates behind MX
// records of the test DNS server, which also stands for the validating
// resolver: SetSecure gives its answers the AD bit. DANE needs the MX
// records, the MX host's address records and its TLSA records secure.

// starttls is a receiver offering STARTTLS with cert.
func starttls(cert tls.Certificate) testutil.ReceiverOptions {
	return testutil.ReceiverOptions{STARTTLS: true, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
}

// tlsa returns a TLSA record of the given usage for cert: selector 1 and
// SHA-256 of its key for DANE-EE, selector 0 and SHA-256 of the whole
// certificate for DANE-TA.
func tlsa(name string, usage int, c *x509.Certificate) string {
	if usage == 3 {
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		return fmt.Sprintf("%s 300 IN TLSA 3 1 1 %s", name, hex.EncodeToString(sum[:]))
	}
	sum := sha256.Sum256(c.Raw)
	return fmt.Sprintf("%s 300 IN TLSA %d 0 1 %s", name, usage, hex.EncodeToString(sum[:]))
}

// checkPolicy checks how a delivery to rcpt went under the TLS policy and
// what the receiver rx got: want "" is delivered over TLS, "clear"
// delivered without TLS, else the start of the deferral's reason, with
// nothing received, since mail must not go out against the policy.
func checkPolicy(t *testing.T, res []Result, rcpt string, rx *testutil.Receiver, want string) {
	t.Helper()
	switch want {
	case "", "clear":
		check(t, res, rcpt, Delivered, "250")
		got := rx.Messages()
		if len(got) != 1 || got[0].TLS != (want == "") {
			t.Fatalf("received %d messages (TLS %v), want 1 with TLS %v", len(got), len(got) > 0 && got[0].TLS, want == "")
		}
	default:
		check(t, res, rcpt, Temporary, want)
		if n := len(rx.Messages()); n != 0 {
			t.Errorf("receiver got %d messages, want none: mail must not go out against the policy", n)
		}
	}
}

// policyMX is an MX sender whose TLS policy asks the world's DNS server,
// trusts roots and fetches MTA-STS policies from port.
func (w *world) policyMX(roots *x509.CertPool, port int) (*MX, *tlspolicy.Checker) {
	res := &Resolver{Addr: w.dns.Addr, Timeout: 2 * time.Second}
	pc := tlspolicy.New(tlspolicy.Config{DNS: res, SecureDNS: res, Roots: roots, PolicyPort: port, FetchTimeout: 10 * time.Second})
	return w.mx(func(c *MXConfig) { c.Policy = pc; c.RootCAs = roots }), pc
}

// daneWorld is example.test with a signed MX record naming
// mx.example.test at the signed address 127.0.0.2, where a receiver with
// opts listens.
func daneWorld(t *testing.T, opts testutil.ReceiverOptions) *world {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": opts}, "127.0.0.2")
	w.dns.AddMX("example.test", 10, "mx.example.test")
	w.dns.AddA("mx.example.test", "127.0.0.2")
	w.dns.SetSecure("example.test", true)
	w.dns.SetSecure("mx.example.test", true)
	w.dns.SetSecure("_25._tcp.mx.example.test", true)
	return w
}

func TestDANE(t *testing.T) {
	ca := testutil.NewCA(t)
	good := ca.Issue(t, "mx.example.test")
	wrongName := ca.Issue(t, "other.example.test")
	self, _ := testutil.NewCert(t, "mx.example.test")
	other, _ := testutil.NewCert(t, "mx.example.test")
	caLeaf, _ := x509.ParseCertificate(good.Certificate[0])
	for _, tc := range []struct {
		name string
		opts testutil.ReceiverOptions
		tlsa []string
		// insecureMX and insecureTLSA take the AD bit off those answers.
		insecureMX, insecureTLSA bool
		servfail                 bool
		// want is "" for delivered over TLS, "clear" for delivered
		// without TLS, else the start of the deferral reason.
		want string
	}{
		{name: "DANE-EE matches a self-signed certificate", opts: starttls(self), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 3, self.Leaf)}},
		{name: "DANE-EE full certificate SHA-512", opts: starttls(self), tlsa: []string{fmt.Sprintf("_25._tcp.mx.example.test. 300 IN TLSA 3 0 2 %x", sha512Of(self.Leaf.Raw))}},
		{name: "DANE-EE does not match", opts: starttls(other), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 3, self.Leaf)},
			want: "TLS handshake: DANE: mx.example.test: no TLSA record matches the certificate"},
		{name: "DANE-TA anchors the chain", opts: starttls(good), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 2, ca.Cert)}},
		{name: "DANE-TA with a certificate for another name", opts: starttls(wrongName), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 2, ca.Cert)},
			want: "TLS handshake: DANE: mx.example.test: no TLSA record matches the certificate: the DANE-TA anchor is in the chain, but x509: certificate is valid for other.example.test"},
		{name: "DANE-TA record of the leaf is no anchor for another leaf", opts: starttls(wrongName), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 2, caLeaf)},
			want: "TLS handshake: DANE: mx.example.test: no TLSA record matches"},
		{name: "no STARTTLS with usable TLSA records", opts: testutil.ReceiverOptions{}, tlsa: []string{tlsa("_25._tcp.mx.example.test.", 3, self.Leaf)},
			want: "DANE: TLS required but the server does not offer STARTTLS"},
		{name: "only unusable TLSA records still require TLS", opts: testutil.ReceiverOptions{}, tlsa: []string{tlsa("_25._tcp.mx.example.test.", 1, self.Leaf)},
			want: "DANE: TLS required but the server does not offer STARTTLS"},
		{name: "only unusable TLSA records accept any certificate", opts: starttls(other), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 1, self.Leaf)}},
		{name: "TLSA answer not validated: opportunistic", opts: starttls(other), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 3, self.Leaf)}, insecureTLSA: true},
		{name: "MX answer not validated: opportunistic", opts: testutil.ReceiverOptions{}, tlsa: []string{tlsa("_25._tcp.mx.example.test.", 3, self.Leaf)}, insecureMX: true, want: "clear"},
		{name: "no TLSA records: opportunistic", opts: testutil.ReceiverOptions{}, want: "clear"},
		{name: "TLSA lookup fails", opts: starttls(self), tlsa: []string{tlsa("_25._tcp.mx.example.test.", 3, self.Leaf)}, servfail: true,
			want: "DANE: TLSA lookup of _25._tcp.mx.example.test failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := daneWorld(t, tc.opts)
			w.dns.Add(t, tc.tlsa...)
			if len(tc.tlsa) == 0 {
				// The name exists with other data: NODATA for TLSA.
				w.dns.AddTXT("_25._tcp.mx.example.test", "x")
			}
			w.dns.SetSecure("example.test", !tc.insecureMX)
			w.dns.SetSecure("_25._tcp.mx.example.test", !tc.insecureTLSA)
			if tc.servfail {
				w.dns.SetRcode("_25._tcp.mx.example.test", dns.RcodeServerFailure)
			}
			x, _ := w.policyMX(nil, 0)
			res := x.Deliver(context.Background(), msg("example.test", "x@example.test"))
			checkPolicy(t, res, "x@example.test", w.rx["127.0.0.2"], tc.want)
		})
	}
}

func sha512Of(b []byte) []byte {
	s := sha512.Sum512(b)
	return s[:]
}

// A host whose certificate fails DANE is skipped for the next MX host,
// which passes.
func TestDANENextHost(t *testing.T) {
	self, _ := testutil.NewCert(t, "mx1.example.test")
	other, _ := testutil.NewCert(t, "mx1.example.test")
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": starttls(other), "127.0.0.3": starttls(self)}, "127.0.0.2", "127.0.0.3")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddMX("example.test", 20, "mx2.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	w.dns.AddA("mx2.example.test", "127.0.0.3")
	w.dns.Add(t, tlsa("_25._tcp.mx1.example.test.", 3, self.Leaf), tlsa("_25._tcp.mx2.example.test.", 3, self.Leaf))
	for _, n := range []string{"example.test", "mx1.example.test", "mx2.example.test", "_25._tcp.mx1.example.test", "_25._tcp.mx2.example.test"} {
		w.dns.SetSecure(n, true)
	}
	x, _ := w.policyMX(nil, 0)
	res := x.Deliver(context.Background(), msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Delivered, "250")
	if res[0].Host != "mx2.example.test [127.0.0.3]" {
		t.Errorf("Host = %q, want mx2", res[0].Host)
	}
	if n := len(w.rx["127.0.0.2"].Messages()); n != 0 {
		t.Errorf("mx1 got %d messages despite its certificate failing DANE", n)
	}
	if !strings.Contains(w.log.String(), "tls_policy=dane") {
		t.Errorf("log does not name the policy:\n%s", w.log.String())
	}
}

// stsServer serves policy as the MTA-STS policy of every domain, over
// HTTPS with a certificate from ca for the policy host names, and counts
// the requests. It returns the port.
func stsServer(t *testing.T, w *world, ca *testutil.CA, policy *atomic.Value, fetches *atomic.Int32, domains ...string) int {
	var hosts []string
	for _, d := range domains {
		hosts = append(hosts, "mta-sts."+d)
		w.dns.AddA("mta-sts."+d, "127.0.0.1")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(rw, r)
			return
		}
		p := policy.Load().(string)
		if code, ok := strings.CutPrefix(p, "status "); ok {
			n, _ := strconv.Atoi(code)
			rw.Header().Set("Location", "https://elsewhere.test/")
			rw.WriteHeader(n)
			return
		}
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Write([]byte(p))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, hosts...)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	return n
}

func TestMTASTS(t *testing.T) {
	ca := testutil.NewCA(t)
	good := ca.Issue(t, "mx.sts.test")
	wrongName := ca.Issue(t, "other.sts.test")
	self, _ := testutil.NewCert(t, "mx.sts.test")
	const enforce = "version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n"
	for _, tc := range []struct {
		name   string
		opts   testutil.ReceiverOptions
		policy string
		// noTXT publishes no _mta-sts record.
		noTXT bool
		want  string
	}{
		{name: "enforce, valid certificate", opts: starttls(good), policy: enforce},
		{name: "enforce, wildcard pattern", opts: starttls(good), policy: "version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 86400\n"},
		{name: "enforce, certificate for another name", opts: starttls(wrongName), policy: enforce,
			want: "TLS handshake: MTA-STS: certificate of mx.sts.test: x509: certificate is valid for other.sts.test"},
		{name: "enforce, self-signed certificate", opts: starttls(self), policy: enforce,
			want: "TLS handshake: MTA-STS: certificate of mx.sts.test: x509: certificate signed by unknown authority"},
		{name: "enforce, no STARTTLS", opts: testutil.ReceiverOptions{}, policy: enforce,
			want: "MTA-STS: TLS required but the server does not offer STARTTLS"},
		{name: "enforce, MX host not in the policy", opts: starttls(good), policy: "version: STSv1\nmode: enforce\nmx: mail.sts.test\nmax_age: 86400\n",
			want: "MTA-STS: MX host mx.sts.test is not in the enforced policy of sts.test"},
		{name: "testing mode delivers despite a self-signed certificate", opts: starttls(self), policy: "version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n"},
		{name: "mode none", opts: testutil.ReceiverOptions{}, policy: "version: STSv1\nmode: none\nmax_age: 86400\n", want: "clear"},
		{name: "no TXT record", opts: testutil.ReceiverOptions{}, policy: enforce, noTXT: true, want: "clear"},
		{name: "policy not fetched, none cached", opts: testutil.ReceiverOptions{}, policy: "status 404", want: "clear"},
		{name: "redirect not followed", opts: testutil.ReceiverOptions{}, policy: "status 301", want: "clear"},
		{name: "bad policy", opts: testutil.ReceiverOptions{}, policy: "version: STSv1\nmode: enforce\n", want: "clear"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": tc.opts}, "127.0.0.3")
			w.dns.AddMX("sts.test", 10, "mx.sts.test")
			w.dns.AddA("mx.sts.test", "127.0.0.3")
			if !tc.noTXT {
				w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=20260101T000000;")
			}
			var policy atomic.Value
			policy.Store(tc.policy)
			var fetches atomic.Int32
			port := stsServer(t, w, ca, &policy, &fetches, "sts.test")
			x, _ := w.policyMX(ca.Pool, port)
			res := x.Deliver(context.Background(), msg("sts.test", "x@sts.test"))
			checkPolicy(t, res, "x@sts.test", w.rx["127.0.0.3"], tc.want)
		})
	}
}

// SPEC R23: DANE comes first. A host whose TLSA records match is used
// even though an enforced MTA-STS policy of the domain does not name it.
func TestDANEBeforeMTASTS(t *testing.T) {
	self, _ := testutil.NewCert(t, "mx.sts.test")
	_, res := deliverDANESTS(t, testutil.NewCA(t), self, "sts.test", self.Leaf,
		"version: STSv1\nmode: enforce\nmx: other.sts.test\nmax_age: 86400\n", "mx.sts.test")
	check(t, res, "x@sts.test", Delivered, "250")
}

// A fetched policy is kept for its max_age: the next delivery does not
// fetch it again, a new id in the TXT record does, and a policy that can
// no longer be fetched stays in force from the cache (RFC 8461 §5.1).
func TestMTASTSCache(t *testing.T) {
	ca := testutil.NewCA(t)
	self, _ := testutil.NewCert(t, "mx.sts.test")
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": starttls(self)}, "127.0.0.3")
	w.dns.AddMX("sts.test", 10, "mx.sts.test")
	w.dns.AddA("mx.sts.test", "127.0.0.3")
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=1;")
	var policy atomic.Value
	policy.Store("version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n")
	var fetches atomic.Int32
	port := stsServer(t, w, ca, &policy, &fetches, "sts.test")
	x, _ := w.policyMX(ca.Pool, port)
	x.cfg.Pool.MaxMessages = 1
	deliver := func() Result {
		return x.Deliver(context.Background(), msg("sts.test", "x@sts.test"))[0]
	}
	if r := deliver(); r.Status != Delivered {
		t.Fatalf("testing mode: %v %q", r.Status, r.Reply)
	}
	policy.Store("version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n")
	if r := deliver(); r.Status != Delivered || fetches.Load() != 1 {
		t.Fatalf("cached testing policy: %v %q after %d fetches, want delivered after 1", r.Status, r.Reply, fetches.Load())
	}
	w.dns.Remove("_mta-sts.sts.test")
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=2;")
	if r := deliver(); r.Status != Temporary || !strings.Contains(r.Reply, "MTA-STS: certificate of mx.sts.test") || fetches.Load() != 2 {
		t.Fatalf("new id: %v %q after %d fetches, want deferred by the enforced policy after 2", r.Status, r.Reply, fetches.Load())
	}
	policy.Store("status 500")
	w.dns.Remove("_mta-sts.sts.test")
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=3;")
	if r := deliver(); r.Status != Temporary || !strings.Contains(r.Reply, "MTA-STS") {
		t.Fatalf("policy server failing: %v %q, want the cached enforced policy to defer", r.Status, r.Reply)
	}
	if n := len(w.rx["127.0.0.3"].Messages()); n != 2 {
		t.Errorf("receiver got %d messages, want the 2 sent under the testing policy", n)
	}
}

// A policy past half its max_age is fetched again in the background
// while the cached one goes on serving.
func TestMTASTSBackgroundRefresh(t *testing.T) {
	ca := testutil.NewCA(t)
	good := ca.Issue(t, "mx.sts.test")
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": starttls(good)}, "127.0.0.3")
	w.dns.AddMX("sts.test", 10, "mx.sts.test")
	w.dns.AddA("mx.sts.test", "127.0.0.3")
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=1;")
	var policy atomic.Value
	policy.Store("version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 3600\n")
	var fetches atomic.Int32
	port := stsServer(t, w, ca, &policy, &fetches, "sts.test")
	clock := testutil.NewClock(time.Now())
	res := &Resolver{Addr: w.dns.Addr, Timeout: 2 * time.Second}
	pc := tlspolicy.New(tlspolicy.Config{DNS: res, Roots: ca.Pool, PolicyPort: port, Now: clock.Now})
	x := w.mx(func(c *MXConfig) { c.Policy = pc })
	for i, advance := range []time.Duration{0, 20 * time.Minute, 20 * time.Minute} {
		clock.Advance(advance)
		if r := x.Deliver(context.Background(), msg("sts.test", "x@sts.test"))[0]; r.Status != Delivered {
			t.Fatalf("delivery %d: %v %q", i, r.Status, r.Reply)
		}
		pc.Wait()
	}
	// Fetched at 0, still fresh at 20 min, refreshed at 40 min (past
	// half of the hour).
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
}

// Each new session's TLS outcome is counted for the TLS reports (RFC
// 8460), under the policy applied to it as §4.4 names it: a DANE host
// failing its TLSA records as a validation failure, one passing as a
// success, each under its own records with itself as mx-host; a domain's
// MX host outside its enforced MTA-STS policy as a validation failure
// without an address and one in it as a success, both under the policy's
// lines with its mx patterns as mx-host.
func TestTLSResultsCounted(t *testing.T) {
	ca := testutil.NewCA(t)
	self, _ := testutil.NewCert(t, "mx1.example.test")
	other, _ := testutil.NewCert(t, "mx1.example.test")
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": starttls(other), "127.0.0.3": starttls(self),
		"127.0.0.4": starttls(ca.Issue(t, "mx.sts.test"))}, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddMX("example.test", 20, "mx2.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	w.dns.AddA("mx2.example.test", "127.0.0.3")
	w.dns.Add(t, tlsa("_25._tcp.mx1.example.test.", 3, self.Leaf), tlsa("_25._tcp.mx2.example.test.", 3, self.Leaf))
	for _, n := range []string{"example.test", "mx1.example.test", "mx2.example.test", "_25._tcp.mx1.example.test", "_25._tcp.mx2.example.test"} {
		w.dns.SetSecure(n, true)
	}
	w.dns.AddMX("sts.test", 5, "evil.sts.test")
	w.dns.AddMX("sts.test", 10, "mx.sts.test")
	w.dns.AddA("evil.sts.test", "127.0.0.4")
	w.dns.AddA("mx.sts.test", "127.0.0.4")
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=1;")
	_, port := policyHost(t, w, ca, servePolicy("text/plain", "version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmx: *.backup.sts.test\r\nmax_age: 86400\r\n"), "sts.test")
	results := tlspolicy.NewResults()
	clock := testutil.NewClock(time.Now())
	x, _ := w.policyMX(ca.Pool, port)
	x.cfg.TLSResults, x.cfg.Now = results, clock.Now
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
	check(t, x.Deliver(context.Background(), msg("sts.test", "x@sts.test")), "x@sts.test", Delivered, "250")
	day := clock.Now().UTC().Format(time.DateOnly)
	clock.Advance(24 * time.Hour)
	days, err := results.Take(context.Background(), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(days) != 1 {
		t.Fatalf("%d days of results, want 1", len(days))
	}
	key := sha256.Sum256(self.Leaf.RawSubjectPublicKeyInfo)
	rec := fmt.Sprintf("3 1 1 %x", key)
	for dom, want := range map[string]string{
		"example.test": `[
 {"policy":{"policy-type":"tlsa","policy-string":["` + rec + `"],"policy-domain":"example.test","mx-host":["mx1.example.test"]},
  "summary":{"total-successful-session-count":0,"total-failure-session-count":1},
  "failure-details":[{"result-type":"validation-failure","receiving-mx-hostname":"mx1.example.test","receiving-ip":"127.0.0.2","failed-session-count":1}]},
 {"policy":{"policy-type":"tlsa","policy-string":["` + rec + `"],"policy-domain":"example.test","mx-host":["mx2.example.test"]},
  "summary":{"total-successful-session-count":1,"total-failure-session-count":0}}
]`,
		"sts.test": `[
 {"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx.sts.test","mx: *.backup.sts.test","max_age: 86400"],
   "policy-domain":"sts.test","mx-host":["mx.sts.test","*.backup.sts.test"]},
  "summary":{"total-successful-session-count":1,"total-failure-session-count":1},
  "failure-details":[{"result-type":"validation-failure","receiving-mx-hostname":"evil.sts.test","failed-session-count":1}]}
]`,
	} {
		rep := days[day][dom]
		if rep == nil {
			t.Errorf("no report for %s", dom)
			continue
		}
		testutil.SameJSON(t, "the policies of "+dom, rep.Policies, want)
	}
}

// RFC 8461 §5: under a policy in testing mode mail goes out as without a
// policy, and the sessions are reported under it with the failures the
// policy would have found: a host outside the policy, a certificate not
// trusted for the host. A session that passes counts as a success.
func TestMTASTSTestingReported(t *testing.T) {
	ca := testutil.NewCA(t)
	self, _ := testutil.NewCert(t, "mx.three.test")
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": starttls(self),
		"127.0.0.4": starttls(ca.Issue(t, "mx.sts.test"))}, "127.0.0.3", "127.0.0.4")
	w.dns.AddMX("sts.test", 10, "mx.sts.test")
	w.dns.AddA("mx.sts.test", "127.0.0.4")
	w.dns.AddMX("two.test", 10, "evil.two.test")
	w.dns.AddA("evil.two.test", "127.0.0.4")
	w.dns.AddMX("three.test", 10, "mx.three.test")
	w.dns.AddA("mx.three.test", "127.0.0.3")
	for _, d := range []string{"sts.test", "two.test", "three.test"} {
		w.dns.AddTXT("_mta-sts."+d, "v=STSv1; id=1;")
	}
	const policy = "version: STSv1\r\nmode: testing\r\nmx: mx.sts.test\r\nmx: *.three.test\r\nmax_age: 86400\r\n"
	_, port := policyHost(t, w, ca, servePolicy("text/plain", policy), "sts.test", "two.test", "three.test")
	results := tlspolicy.NewResults()
	clock := testutil.NewClock(time.Now())
	x, _ := w.policyMX(ca.Pool, port)
	x.cfg.TLSResults, x.cfg.Now = results, clock.Now
	for _, d := range []string{"sts.test", "two.test", "three.test"} {
		check(t, x.Deliver(context.Background(), msg(d, "x@"+d)), "x@"+d, Delivered, "250")
	}
	if n := len(w.rx["127.0.0.4"].Messages()) + len(w.rx["127.0.0.3"].Messages()); n != 3 {
		t.Fatalf("%d messages delivered, want 3", n)
	}
	day := clock.Now().UTC().Format(time.DateOnly)
	clock.Advance(24 * time.Hour)
	days, err := results.Take(context.Background(), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	pol := func(ok, failed int) string {
		return `{"policy-type":"sts","policy-string":["version: STSv1","mode: testing","mx: mx.sts.test","mx: *.three.test","max_age: 86400"],
			"policy-domain":"%s","mx-host":["mx.sts.test","*.three.test"]},
			"summary":{"total-successful-session-count":` + strconv.Itoa(ok) + `,"total-failure-session-count":` + strconv.Itoa(failed) + `}`
	}
	for dom, want := range map[string]string{
		"sts.test": `[{"policy":` + fmt.Sprintf(pol(1, 0), "sts.test") + `}]`,
		"two.test": `[{"policy":` + fmt.Sprintf(pol(0, 1), "two.test") + `,
			"failure-details":[{"result-type":"validation-failure","receiving-mx-hostname":"evil.two.test","receiving-ip":"127.0.0.4","failed-session-count":1}]}]`,
		"three.test": `[{"policy":` + fmt.Sprintf(pol(0, 1), "three.test") + `,
			"failure-details":[{"result-type":"certificate-not-trusted","receiving-mx-hostname":"mx.three.test","receiving-ip":"127.0.0.3","failed-session-count":1}]}]`,
	} {
		rep := days[day][dom]
		if rep == nil {
			t.Errorf("no report for %s", dom)
			continue
		}
		testutil.SameJSON(t, "the policies of "+dom, rep.Policies, want)
	}
}
