package tlspolicy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
)

// sts returns the MTA-STS policy in force for domain, nil for none: the
// cached one while it is valid, fetched anew when the TXT record's id
// changed or none is cached (RFC 8461 §5.1). A cached policy past half its
// max_age is refreshed in the background, so that mail does not wait for
// the fetch and a policy in use does not lapse. A failed fetch keeps the
// cached policy; without one the domain has no policy (§3.3).
//
// A fetch that fails while delivering counts in the TLS results (RFC 8460
// §4.3.2): the domain announced a policy, by its TXT record, that the
// delivery goes without (none cached) or goes with an older one of (the id
// changed). A background refresh that fails is only logged: the cached
// policy stays in force, and no delivery went without it.
func (c *Checker) sts(ctx context.Context, domain string) *Policy {
	now := c.cfg.Now()
	rec, recErr := c.record(ctx, domain)
	e := c.cache.get(domain, now)
	if e != nil {
		switch {
		case recErr == nil && rec.ID != e.id:
			p, err := c.fetchStore(ctx, domain, rec.ID)
			if err == nil {
				return inForce(p)
			}
			c.fetchFailed(domain, err)
		case recErr == nil && now.Sub(e.fetched) > e.policy.MaxAge/2:
			c.refresh(domain, rec.ID)
		}
		return inForce(e.policy)
	}
	if recErr != nil {
		return nil
	}
	p, err := c.fetchStore(ctx, domain, rec.ID)
	if err != nil {
		c.fetchFailed(domain, err)
		return nil
	}
	return inForce(p)
}

// fetchFailed counts a failed policy fetch in the TLS results as one
// failed session under the domain's MTA-STS policy, with the result type
// of RFC 8460 §4.3.2 that says why and no MX host (none was tried for it).
//
// The policy-type of the report is "sts", not "no-policy-found" (§4.4):
// the domain published an MTA-STS record, so it has an MTA-STS policy,
// which is what failed; "no-policy-found" is for a domain with neither a
// DANE nor an MTA-STS policy, whose sessions cannot fail a policy. The
// sessions that then go on without the policy count under
// "no-policy-found", as they were made.
func (c *Checker) fetchFailed(domain string, err error) {
	if c.cfg.Results == nil {
		return
	}
	c.cfg.Results.Add(c.cfg.Now(), Session{Domain: domain, Kind: MTASTS, Result: FetchResult(err)})
}

// FetchResult is the RFC 8460 §4.3.2 result type of an error of Fetch:
// sts-webpki-invalid when the policy host's certificate failed PKIX
// validation (§4.3.2.3), sts-policy-invalid when a policy was retrieved
// and is not valid (§4.3.2.1), else sts-policy-fetch-error: the host
// could not be reached, or did not serve a policy (§4.3.2.2).
func FetchResult(err error) string {
	var pe *PolicyError
	if errors.As(err, &pe) {
		return pe.Result
	}
	return ResultSTSPolicyFetchError
}

// PolicyError is why an MTA-STS policy could not be had.
type PolicyError struct {
	// Result is the RFC 8460 §4.3.2 result type.
	Result string
	// Err says why.
	Err error
}

func (e *PolicyError) Error() string { return e.Err.Error() }
func (e *PolicyError) Unwrap() error { return e.Err }

// inForce hides a policy of mode none, which stands for no policy.
func inForce(p *Policy) *Policy {
	if p == nil || p.Mode == ModeNone {
		return nil
	}
	return p
}

// record returns the one STSv1 TXT record of _mta-sts.domain; none, or
// more than one, is an error (RFC 8461 §3.1).
func (c *Checker) record(ctx context.Context, domain string) (Record, error) {
	txts, err := c.cfg.DNS.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		return Record{}, err
	}
	var recs []Record
	for _, t := range txts {
		if r, err := ParseRecord(t); err == nil {
			recs = append(recs, r)
		}
	}
	if len(recs) != 1 {
		return Record{}, fmt.Errorf("%d MTA-STS records at _mta-sts.%s", len(recs), domain)
	}
	return recs[0], nil
}

// refresh fetches the policy of domain in the background, once at a time.
func (c *Checker) refresh(domain, id string) {
	c.mu.Lock()
	if c.refreshing[domain] {
		c.mu.Unlock()
		return
	}
	c.refreshing[domain] = true
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		c.fetchStore(context.Background(), domain, id)
		c.mu.Lock()
		delete(c.refreshing, domain)
		c.mu.Unlock()
	}()
}

// Wait returns once the background refreshes under way are done.
func (c *Checker) Wait() { c.wg.Wait() }

// fetchStore fetches the policy of domain and caches it under id.
func (c *Checker) fetchStore(ctx context.Context, domain, id string) (*Policy, error) {
	p, err := c.Fetch(ctx, domain)
	if err != nil {
		c.cfg.Log.Info("tlspolicy: MTA-STS policy fetch failed", "domain", domain, "err", err, "result", FetchResult(err))
		return nil, err
	}
	c.cfg.Log.Info("tlspolicy: MTA-STS policy fetched", "domain", domain, "mode", p.Mode, "max_age", p.MaxAge, "id", id)
	now := c.cfg.Now()
	c.cache.put(domain, &cached{policy: p, id: id, fetched: now, expires: now.Add(p.MaxAge)}, now)
	return p, nil
}

// Fetch gets the policy of domain from
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 §3.3): the
// host's address through the DNS of the Config, its certificate checked
// against Roots, no redirect followed, a 200 answer of text/plain of at
// most MaxPolicySize bytes, all within FetchTimeout.
func (c *Checker) Fetch(ctx context.Context, domain string) (*Policy, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()
	host := "mta-sts." + domain
	dial := c.cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			h, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := c.cfg.DNS.LookupIP(ctx, h)
			if err != nil {
				return nil, err
			}
			if len(ips) == 0 {
				return nil, fmt.Errorf("%s has no address records", h)
			}
			var errs []error
			for _, ip := range ips {
				nc, err := dial(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return nc, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
		TLSClientConfig:        &tls.Config{RootCAs: c.cfg.Roots, MinVersion: tls.VersionTLS12},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 16 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		// RFC 8461 §3.3: redirects must not be followed.
		return http.ErrUseLastResponse
	}}
	url := "https://" + host
	if c.cfg.PolicyPort != 443 {
		url += ":" + strconv.Itoa(c.cfg.PolicyPort)
	}
	url += "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		err = fmt.Errorf("fetching the MTA-STS policy of %s: %w", domain, err)
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			// RFC 8461 §3.3: the policy host's certificate must be valid
			// for its name and chain to a trusted root.
			return nil, &PolicyError{Result: ResultSTSWebPKIInvalid, Err: err}
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the MTA-STS policy of %s: HTTP status %s", domain, resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("MTA-STS policy of %s has media type %q, not text/plain", domain, clip(resp.Header.Get("Content-Type")))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the MTA-STS policy of %s: %w", domain, err)
	}
	p, err := ParsePolicy(body)
	if err != nil {
		// A policy was served (text/plain at the well-known address), and
		// it is not valid: too large, or not RFC 8461 §3.2's.
		return nil, &PolicyError{Result: ResultSTSPolicyInvalid, Err: fmt.Errorf("%w (domain %s)", err, domain)}
	}
	return p, nil
}
