package delivery

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
	"submitd/internal/tlspolicy"
)

// policyHost serves h as https://mta-sts.DOMAIN for the domains, with a
// certificate from ca, and names it in the world's DNS. It returns the
// server, closed when the test ends, and its port.
func policyHost(t *testing.T, w *world, ca *testutil.CA, h http.HandlerFunc, domains ...string) (*httptest.Server, int) {
	var hosts []string
	for _, d := range domains {
		hosts = append(hosts, "mta-sts."+d)
		w.dns.AddA("mta-sts."+d, "127.0.0.1")
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, hosts...)}}
	// The handshakes a test fails on purpose are not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	return srv, n
}

// servePolicy answers with body as contentType.
func servePolicy(contentType, body string) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", contentType)
		rw.Write([]byte(body))
	}
}

// A policy that cannot be had counts in the TLS report of the domain as
// a failed session under its MTA-STS policy, of the result type of RFC
// 8460 §4.3.2 that says why, while the mail goes on without a policy
// (RFC 8461 §5) and counts as such.
func TestMTASTSFetchFailureReported(t *testing.T) {
	ca := testutil.NewCA(t)
	otherCA := testutil.NewCA(t)
	self, _ := testutil.NewCert(t, "mx.sts.test")
	const enforce = "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		// ca issues the policy host's certificate; nil: the trusted one.
		ca   *testutil.CA
		want string
	}{
		{name: "not found", h: http.NotFound, want: tlspolicy.ResultSTSPolicyFetchError},
		{name: "server error", h: func(rw http.ResponseWriter, _ *http.Request) { http.Error(rw, "down", http.StatusInternalServerError) },
			want: tlspolicy.ResultSTSPolicyFetchError},
		{name: "redirect", h: func(rw http.ResponseWriter, r *http.Request) {
			http.Redirect(rw, r, "https://elsewhere.test/", http.StatusFound)
		},
			want: tlspolicy.ResultSTSPolicyFetchError},
		{name: "not text/plain", h: servePolicy("text/html", enforce), want: tlspolicy.ResultSTSPolicyFetchError},
		{name: "timeout", h: func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, want: tlspolicy.ResultSTSPolicyFetchError},
		{name: "policy host not trusted", h: servePolicy("text/plain", enforce), ca: otherCA, want: tlspolicy.ResultSTSWebPKIInvalid},
		{name: "invalid policy", h: servePolicy("text/plain", "version: STSv1\nmode: enforce\n"), want: tlspolicy.ResultSTSPolicyInvalid},
		{name: "policy too large", h: servePolicy("text/plain", enforce+strings.Repeat("x: y\n", tlspolicy.MaxPolicySize/5+1)),
			want: tlspolicy.ResultSTSPolicyInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": starttls(self)}, "127.0.0.3")
			w.dns.AddMX("sts.test", 10, "mx.sts.test")
			w.dns.AddA("mx.sts.test", "127.0.0.3")
			w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=1;")
			issuer := ca
			if tc.ca != nil {
				issuer = tc.ca
			}
			_, port := policyHost(t, w, issuer, tc.h, "sts.test")
			results := tlspolicy.NewResults()
			clock := testutil.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
			res := &Resolver{Addr: w.dns.Addr, Timeout: 2 * time.Second}
			pc := tlspolicy.New(tlspolicy.Config{DNS: res, Roots: ca.Pool, PolicyPort: port, FetchTimeout: time.Second,
				Results: results, Now: clock.Now})
			x := w.mx(func(c *MXConfig) { c.Policy, c.TLSResults, c.Now = pc, results, clock.Now })
			check(t, x.Deliver(context.Background(), msg("sts.test", "x@sts.test")), "x@sts.test", Delivered, "250")

			clock.Advance(24 * time.Hour)
			days, err := results.Take(context.Background(), clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			rep := days["2026-03-01"]["sts.test"]
			if rep == nil || len(rep.Policies) != 2 {
				t.Fatalf("report %+v, want one of two policies", rep)
			}
			without, sts := rep.Policies[0], rep.Policies[1]
			if without.Policy.Type != "no-policy-found" || without.Summary.Success != 1 || without.Summary.Failure != 0 {
				t.Errorf("the session made without the policy: %+v", without)
			}
			// No policy was had: none is named (RFC 8460 §4.4).
			if sts.Policy.Type != "sts" || sts.Policy.Domain != "sts.test" || sts.Policy.String != nil || sts.Policy.MXHost != nil || sts.Summary.Success != 0 || sts.Summary.Failure != 1 ||
				len(sts.FailureDetails) != 1 || sts.FailureDetails[0].ResultType != tc.want || sts.FailureDetails[0].Count != 1 {
				t.Errorf("the policy failure: %+v, want one %s", sts, tc.want)
			}
		})
	}
}

// RFC 8461 §5.1: a cached enforced policy stays in force until its max_age
// ends, over a restart too. After the restart (a new cache and Checker on
// the same store) the domain's _mta-sts record is gone, its policy host
// down and its MX record names a host outside the policy, as an attacker
// on the path would have it: the mail is deferred, not sent in clear.
func TestMTASTSPolicySurvivesRestart(t *testing.T) {
	ca := testutil.NewCA(t)
	good := ca.Issue(t, "mx.sts.test")
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": starttls(good), "127.0.0.4": {}}, "127.0.0.3", "127.0.0.4")
	w.dns.AddMX("sts.test", 10, "mx.sts.test")
	w.dns.AddA("mx.sts.test", "127.0.0.3")
	w.dns.AddA("evil.attacker.test", "127.0.0.4")
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=1;")
	srv, port := policyHost(t, w, ca, servePolicy("text/plain", "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 604800\n"), "sts.test")
	st, err := tlspolicy.NewSQLiteStore(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Now())
	// start is a node's start: a cache loaded from st (when not nil), and
	// an MX sender whose Checker uses it.
	start := func(st tlspolicy.Store) (*MX, *tlspolicy.Cache) {
		cache := tlspolicy.NewCache(0)
		if st != nil {
			if err := cache.Restore(context.Background(), st, clock.Now()); err != nil {
				t.Fatal(err)
			}
		}
		res := &Resolver{Addr: w.dns.Addr, Timeout: 2 * time.Second}
		pc := tlspolicy.New(tlspolicy.Config{DNS: res, Roots: ca.Pool, PolicyPort: port, FetchTimeout: 5 * time.Second,
			Cache: cache, Now: clock.Now})
		return w.mx(func(c *MXConfig) { c.Policy, c.RootCAs, c.Now = pc, ca.Pool, clock.Now }), cache
	}
	x, cache := start(st)
	check(t, x.Deliver(context.Background(), msg("sts.test", "x@sts.test")), "x@sts.test", Delivered, "250")
	if got := w.rx["127.0.0.3"].Messages(); len(got) != 1 || !got[0].TLS {
		t.Fatalf("before the restart: %d messages at mx.sts.test, want 1 over TLS", len(got))
	}
	if err := cache.Flush(context.Background(), clock.Now()); err != nil {
		t.Fatal(err)
	}

	srv.Close()
	w.dns.Remove("_mta-sts.sts.test")
	w.dns.Remove("sts.test")
	w.dns.AddMX("sts.test", 10, "evil.attacker.test")
	clock.Advance(3 * 24 * time.Hour)

	x, _ = start(st)
	check(t, x.Deliver(context.Background(), msg("sts.test", "x@sts.test")), "x@sts.test", Temporary,
		"MTA-STS: MX host evil.attacker.test is not in the enforced policy of sts.test")
	if n := len(w.rx["127.0.0.4"].Messages()); n != 0 {
		t.Fatalf("the attacker's host got %d messages after the restart", n)
	}

	// Without the store, the restarted sender would have no policy and
	// hand the mail over in clear: what the cache over restarts prevents.
	x, _ = start(nil)
	check(t, x.Deliver(context.Background(), msg("sts.test", "x@sts.test")), "x@sts.test", Delivered, "250")
	if got := w.rx["127.0.0.4"].Messages(); len(got) != 1 || got[0].TLS {
		t.Fatalf("without the store: %d messages at the attacker's host, want 1 in clear", len(got))
	}

	// Once max_age is over, the policy is gone after a restart as well.
	clock.Advance(5 * 24 * time.Hour)
	x, cache = start(st)
	if cache.Len() != 0 {
		t.Errorf("%d policies loaded past their max_age", cache.Len())
	}
	check(t, x.Deliver(context.Background(), msg("sts.test", "x@sts.test")), "x@sts.test", Delivered, "250")
}
