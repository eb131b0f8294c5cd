package tlspolicy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// TLS-RPT (RFC 8460): the results of the sessions under each recipient
// domain's policy are counted per UTC day and, once the day is over,
// reported to the addresses the domain names in its _smtp._tls TXT record.

// Failure result types of RFC 8460 §4.3.
const (
	ResultStartTLSNotSupported    = "starttls-not-supported"
	ResultCertificateHostMismatch = "certificate-host-mismatch"
	ResultCertificateExpired      = "certificate-expired"
	ResultCertificateNotTrusted   = "certificate-not-trusted"
	ResultValidationFailure       = "validation-failure"
	ResultTLSAInvalid             = "tlsa-invalid"
	ResultDNSSECInvalid           = "dnssec-invalid"
	ResultSTSPolicyFetchError     = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid        = "sts-policy-invalid"
	ResultSTSWebPKIInvalid        = "sts-webpki-invalid"
)

// maxReportDomains bounds the policy domains counted per day, and
// maxFailureDetails the distinct hosts and results counted per domain, so
// that mail to many domains, or a domain of many hosts, cannot grow the
// results, in memory or in the store, without end.
const (
	maxReportDomains  = 10000
	maxFailureDetails = 100
)

// maxPolicies bounds the distinct policies counted per domain and day, and
// maxPolicyKey the length of one policy's encoded form (policyKey). A
// domain that changes its MTA-STS policy every minute, or publishes a huge
// one, thus costs at most maxPolicies×maxPolicyKey bytes a day: a session
// under a policy past either bound counts without it, under its policy
// type with no policy-string and no mx-host. maxPolicyKey also keeps a
// row of tlspolicy_counts within PostgreSQL's limit on an index entry
// (about 2700 bytes, all the key's columns together); it holds some 20
// TLSA records or 50 mx lines, more than real policies have.
const (
	maxPolicies  = 10
	maxPolicyKey = 1536
)

// Session is the outcome of one SMTP session's TLS under a policy.
type Session struct {
	// Domain is the policy domain (the recipient domain).
	Domain string
	// Kind is the policy the session was under.
	Kind Kind
	// MXHost is the MX host name; ReceivingIP its address.
	MXHost, ReceivingIP string
	// Result is "" for success, else a result type of §4.3.
	Result string
	// Applied is the policy the session was under, as the report names
	// it.
	Applied
}

// Applied is a policy applied to sessions, as a TLS report names it (RFC
// 8460 §4.4): the report has one entry in "policies" per policy-type and
// policy-string, so that a domain whose MTA-STS policy changed during the
// day, or whose MX hosts each have their own TLSA records, gets each
// policy's sessions apart.
//
// §4.4 defines "policy-string" as the applied policy encoded as a JSON
// array of strings, be it TLSA records (each record's four RDATA fields
// in RFC 6698 §2.3 presentation format, "3 1 1 ab12…") or an MTA-STS
// policy (its lines, "version: STSv1", "mode: enforce", "mx: …",
// "max_age: …", as in the example of §4.5), and "mx-host" as the MX
// host patterns of the applied policy: for "sts" the policy's mx
// patterns; a TLSA policy names no pattern but is that of one MX host,
// whose name is then the one. A session of "no-policy-found" has
// neither, only the policy-domain. A failed MTA-STS fetch (§4.3.2) has
// no policy to name: it counts under "sts" with neither either.
type Applied struct {
	// Policy is the policy-string; nil when there is none.
	Policy []string
	// PolicyMX is the mx-host.
	PolicyMX []string
}

// policyKey is a's compact form, a count's key in memory and in the
// store: "" for no policy, else a JSON object.
func (a Applied) policyKey() string {
	if len(a.Policy) == 0 && len(a.PolicyMX) == 0 {
		return ""
	}
	b, _ := json.Marshal(storedApplied{a.Policy, a.PolicyMX})
	return string(b)
}

// storedApplied is the JSON of policyKey.
type storedApplied struct {
	Policy []string `json:"s,omitempty"`
	MX     []string `json:"mx,omitempty"`
}

// appliedOf reads a policyKey; anything unreadable is no policy.
func appliedOf(key string) Applied {
	var sa storedApplied
	if key == "" || json.Unmarshal([]byte(key), &sa) != nil {
		return Applied{}
	}
	return Applied{Policy: sa.Policy, PolicyMX: sa.MX}
}

// STSApplied is the MTA-STS policy p as a TLS report names it (RFC 8460
// §4.4): its lines as policy-string, its mx patterns as mx-host.
func STSApplied(p *Policy) Applied {
	lines := []string{"version: STSv1", "mode: " + string(p.Mode)}
	for _, mx := range p.MX {
		lines = append(lines, "mx: "+mx)
	}
	lines = append(lines, fmt.Sprintf("max_age: %d", int64(p.MaxAge/time.Second)))
	return Applied{Policy: lines, PolicyMX: slices.Clone(p.MX)}
}

// tlsaApplied is the TLSA records recs of the MX host host as a TLS
// report names them (RFC 8460 §4.4): the records in presentation format
// as policy-string, the host as mx-host.
func tlsaApplied(host string, recs []TLSA) Applied {
	a := Applied{PolicyMX: []string{host}}
	for _, r := range recs {
		a.Policy = append(a.Policy, r.String())
	}
	return a
}

// CertResult turns a certificate check's error into a result type of
// RFC 8460 §4.3.
func CertResult(err error) string {
	var he x509.HostnameError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &he):
		return ResultCertificateHostMismatch
	case errors.As(err, &ua):
		return ResultCertificateNotTrusted
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return ResultCertificateExpired
	}
	return ResultValidationFailure
}

// Results counts sessions per day and policy domain. With a Store
// (Restore) the counts are saved there (Flush) and the finished days taken
// from it, so that a restart loses neither the day's counts nor sends a
// report twice. It is safe for concurrent use.
type Results struct {
	mu   sync.Mutex
	days map[string]map[string]*domainResults // day "2006-01-02" → domain
	// store keeps the counts; nil keeps them in memory only.
	store Store
	// pending are the counts to add to the store at the next Flush.
	pending map[countKey]int64
}

// detailKey tells one domain's counts of a day apart: the policy (its
// kind and policyKey), the result ("" for success) and the host.
type detailKey struct {
	kind                   Kind
	policy, result, mx, ip string
}

// countKey is a detailKey of a day and domain.
type countKey struct {
	day, domain string
	detailKey
}

// domainResults are one domain's counts for a day.
type domainResults struct {
	counts map[detailKey]int64
	// policies are the distinct policyKeys counted, each kept once
	// however many counts it is part of.
	policies map[string]string
}

// NewResults returns empty Results.
func NewResults() *Results {
	return &Results{days: map[string]map[string]*domainResults{}, pending: map[countKey]int64{}}
}

// Add counts s at time t.
func (r *Results) Add(t time.Time, s Session) {
	k := detailKey{s.Kind, s.Applied.policyKey(), s.Result, s.MXHost, s.ReceivingIP}
	if s.Result == "" {
		// Successes are told apart by host name only (§4.4 mx-host).
		k.ip = ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ck, ok := r.addLocked(t.UTC().Format(time.DateOnly), s.Domain, k, 1); ok && r.store != nil {
		r.pending[ck]++
	}
}

// addLocked adds n to the count of day, domain and k within the bounds:
// past maxReportDomains a new domain is not counted, past maxPolicies
// distinct policies of a domain, or for a policy longer than
// maxPolicyKey, the sessions count without their policy, and past
// maxFailureDetails distinct keys of a domain, without their policy and
// host. It returns the key counted under.
func (r *Results) addLocked(day, domain string, k detailKey, n int64) (countKey, bool) {
	dd := r.days[day]
	if dd == nil {
		dd = map[string]*domainResults{}
		r.days[day] = dd
	}
	d := dd[domain]
	if d == nil {
		if len(dd) >= maxReportDomains {
			return countKey{}, false
		}
		d = &domainResults{counts: map[detailKey]int64{}, policies: map[string]string{}}
		dd[domain] = d
	}
	if p, ok := d.policies[k.policy]; ok {
		k.policy = p
	} else if len(k.policy) > maxPolicyKey || len(d.policies) >= maxPolicies {
		k.policy = ""
	}
	if _, ok := d.counts[k]; !ok && len(d.counts) >= maxFailureDetails {
		// The kinds and results are few: this key stays bounded.
		k.policy, k.mx, k.ip = "", "", ""
	}
	if k.policy != "" {
		d.policies[k.policy] = k.policy
	}
	d.counts[k] += n
	return countKey{day, domain, k}, true
}

// Restore loads the counts kept in st and keeps saving there (Flush). It
// is called before anything is counted.
func (r *Results) Restore(ctx context.Context, st Store) error {
	cs, err := st.LoadCounts(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.store = st
	for _, c := range cs {
		r.addLocked(c.Day, c.Domain, detailKey{c.Kind, c.Policy, c.Result, c.MXHost, c.ReceivingIP}, c.N)
	}
	return nil
}

// Flush adds what was counted since the last Flush to the store. What
// could not be saved waits for the next one.
func (r *Results) Flush(ctx context.Context) error {
	r.mu.Lock()
	if r.store == nil || len(r.pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	st, pending := r.store, r.pending
	r.pending = map[countKey]int64{}
	r.mu.Unlock()
	cs := make([]Count, 0, len(pending))
	for k, n := range pending {
		cs = append(cs, k.count(n))
	}
	err := st.AddCounts(ctx, cs)
	if err != nil {
		// The keys are those of the days in memory, which are bounded.
		r.mu.Lock()
		for k, n := range pending {
			r.pending[k] += n
		}
		r.mu.Unlock()
	}
	return err
}

// count is the Count of n sessions under k.
func (k countKey) count(n int64) Count {
	return Count{Day: k.day, Domain: k.domain, Kind: k.kind, Policy: k.policy, Result: k.result, MXHost: k.mx, ReceivingIP: k.ip, N: n}
}

// Take removes and returns the days before the one of now, each as its
// domains' reports (without organization, contact and id). With a store,
// the counts not yet saved are saved first and the days taken from the
// store, whose each count one taker gets.
func (r *Results) Take(ctx context.Context, now time.Time) (map[string]map[string]*Report, error) {
	today := now.UTC().Format(time.DateOnly)
	r.mu.Lock()
	st := r.store
	r.mu.Unlock()
	var counts []Count
	if st != nil {
		if err := r.Flush(ctx); err != nil {
			return nil, err
		}
		var err error
		if counts, err = st.TakeCounts(ctx, today); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	for day, dd := range r.days {
		if day >= today {
			continue
		}
		delete(r.days, day)
		if st != nil {
			continue
		}
		for dom, d := range dd {
			for k, n := range d.counts {
				counts = append(counts, countKey{day, dom, k}.count(n))
			}
		}
	}
	r.mu.Unlock()
	return reports(counts), nil
}

// reports turns counts into a report per day and domain, with one policy
// result per policy the domain's sessions were under: per policy-type and
// policy-string (Applied).
func reports(counts []Count) map[string]map[string]*Report {
	out := map[string]map[string]*Report{}
	for _, c := range counts {
		start, err := time.Parse(time.DateOnly, c.Day)
		if err != nil {
			continue
		}
		if out[c.Day] == nil {
			out[c.Day] = map[string]*Report{}
		}
		rep := out[c.Day][c.Domain]
		if rep == nil {
			rep = &Report{DateRange: DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)}}
			out[c.Day][c.Domain] = rep
		}
		typ := policyType(c.Kind)
		i := 0
		for i < len(rep.Policies) && (rep.Policies[i].Policy.Type != typ || rep.Policies[i].key != c.Policy) {
			i++
		}
		if i == len(rep.Policies) {
			desc := PolicyDesc{Type: typ, Domain: c.Domain}
			if typ != "no-policy-found" {
				a := appliedOf(c.Policy)
				desc.String, desc.MXHost = a.Policy, a.PolicyMX
			}
			rep.Policies = append(rep.Policies, PolicyResult{Policy: desc, key: c.Policy})
		}
		p := &rep.Policies[i]
		if c.Result == "" {
			p.Summary.Success += c.N
			continue
		}
		p.Summary.Failure += c.N
		p.FailureDetails = append(p.FailureDetails, FailureDetail{ResultType: c.Result, MXHost: c.MXHost, ReceivingIP: c.ReceivingIP, Count: c.N})
	}
	for _, dd := range out {
		for _, rep := range dd {
			sort.Slice(rep.Policies, func(i, j int) bool {
				a, b := rep.Policies[i], rep.Policies[j]
				return a.Policy.Type < b.Policy.Type || a.Policy.Type == b.Policy.Type && a.key < b.key
			})
			for i := range rep.Policies {
				p := &rep.Policies[i]
				sort.Slice(p.FailureDetails, func(i, j int) bool {
					a, b := p.FailureDetails[i], p.FailureDetails[j]
					return a.ResultType+" "+a.MXHost+" "+a.ReceivingIP < b.ResultType+" "+b.MXHost+" "+b.ReceivingIP
				})
			}
		}
	}
	return out
}

// policyType is the policy-type of RFC 8460 §4.4 for k.
func policyType(k Kind) string {
	switch k {
	case DANE:
		return "tlsa"
	case MTASTS:
		return "sts"
	}
	return "no-policy-found"
}

// Report is an RFC 8460 §4.4 report for one policy domain.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyResult `json:"policies"`
}

// DateRange is the day a report covers.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyResult is one policy's results.
type PolicyResult struct {
	Policy         PolicyDesc      `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
	// key is the policy's policyKey, which tells it apart in its report.
	key string
}

// PolicyDesc names the policy (§4.4; see Applied).
type PolicyDesc struct {
	Type   string   `json:"policy-type"`
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// Summary counts the sessions.
type Summary struct {
	Success int64 `json:"total-successful-session-count"`
	Failure int64 `json:"total-failure-session-count"`
}

// FailureDetail is one kind of failure with one host.
type FailureDetail struct {
	ResultType  string `json:"result-type"`
	MXHost      string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP string `json:"receiving-ip,omitempty"`
	Count       int64  `json:"failed-session-count"`
}

// ParseTLSRPT parses a _smtp._tls TXT record (RFC 8460 §3):
// "v=TLSRPTv1; rua=mailto:a@example.com,https://…". It returns the
// report URIs.
func ParseTLSRPT(txt string) ([]string, error) {
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=TLSRPTv1" {
		return nil, errors.New(`not a TLSRPT record (does not start with "v=TLSRPTv1")`)
	}
	var rua []string
	for _, f := range fields[1:] {
		f = strings.TrimSpace(f)
		k, v, ok := strings.Cut(f, "=")
		if !ok || strings.TrimSpace(k) != "rua" {
			continue
		}
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "mailto" && pu.Scheme != "https") || len(u) > 2048 {
				return nil, fmt.Errorf("TLSRPT rua %q is not a mailto: or https: URI", clip(u))
			}
			rua = append(rua, u)
		}
	}
	if len(rua) == 0 {
		return nil, errors.New("TLSRPT record has no rua")
	}
	return rua, nil
}

// Reporter mails the reports of finished days.
type Reporter struct {
	// Results are the counts.
	Results *Results
	// DNS looks up the _smtp._tls records.
	DNS DNS
	// Organization is the organization-name, and the submitter's domain
	// (the node's hostname's domain, RFC 8460 §5.3).
	Organization, Submitter string
	// From is the address the reports come from.
	From string
	// Submit puts a report message in the queue for the addresses to.
	Submit func(from string, to []string, msg []byte) error
	// HTTP posts reports to https: addresses (RFC 8460 §5.4); nil: they
	// are skipped.
	HTTP *http.Client
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Send mails the reports of the days before today to the mailto: rua of
// each domain that publishes a TLSRPT record, and posts them to its
// https: rua when HTTP is set; domains without one are skipped. It
// returns how many reports were queued or posted.
func (rp *Reporter) Send(ctx context.Context) (int, error) {
	now := time.Now
	if rp.Now != nil {
		now = rp.Now
	}
	var errs []error
	sent := 0
	days, err := rp.Results.Take(ctx, now())
	if err != nil {
		return 0, err
	}
	for _, dd := range days {
		for dom, rep := range dd {
			txts, err := rp.DNS.LookupTXT(ctx, "_smtp._tls."+dom)
			if err != nil {
				continue
			}
			var to, posts []string
			for _, u := range reportURIs(txts) {
				if strings.HasPrefix(u, "https:") {
					posts = append(posts, u)
				}
				if a, ok := strings.CutPrefix(u, "mailto:"); ok {
					addr, err := url.PathUnescape(a)
					addr, _, _ = strings.Cut(addr, "?")
					// Only an address as such, not a display name or a
					// group, goes into the envelope.
					if pa, perr := mail.ParseAddress(addr); err == nil && perr == nil && pa.Address == addr {
						to = append(to, addr)
					}
				}
			}
			if rp.HTTP == nil {
				posts = nil
			}
			if len(to) == 0 && len(posts) == 0 {
				continue
			}
			rep.OrganizationName, rep.ContactInfo = rp.Organization, rp.From
			rep.ReportID = reportID(rep.DateRange.Start, dom)
			if len(to) > 0 {
				msg, err := rp.Message(dom, rep, now())
				if err == nil {
					err = rp.Submit(rp.From, to, msg)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("TLS report for %s: %w", dom, err))
				} else {
					sent++
				}
			}
			for _, u := range posts {
				if err := rp.post(ctx, u, rep); err != nil {
					errs = append(errs, fmt.Errorf("TLS report for %s to %s: %w", dom, u, err))
					continue
				}
				sent++
			}
		}
	}
	return sent, errors.Join(errs...)
}

// maxReportURIs bounds the addresses one domain's report goes to, so that
// a recipient domain cannot make the node mail or post its report to a
// crowd: its TLSRPT record is the domain's to write.
const maxReportURIs = 5

// reportURIs returns the report addresses of a domain's _smtp._tls TXT
// records, at most maxReportURIs. RFC 8460 §3: the records that do not
// start with "v=TLSRPTv1" are set aside, and unless exactly one is left
// the domain has no TLSRPT, so none when several are published.
func reportURIs(txts []string) []string {
	var recs []string
	for _, t := range txts {
		if v, _, _ := strings.Cut(t, ";"); strings.TrimSpace(v) == "v=TLSRPTv1" {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return nil
	}
	rua, err := ParseTLSRPT(recs[0])
	if err != nil {
		return nil
	}
	return rua[:min(len(rua), maxReportURIs)]
}

// post sends rep to the https: address u (RFC 8460 §5.4): the gzipped
// JSON as application/tlsrpt+gzip; any 2xx answer is success.
func (rp *Reporter) post(ctx context.Context, u string, rep *Report) error {
	body, err := gzipJSON(rep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/tlsrpt+gzip")
	// A redirect is not followed, as the MTA-STS policy fetch follows
	// none (RFC 8461 §3.3): the address is the one the domain published,
	// and a 3xx answer fails the post like any other that is not 2xx.
	c := *rp.HTTP
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP status %s", resp.Status)
	}
	return nil
}

// gzipJSON is rep as gzipped JSON.
func gzipJSON(rep *Report) ([]byte, error) {
	js, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(js)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return gz.Bytes(), nil
}

func reportID(day time.Time, domain string) string {
	var b [8]byte
	rand.Read(b[:])
	return day.Format("2006-01-02") + "_" + domain + "_" + hex.EncodeToString(b[:])
}

// Message builds the report mail of RFC 8460 §5.3: multipart/report of
// report-type tlsrpt with the gzipped JSON as application/tlsrpt+gzip.
func (rp *Reporter) Message(domain string, rep *Report, now time.Time) ([]byte, error) {
	gz, err := gzipJSON(rep)
	if err != nil {
		return nil, err
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	boundary := "=_tlsrpt_" + hex.EncodeToString(rnd[:])
	var b bytes.Buffer
	crlf := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	crlf("From: %s", (&mail.Address{Address: rp.From}).String())
	crlf("Subject: Report Domain: %s Submitter: %s Report-ID: <%s>", domain, rp.Submitter, rep.ReportID)
	crlf("Date: %s", now.Format(time.RFC1123Z))
	crlf("TLS-Report-Domain: %s", domain)
	crlf("TLS-Report-Submitter: %s", rp.Submitter)
	crlf("Auto-Submitted: auto-generated")
	crlf("MIME-Version: 1.0")
	crlf("Content-Type: multipart/report; report-type=\"tlsrpt\";")
	crlf("\tboundary=\"%s\"", boundary)
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/plain; charset=utf-8")
	crlf("")
	crlf("This is the TLS report of %s for %s about mail to %s.", rp.Submitter, rep.DateRange.Start.Format(time.DateOnly), domain)
	crlf("")
	crlf("--%s", boundary)
	name := fmt.Sprintf("%s!%s!%d!%d.json.gz", rp.Submitter, domain, rep.DateRange.Start.Unix(), rep.DateRange.End.Unix())
	crlf("Content-Type: application/tlsrpt+gzip")
	crlf("Content-Transfer-Encoding: base64")
	crlf("Content-Disposition: attachment; %s", strings.TrimPrefix(mime.FormatMediaType("x", map[string]string{"filename": name}), "x; "))
	crlf("")
	enc := base64Lines(gz)
	b.WriteString(enc)
	crlf("")
	crlf("--%s--", boundary)
	return b.Bytes(), nil
}

// base64Lines encodes data in base64 lines of 76 characters (RFC 2045
// §6.8), each ended with CRLF.
func base64Lines(data []byte) string {
	s := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76])
		b.WriteString("\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	b.WriteString("\r\n")
	return b.String()
}
