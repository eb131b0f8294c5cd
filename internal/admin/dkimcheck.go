package admin

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"submitd/internal/dkim"
)

// dkimLookupTimeout bounds the DNS lookup of one DKIM record, so a domain
// page answers quickly even when the resolver does not.
const dkimLookupTimeout = 3 * time.Second

// maxTagList bounds the TXT text the tag parser reads: a DKIM key record is
// at most a few kilobytes (a 4096-bit RSA key is about 800 bytes), and the
// records come from DNS, which anyone may publish.
const maxTagList = 16 << 10

// TXTResolver looks up TXT records; delivery.Resolver is one. An error that
// has a Temporary method answering false means the name does not exist.
type TXTResolver interface {
	// LookupTXT returns the TXT records of name, each one's strings
	// joined.
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// The states of a DKIM DNS check.
const (
	// DKIMMatches: a TXT record at the key's name carries its public key.
	DKIMMatches = "matches"
	// DKIMDiffers: TXT records are published there, none with the key.
	DKIMDiffers = "differs"
	// DKIMMissing: no TXT record is published there.
	DKIMMissing = "missing"
	// DKIMLookupFailed: the DNS did not answer.
	DKIMLookupFailed = "lookup failed"
)

// dkimCheck says whether the DNS publishes a DKIM key as stored.
type dkimCheck struct {
	// Status is DKIMMatches, DKIMDiffers, DKIMMissing or DKIMLookupFailed.
	Status string `json:"status"`
	// Name is the name looked up, SELECTOR._domainkey.DOMAIN.
	Name string `json:"name"`
	// Expected is the TXT value the key needs.
	Expected string `json:"expected"`
	// Published are the TXT values found at Name.
	Published []string `json:"published"`
	// Message says the result in plain words.
	Message string `json:"message"`
}

// checkDKIM looks k's record up through res and compares it with the key
// (RFC 6376 §3.6.2.2: the TXT record at SELECTOR._domainkey.DOMAIN).
func checkDKIM(ctx context.Context, res TXTResolver, k *dkim.Key) *dkimCheck {
	c := &dkimCheck{Name: k.RecordName(), Expected: k.TXTValue(), Published: []string{}}
	ctx, cancel := context.WithTimeout(ctx, dkimLookupTimeout)
	defer cancel()
	txts, err := res.LookupTXT(ctx, c.Name)
	var tmp interface{ Temporary() bool }
	switch {
	case err != nil && errors.As(err, &tmp) && !tmp.Temporary():
		c.Status, c.Message = DKIMMissing, "no such name in DNS: publish the record above"
		return c
	case err != nil:
		c.Status, c.Message = DKIMLookupFailed, "DNS lookup failed: "+err.Error()
		return c
	}
	if txts != nil {
		c.Published = txts
	}
	if len(txts) == 0 {
		c.Status, c.Message = DKIMMissing, "no TXT record at "+c.Name+": publish the record above"
		return c
	}
	for _, t := range txts {
		if SameDKIMKey(t, c.Expected) {
			c.Status, c.Message = DKIMMatches, "the record in DNS carries this key"
			return c
		}
	}
	c.Status, c.Message = DKIMDiffers, "the TXT record in DNS is not this key: replace it with the record above"
	return c
}

// checkDKIMViews fills in the DNS check of every key in views, looking
// them up at once so a domain with several aliases waits for one timeout,
// not one per alias.
func (s *Server) checkDKIMViews(ctx context.Context, keys []*dkim.Key, views []*dkimView) {
	dns := s.settings().DNS
	if dns == nil {
		return
	}
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() { views[i].DNS = checkDKIM(ctx, dns, keys[i]) })
	}
	wg.Wait()
}

// ParseTags parses a DKIM tag list (RFC 6376 §3.2): "tag=value" pairs
// separated by ';', whitespace around and inside values dropped. It returns
// nil when the text is not a tag list: a pair without '=', a tag twice, an
// empty tag name, or more than maxTagList bytes.
func ParseTags(s string) map[string]string {
	if len(s) > maxTagList {
		return nil
	}
	tags := map[string]string{}
	for part := range strings.SplitSeq(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue // a trailing ';' is allowed
		}
		name, val, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil
		}
		if _, dup := tags[name]; dup {
			return nil
		}
		tags[name] = strings.Join(strings.Fields(val), "")
	}
	return tags
}

// SameDKIMKey reports whether the key record published carries the same
// key as want: the same k= (default "rsa", RFC 6376 §3.6.1) and p=, and a
// v= of DKIM1 if it has one. Other tags (t=, h=, n=) do not change the key.
func SameDKIMKey(published, want string) bool {
	p, w := ParseTags(published), ParseTags(want)
	if p == nil || w == nil || p["p"] == "" {
		return false
	}
	if v, ok := p["v"]; ok && v != "DKIM1" {
		return false
	}
	alg := func(t map[string]string) string {
		if k, ok := t["k"]; ok {
			return strings.ToLower(k)
		}
		return dkim.RSA
	}
	return alg(p) == alg(w) && p["p"] == w["p"]
}
