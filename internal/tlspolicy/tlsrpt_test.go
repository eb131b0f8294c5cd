package tlspolicy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/testutil"
)

func TestParseTLSRPT(t *testing.T) {
	for txt, want := range map[string]string{
		"v=TLSRPTv1; rua=mailto:tls@example.com":                           "mailto:tls@example.com",
		"v=TLSRPTv1;rua=mailto:a@example.com,https://r.example.com/tlsrpt": "mailto:a@example.com https://r.example.com/tlsrpt",
		"v=TLSRPTv1; rua=mailto:a@example.com; ext=1":                      "mailto:a@example.com",
		"v=TLSRPTv2; rua=mailto:a@example.com":                             "error: not a TLSRPT record",
		"rua=mailto:a@example.com; v=TLSRPTv1":                             "error: not a TLSRPT record",
		"v=TLSRPTv1;":                                                      "error: no rua",
		"v=TLSRPTv1; rua=http://example.com/":                              "error: not a mailto: or https: URI",
		"v=TLSRPTv1; rua=ftp://example.com/, mailto:a@example.com":         "error: not a mailto: or https: URI",
	} {
		rua, err := ParseTLSRPT(txt)
		got := strings.Join(rua, " ")
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(got, want) && !(strings.HasPrefix(want, "error: ") && strings.HasPrefix(got, "error: ") && strings.Contains(got, want[len("error: "):])) {
			t.Errorf("ParseTLSRPT(%q) = %q, want %q", txt, got, want)
		}
	}
}

func FuzzParseTLSRPT(f *testing.F) {
	f.Fuzz(func(t *testing.T, txt string) {
		rua, err := ParseTLSRPT(txt)
		if err != nil {
			return
		}
		if len(rua) == 0 {
			t.Fatal("no error and no rua")
		}
		for _, u := range rua {
			if !strings.HasPrefix(u, "mailto:") && !strings.HasPrefix(u, "https:") {
				t.Fatalf("rua %q kept", u)
			}
		}
	})
}

func TestCertResult(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{x509.HostnameError{Host: "a"}, ResultCertificateHostMismatch},
		{x509.UnknownAuthorityError{}, ResultCertificateNotTrusted},
		{x509.CertificateInvalidError{Reason: x509.Expired}, ResultCertificateExpired},
		{errors.New("other"), ResultValidationFailure},
	} {
		if got := CertResult(tc.err); got != tc.want {
			t.Errorf("CertResult(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// txtDNS asks the test DNS server, over the network, for TXT records.
type txtDNS struct{ s *testutil.DNSServer }

func (d txtDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	return d.s.LookupTXT(name)
}
func (d txtDNS) LookupIP(context.Context, string) ([]netip.Addr, error) {
	return nil, errors.New("no address lookups here")
}

// A day's results become one report per domain that publishes a TLSRPT
// record, mailed to its mailto: address once the day is over: a
// multipart/report with the gzipped JSON of RFC 8460 §4.4.
func TestReporterSendsDailyReport(t *testing.T) {
	dns := testutil.NewDNSServer(t)
	dns.AddTXT("_smtp._tls.example.test", "v=TLSRPTv1; rua=mailto:tlsrpt@example.test,https://example.test/r")
	res := NewResults()
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		res.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx.example.test", ReceivingIP: "192.0.2.1"})
	}
	res.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx2.example.test", ReceivingIP: "192.0.2.2", Result: ResultValidationFailure})
	res.Add(day, Session{Domain: "norecord.test", Kind: MTASTS, MXHost: "mx.norecord.test"})
	var sent []struct {
		from string
		to   []string
		msg  []byte
	}
	clock := testutil.NewClock(day)
	rp := &Reporter{Results: res, DNS: txtDNS{dns}, Organization: "Hosting s.r.o.", Submitter: "mail.hosting.test",
		From: "tlsrpt@mail.hosting.test", Now: clock.Now,
		Submit: func(from string, to []string, msg []byte) error {
			sent = append(sent, struct {
				from string
				to   []string
				msg  []byte
			}{from, to, msg})
			return nil
		}}
	if n, err := rp.Send(context.Background()); n != 0 || err != nil {
		t.Fatalf("during the day: %d sent, %v", n, err)
	}
	clock.Advance(14 * time.Hour)
	if n, err := rp.Send(context.Background()); n != 1 || err != nil || len(sent) != 1 {
		t.Fatalf("next day: %d sent, %v", n, err)
	}
	if n, _ := rp.Send(context.Background()); n != 0 {
		t.Fatalf("a day reported twice")
	}
	if sent[0].from != "tlsrpt@mail.hosting.test" || strings.Join(sent[0].to, ",") != "tlsrpt@example.test" {
		t.Errorf("sent from %s to %v", sent[0].from, sent[0].to)
	}
	m, err := mail.ReadMessage(bytes.NewReader(sent[0].msg))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("TLS-Report-Domain") != "example.test" || !strings.HasPrefix(m.Header.Get("Subject"), "Report Domain: example.test Submitter: mail.hosting.test Report-ID: <") {
		t.Errorf("header %v", m.Header)
	}
	mt, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("Content-Type %q", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var rep Report
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		zr, err := gzip.NewReader(newBase64Reader(p))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(zr).Decode(&rep); err != nil {
			t.Fatal(err)
		}
	}
	if rep.OrganizationName != "Hosting s.r.o." || !rep.DateRange.Start.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) || len(rep.Policies) != 1 {
		t.Fatalf("report %+v", rep)
	}
	p := rep.Policies[0]
	if p.Policy.Type != "tlsa" || p.Policy.Domain != "example.test" || p.Summary.Success != 3 || p.Summary.Failure != 1 ||
		len(p.FailureDetails) != 1 || p.FailureDetails[0].ResultType != "validation-failure" || p.FailureDetails[0].MXHost != "mx2.example.test" ||
		p.FailureDetails[0].ReceivingIP != "192.0.2.2" || p.FailureDetails[0].Count != 1 {
		t.Errorf("policy results %+v", p)
	}
}

func newBase64Reader(r io.Reader) io.Reader {
	return base64.NewDecoder(base64.StdEncoding, r)
}

// An https: rua gets the gzipped JSON posted as application/tlsrpt+gzip
// (RFC 8460 §5.4).
func TestReporterPostsHTTPS(t *testing.T) {
	got := make(chan Report, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/tlsrpt+gzip" || r.URL.Path != "/tlsrpt" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		zr, err := gzip.NewReader(r.Body)
		var rep Report
		if err == nil {
			err = json.NewDecoder(zr).Decode(&rep)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- rep
	}))
	t.Cleanup(srv.Close)
	dns := testutil.NewDNSServer(t)
	dns.AddTXT("_smtp._tls.example.test", "v=TLSRPTv1; rua="+srv.URL+"/tlsrpt")
	res := NewResults()
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	res.Add(day, Session{Domain: "example.test", Kind: MTASTS, MXHost: "mx.example.test", ReceivingIP: "192.0.2.1", Result: ResultCertificateExpired})
	rp := &Reporter{Results: res, DNS: txtDNS{dns}, Organization: "Hosting", Submitter: "mail.hosting.test", From: "tlsrpt@mail.hosting.test",
		Now: func() time.Time { return day.Add(24 * time.Hour) }, HTTP: srv.Client(),
		Submit: func(string, []string, []byte) error { t.Error("no mailto: address, yet a mail"); return nil }}
	if n, err := rp.Send(context.Background()); n != 1 || err != nil {
		t.Fatalf("Send: %d, %v", n, err)
	}
	rep := <-got
	if p := rep.Policies[0]; p.Policy.Type != "sts" || p.Summary.Failure != 1 || p.FailureDetails[0].ResultType != ResultCertificateExpired {
		t.Errorf("posted %+v", rep)
	}
}

// A report names each policy its domain's sessions were under the way
// RFC 8460 §4.4 says: per policy-type and policy-string, the TLSA records
// of a DANE host with that host as mx-host, the lines of an MTA-STS
// policy with its mx patterns as mx-host. A domain whose MTA-STS policy
// changed during the day has an entry for each; a failed policy fetch
// counts under "sts" without a policy-string; sessions without a policy
// under "no-policy-found", with neither.
func TestReportPolicies(t *testing.T) {
	res := NewResults()
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	mx1 := tlsaApplied("mx1.dane.test", []TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{0xab, 0xcd}}})
	mx2 := tlsaApplied("mx2.dane.test", []TLSA{{Usage: 2, Selector: 0, MatchingType: 1, Data: []byte{0x01}}, {Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{0x02}}})
	for range 2 {
		res.Add(day, Session{Domain: "dane.test", Kind: DANE, MXHost: "mx1.dane.test", ReceivingIP: "192.0.2.1", Applied: mx1})
	}
	res.Add(day, Session{Domain: "dane.test", Kind: DANE, MXHost: "mx2.dane.test", ReceivingIP: "192.0.2.2", Result: ResultValidationFailure, Applied: mx2})

	v1 := STSApplied(&Policy{Mode: ModeEnforce, MaxAge: 86400 * time.Second, MX: []string{"mx.sts.test"}})
	v2 := STSApplied(&Policy{Mode: ModeEnforce, MaxAge: 604800 * time.Second, MX: []string{"mx.sts.test", "*.backup.sts.test"}})
	for range 2 {
		res.Add(day, Session{Domain: "sts.test", Kind: MTASTS, MXHost: "mx.sts.test", ReceivingIP: "192.0.2.3", Applied: v1})
	}
	res.Add(day.Add(2*time.Hour), Session{Domain: "sts.test", Kind: MTASTS, Result: ResultSTSPolicyFetchError})
	res.Add(day.Add(2*time.Hour), Session{Domain: "sts.test", Kind: Opportunistic, MXHost: "mx.sts.test", ReceivingIP: "192.0.2.3"})
	res.Add(day.Add(5*time.Hour), Session{Domain: "sts.test", Kind: MTASTS, MXHost: "mx.sts.test", ReceivingIP: "192.0.2.3", Applied: v2})
	res.Add(day.Add(5*time.Hour), Session{Domain: "sts.test", Kind: MTASTS, MXHost: "a.backup.sts.test", ReceivingIP: "192.0.2.4", Result: ResultCertificateExpired, Applied: v2})

	days, err := res.Take(context.Background(), day.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for dom, want := range map[string]string{
		"dane.test": `[
 {"policy":{"policy-type":"tlsa","policy-string":["2 0 1 01","3 1 1 02"],"policy-domain":"dane.test","mx-host":["mx2.dane.test"]},
  "summary":{"total-successful-session-count":0,"total-failure-session-count":1},
  "failure-details":[{"result-type":"validation-failure","receiving-mx-hostname":"mx2.dane.test","receiving-ip":"192.0.2.2","failed-session-count":1}]},
 {"policy":{"policy-type":"tlsa","policy-string":["3 1 1 abcd"],"policy-domain":"dane.test","mx-host":["mx1.dane.test"]},
  "summary":{"total-successful-session-count":2,"total-failure-session-count":0}}
]`,
		"sts.test": `[
 {"policy":{"policy-type":"no-policy-found","policy-domain":"sts.test"},
  "summary":{"total-successful-session-count":1,"total-failure-session-count":0}},
 {"policy":{"policy-type":"sts","policy-domain":"sts.test"},
  "summary":{"total-successful-session-count":0,"total-failure-session-count":1},
  "failure-details":[{"result-type":"sts-policy-fetch-error","failed-session-count":1}]},
 {"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx.sts.test","max_age: 86400"],"policy-domain":"sts.test","mx-host":["mx.sts.test"]},
  "summary":{"total-successful-session-count":2,"total-failure-session-count":0}},
 {"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx.sts.test","mx: *.backup.sts.test","max_age: 604800"],"policy-domain":"sts.test","mx-host":["mx.sts.test","*.backup.sts.test"]},
  "summary":{"total-successful-session-count":1,"total-failure-session-count":1},
  "failure-details":[{"result-type":"certificate-expired","receiving-mx-hostname":"a.backup.sts.test","receiving-ip":"192.0.2.4","failed-session-count":1}]}
]`,
	} {
		rep := days["2026-03-01"][dom]
		if rep == nil {
			t.Errorf("no report for %s", dom)
			continue
		}
		testutil.SameJSON(t, "the policies of "+dom, rep.Policies, want)
	}
}

// RFC 8460 §3: a domain with two TLSRPT records has none, and records of
// other kinds beside one are ignored; the report goes to at most
// maxReportURIs addresses, and a mailto: that is no plain address is
// skipped.
func TestReporterRecordRules(t *testing.T) {
	dns := testutil.NewDNSServer(t)
	dns.AddTXT("_smtp._tls.two.test", "v=TLSRPTv1; rua=mailto:a@two.test")
	dns.AddTXT("_smtp._tls.two.test", "v=TLSRPTv1; rua=mailto:b@two.test")
	dns.AddTXT("_smtp._tls.many.test", "v=spf1 -all")
	var rua []string
	for i := range 8 {
		rua = append(rua, fmt.Sprintf("mailto:r%d@many.test", i))
	}
	dns.AddTXT("_smtp._tls.many.test", "v=TLSRPTv1; rua=mailto:Jan%20%3Cjan@many.test%3E,"+strings.Join(rua, ","))
	res := NewResults()
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	res.Add(day, Session{Domain: "two.test", MXHost: "mx.two.test"})
	res.Add(day, Session{Domain: "many.test", MXHost: "mx.many.test"})
	sent := map[string][]string{}
	rp := &Reporter{Results: res, DNS: txtDNS{dns}, Organization: "Hosting", Submitter: "mail.hosting.test", From: "tlsrpt@mail.hosting.test",
		Now: func() time.Time { return day.Add(24 * time.Hour) },
		Submit: func(_ string, to []string, msg []byte) error {
			m, err := mail.ReadMessage(bytes.NewReader(msg))
			if err != nil {
				return err
			}
			sent[m.Header.Get("TLS-Report-Domain")] = to
			return nil
		}}
	if n, err := rp.Send(context.Background()); n != 1 || err != nil {
		t.Fatalf("Send: %d, %v", n, err)
	}
	if to, ok := sent["two.test"]; ok {
		t.Errorf("a domain with two TLSRPT records got a report, to %v", to)
	}
	if got := strings.Join(sent["many.test"], ","); got != "r0@many.test,r1@many.test,r2@many.test,r3@many.test" {
		t.Errorf("many.test's report went to %s", got)
	}
}

// A report address that answers with a redirect does not get the report
// sent on to where it points: the post fails like any answer that is not
// 2xx.
func TestReporterFollowsNoRedirect(t *testing.T) {
	var redirected atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			redirected.Add(1)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	dns := testutil.NewDNSServer(t)
	dns.AddTXT("_smtp._tls.example.test", "v=TLSRPTv1; rua="+srv.URL+"/tlsrpt")
	res := NewResults()
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	res.Add(day, Session{Domain: "example.test", MXHost: "mx.example.test"})
	rp := &Reporter{Results: res, DNS: txtDNS{dns}, Organization: "Hosting", Submitter: "mail.hosting.test", From: "tlsrpt@mail.hosting.test",
		Now: func() time.Time { return day.Add(24 * time.Hour) }, HTTP: srv.Client()}
	n, err := rp.Send(context.Background())
	if n != 0 || err == nil || !strings.Contains(err.Error(), "307") {
		t.Fatalf("Send: %d, %v; want the redirect as the error", n, err)
	}
	if got := redirected.Load(); got != 0 {
		t.Fatalf("the report was posted on to the redirect's target %d times", got)
	}
}
