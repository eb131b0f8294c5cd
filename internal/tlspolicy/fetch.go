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
	"time"
)

// sts returns the MTA-STS policy in force for domain, nil for none: the
// cached one while it is valid, fetched anew when the TXT record's id
// changed or none is cached (RFC 8461 §5.1). A cached policy past half its
// max_age is refreshed in the background, so that mail does not wait for
// the fetch and a policy in use does not lapse. A failed fetch keeps the
// cached policy; without one the domain has no policy (§3.3).
func (c *Checker) sts(ctx context.Context, domain string) *Policy {
	now := c.cfg.Now()
	rec, recErr := c.record(ctx, domain)
	c.mu.Lock()
	e := c.cache[domain]
	if e != nil && !now.Before(e.expires) {
		delete(c.cache, domain)
		e = nil
	}
	c.mu.Unlock()
	if e != nil {
		switch {
		case recErr == nil && rec.ID != e.id:
			if p, err := c.fetchStore(ctx, domain, rec.ID); err == nil {
				return inForce(p)
			}
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
		return nil
	}
	return inForce(p)
}

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
		c.cfg.Log.Info("tlspolicy: MTA-STS policy fetch failed", "domain", domain, "err", err)
		return nil, err
	}
	c.cfg.Log.Info("tlspolicy: MTA-STS policy fetched", "domain", domain, "mode", p.Mode, "max_age", p.MaxAge, "id", id)
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cache) >= c.cfg.MaxCached {
		c.evictLocked(now)
	}
	c.cache[domain] = &cached{policy: p, id: id, fetched: now, expires: now.Add(p.MaxAge)}
	return p, nil
}

// evictLocked makes room in the cache: expired policies go, and when none
// had expired, the one expiring first.
func (c *Checker) evictLocked(now time.Time) {
	var first string
	for d, e := range c.cache {
		if !now.Before(e.expires) {
			delete(c.cache, d)
		} else if first == "" || e.expires.Before(c.cache[first].expires) {
			first = d
		}
	}
	if len(c.cache) >= c.cfg.MaxCached && first != "" {
		delete(c.cache, first)
	}
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
		return nil, fmt.Errorf("fetching the MTA-STS policy of %s: %w", domain, err)
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
		return nil, fmt.Errorf("%w (domain %s)", err, domain)
	}
	return p, nil
}
