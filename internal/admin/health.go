package admin

import (
	"context"

	"submitd/internal/dnshealth"
)

// HealthChecker checks a domain's DNS for its mail (MX, SPF, DMARC);
// dnshealth.Checker is one. Its reports are cached briefly and its lookups
// time-bounded, so a domain page waits seconds at most.
type HealthChecker interface {
	Check(ctx context.Context, domain string, signed bool) *dnshealth.Report
}

// domainHealth is a domain's DNS health as support sees it: the checks of
// dnshealth and the DKIM record of the active key, each with the record
// to publish when it is wrong.
type domainHealth struct {
	*dnshealth.Report
	// DKIM is the check of the active key's record.
	DKIM dnshealth.Check `json:"dkim"`
	// Problems counts the checks with a problem.
	Problems int `json:"problems"`
}

// health checks domain's DNS; v is its view with the DKIM check made.
func (s *Server) health(ctx context.Context, v *domainView) *domainHealth {
	hc := s.settings().Health
	if hc == nil {
		return nil
	}
	h := &domainHealth{Report: hc.Check(ctx, v.Name, v.DKIM != nil)}
	h.DKIM = dkimHealth(v)
	for _, c := range []dnshealth.Check{h.MX, h.SPF, h.DKIM, h.DMARC} {
		if c.Status == dnshealth.Problem {
			h.Problems++
		}
	}
	return h
}

// dkimHealth turns the DKIM check of the domain's key (checkDKIM) into a
// health check with the record to publish.
func dkimHealth(v *domainView) dnshealth.Check {
	k := v.DKIM
	if k == nil {
		return dnshealth.Check{Status: dnshealth.Problem, Found: []string{},
			Message: "no DKIM key: the domain's mail goes out unsigned; make one (submitd dkim generate " + v.Name + ") and publish its record"}
	}
	c := dnshealth.Check{Name: k.Name, Found: []string{}}
	d := k.DNS
	if d == nil {
		c.Status, c.Message = dnshealth.Unknown, "not looked up (no resolver)"
		return c
	}
	c.Found, c.Message = d.Published, d.Message
	switch d.Status {
	case DKIMMatches:
		c.Status = dnshealth.OK
	case DKIMLookupFailed:
		c.Status = dnshealth.Unknown
	default:
		c.Status, c.Fix = dnshealth.Problem, k.Record
	}
	return c
}
