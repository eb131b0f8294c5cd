package admin

import (
	"net/http"
	"net/url"

	"submitd/internal/sending"
)

// The "Sending limits" section of the account and domain pages (issue
// "Outbound abuse containment", SPEC R19): each limit's count in its
// rolling window against the limit in effect, where the limit comes from,
// and when a full window frees a slot; its forms set and clear overrides
// through the API's PUT and DELETE /api/v1/sending/{name}.

// sendingRow is one limit in the section.
type sendingRow struct {
	// Key is the limit's name ("recipients_per_hour"); Heading says it in
	// words.
	Key, Heading string
	// Own is the limit of the page's account or domain.
	Own sendingLimit
	// Domain is the limit of the account's hosted domain, on an account
	// page only.
	Domain *sendingLimit
}

// headings name the limits in the section, as issue "Outbound abuse
// containment" words them.
var headings = [sending.NumLimits]string{"Messages per hour", "Recipients per hour", "Recipients per day", "First-time recipients per day"}

// sendingPanel is the section's data.
type sendingPanel struct {
	// Name is the account or hosted domain the forms change; Domain is
	// the account's hosted domain, "" on a domain page.
	Name, Domain string
	// Action is where the forms post: Action to set, Action+"/clear" to
	// clear.
	Action string
	// Counted says a running server counts the windows; without one only
	// the limits are shown.
	Counted bool
	// Max is the largest value an override takes.
	Max int64
	// Rows are the limits in the order of the [sending] table.
	Rows []sendingRow
}

// sendingPanel reads the section of t: its own limits and, for an account,
// its domain's.
func (s *Server) sendingPanel(r *http.Request, t sendingTarget, action string) (*sendingPanel, error) {
	st, err := s.sendingStore()
	if err != nil {
		return nil, err
	}
	own, err := s.viewSending(r.Context(), st, t)
	if err != nil {
		return nil, err
	}
	var dom *sendingView
	if t.account {
		if dom, err = s.viewSending(r.Context(), st, sendingTarget{name: t.domain, domain: t.domain}); err != nil {
			return nil, err
		}
	}
	pn := &sendingPanel{Name: t.name, Action: action, Counted: s.SendingUsage != nil, Max: sending.MaxValue}
	for l := range sending.NumLimits {
		row := sendingRow{Key: l.Key(), Heading: headings[l], Own: own.Limits[l.Key()]}
		if dom != nil {
			pn.Domain = t.domain
			d := dom.Limits[l.Key()]
			row.Domain = &d
		}
		pn.Rows = append(pn.Rows, row)
	}
	return pn, nil
}

// accountPage is the account page's data: the API's account detail and
// the sending limits.
func (s *Server) accountPage(r *http.Request, p *principal) (any, error) {
	v, err := s.getAccount(r, p)
	if err != nil {
		return nil, err
	}
	m := v.(map[string]any)
	a := m["account"].(accountView)
	pn, err := s.sendingPanel(r, sendingTarget{name: a.Address, domain: a.Domain, account: true}, "/accounts/"+url.PathEscape(a.Address)+"/sending")
	if err != nil {
		return nil, err
	}
	m["sending"] = pn
	return m, nil
}

// domainPage is the domain page's data: the API's domain detail and the
// sending limits.
type domainPage struct {
	*domainView
	// Sending is the section of the domain's limits.
	Sending *sendingPanel
}

func (s *Server) domainPage(r *http.Request, p *principal) (any, error) {
	v, err := s.getDomain(r, p)
	if err != nil {
		return nil, err
	}
	d := v.(*domainView)
	pn, err := s.sendingPanel(r, sendingTarget{name: d.Name, domain: d.Name}, "/domains/"+url.PathEscape(d.Name)+"/sending")
	if err != nil {
		return nil, err
	}
	return &domainPage{domainView: d, Sending: pn}, nil
}

// sendingForm turns a section's form into the API's request: the account
// in the path becomes the {name} the API reads, and the limit field names
// the key. For a set, the form's limit and value become the body
// {limit: value}; for a clear, the limit becomes ?key=.
func sendingForm(r *http.Request, clear bool) {
	if a := r.PathValue("address"); a != "" {
		r.SetPathValue("name", a)
	}
	key, value := r.PostForm.Get("limit"), r.PostForm.Get("value")
	r.PostForm.Del("limit")
	r.PostForm.Del("value")
	if clear {
		r.URL.RawQuery = url.Values{"key": {key}}.Encode()
		return
	}
	r.PostForm.Set(key, value)
}

// setSendingForm is the set form's action.
func (s *Server) setSendingForm(r *http.Request, p *principal) (any, error) {
	sendingForm(r, false)
	return s.setSending(r, p)
}

// clearSendingForm is the clear form's action.
func (s *Server) clearSendingForm(r *http.Request, p *principal) (any, error) {
	sendingForm(r, true)
	return s.clearSending(r, p)
}

// sendingRoutes registers the section's actions, with the API's role.
func (s *Server) sendingRoutes() {
	s.webAction("POST /accounts/{address}/sending", RoleSupport, s.setSendingForm,
		"Set %s of %s to %s (0 is no limit)?", "limit", "{address}", "value")
	s.webAction("POST /accounts/{address}/sending/clear", RoleSupport, s.clearSendingForm,
		"Clear the %s override of %s, so the configured limit applies?", "limit", "{address}")
	s.webAction("POST /domains/{name}/sending", RoleSupport, s.setSendingForm,
		"Set %s of %s to %s (0 is no limit)?", "limit", "{name}", "value")
	s.webAction("POST /domains/{name}/sending/clear", RoleSupport, s.clearSendingForm,
		"Clear the %s override of %s, so the configured limit applies?", "limit", "{name}")
}
