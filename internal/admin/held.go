package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"submitd/internal/contain"
	"submitd/internal/directory"
	"submitd/internal/sessionlog"
)

// Held is what the server reads and changes of held accounts (SPEC R20);
// contain.Containment is one.
type Held interface {
	// Held lists the held accounts.
	Held(ctx context.Context) ([]directory.Account, error)
	// HeldMessages lists the queue ids of an account's held mail.
	HeldMessages(account string) []string
	// LastTrip returns an account's latest trip, nil for none.
	LastTrip(ctx context.Context, account string) (*contain.Event, error)
	// Release re-enables a held account and lets its mail go.
	Release(ctx context.Context, account string) (int, error)
	// Purge deletes a held account's held mail without reports.
	Purge(ctx context.Context, account string) (int, error)
	// SetOverride sets the action of an account or domain ("" removes it).
	SetOverride(ctx context.Context, target, action string) error
	// Overrides lists the overrides by target.
	Overrides(ctx context.Context) (map[string]string, error)
}

// previewer reads the start of a queued message; queue.Admin is one.
type previewer interface {
	Preview(id string, lines, maxBytes int) ([]byte, string, error)
}

// What the detail of a held account shows of its mail: a sample, not all
// of tens of thousands of messages.
const (
	heldSample       = 5
	heldPreviewLines = 10
	heldPreviewBytes = 2048
)

// routesHeld registers the held-account endpoints (docs/api.md).
func (s *Server) routesHeld() {
	s.handle("GET /api/v1/held", RoleSupport, s.listHeld)
	s.handle("GET /api/v1/held/overrides", RoleSupport, s.listOverrides)
	s.handle("POST /api/v1/held/overrides", RoleSupport, s.setOverride)
	s.handle("GET /api/v1/held/{address}", RoleSupport, s.getHeld)
	s.handle("POST /api/v1/held/{address}/release", RoleSupport, s.releaseHeld)
	s.handle("POST /api/v1/held/{address}/purge", RoleSupport, s.purgeHeld)
}

// SetHeld gives the server the control of held accounts, which is made
// after it (it reports to the audit log the server reads); call it before
// the server serves.
func (s *Server) SetHeld(h Held) { s.cfg.Held = h }

// held returns the held-account control or a 503 when the process has
// none (the CLI without a running server).
func (s *Server) held() (Held, error) {
	if s.cfg.Held == nil {
		return nil, errorf(http.StatusServiceUnavailable, "held accounts are handled by the running server; start it first")
	}
	return s.cfg.Held, nil
}

// heldSummary is a held account in a list.
type heldSummary struct {
	// Account is the held account.
	Account string `json:"account"`
	// Reason is the signal and what it saw.
	Reason string `json:"reason"`
	// Since is when the hold began.
	Since time.Time `json:"since"`
	// HeldMessages counts its held mail.
	HeldMessages int `json:"held_messages"`
}

func (s *Server) listHeld(r *http.Request, p *principal) (any, error) {
	h, err := s.held()
	if err != nil {
		return nil, err
	}
	accts, err := h.Held(r.Context())
	if err != nil {
		return nil, err
	}
	out := []heldSummary{}
	for _, a := range accts {
		out = append(out, heldSummary{Account: a.Address, Reason: a.HeldReason, Since: a.HeldSince, HeldMessages: len(h.HeldMessages(a.Address))})
	}
	return page(r, out)
}

// heldMessage is one held message in the sample.
type heldMessage struct {
	queueSummary
	// ClientIP is the address it was submitted from.
	ClientIP string `json:"client_ip"`
	// Header is its header section.
	Header string `json:"header"`
	// Body is the first lines of its body.
	Body string `json:"body"`
}

// heldView is the detail of a held account.
type heldView struct {
	heldSummary
	// Trip is the signal that tripped with its figures, nil when none is
	// recorded.
	Trip *contain.Event `json:"trip"`
	// RecentSessions are the account's latest sessions: IPs, clients.
	RecentSessions []sessionSummary `json:"recent_sessions"`
	// Sample is the first few held messages.
	Sample []heldMessage `json:"sample"`
}

// heldAccount reads the account named in the path, which must be held.
func (s *Server) heldAccount(r *http.Request) (Held, *directory.Account, error) {
	h, err := s.held()
	if err != nil {
		return nil, nil, err
	}
	a, err := s.account(r)
	if err != nil {
		return nil, nil, err
	}
	if !a.Held {
		return nil, nil, errorf(http.StatusNotFound, "%s is not held", a.Address)
	}
	return h, a, nil
}

func (s *Server) getHeld(r *http.Request, p *principal) (any, error) {
	h, a, err := s.heldAccount(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	ids := h.HeldMessages(a.Address)
	v := heldView{heldSummary: heldSummary{Account: a.Address, Reason: a.HeldReason, Since: a.HeldSince, HeldMessages: len(ids)},
		RecentSessions: []sessionSummary{}, Sample: []heldMessage{}}
	if v.Trip, err = h.LastTrip(ctx, a.Address); err != nil {
		return nil, err
	}
	recs, err := s.cfg.Sessions.Find(ctx, sessionlog.Query{Address: a.Address, Limit: 20})
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		v.RecentSessions = append(v.RecentSessions, s.summarize(ctx, rec))
	}
	if s.cfg.Queue != nil {
		pv, _ := s.cfg.Queue.(previewer)
		for _, id := range ids[:min(len(ids), heldSample)] {
			it, _, err := s.cfg.Queue.Show(id)
			if err != nil {
				continue
			}
			m := heldMessage{queueSummary: summarizeQueued(*it), ClientIP: it.Env.ClientIP}
			if pv != nil {
				hdr, body, err := pv.Preview(id, heldPreviewLines, heldPreviewBytes)
				if err == nil {
					m.Header, m.Body = string(hdr), body
				}
			}
			v.Sample = append(v.Sample, m)
		}
	}
	return v, nil
}

func (s *Server) releaseHeld(r *http.Request, p *principal) (any, error) {
	h, a, err := s.heldAccount(r)
	if err != nil {
		return nil, err
	}
	before := map[string]any{"held": true, "reason": a.HeldReason, "since": a.HeldSince}
	n, err := h.Release(r.Context(), a.Address)
	if errors.Is(err, contain.ErrNotHeld) {
		return nil, errorf(http.StatusNotFound, "%v", err)
	}
	if err != nil && n == 0 {
		return nil, err
	}
	if aerr := s.audit(r.Context(), p, "held.release", "account:"+a.Address, before, map[string]any{"held": false, "released_messages": n}); aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"result": done("released %s and %d held message(s)", a.Address, n).Result, "released": n}, nil
}

func (s *Server) purgeHeld(r *http.Request, p *principal) (any, error) {
	h, a, err := s.heldAccount(r)
	if err != nil {
		return nil, err
	}
	n, err := h.Purge(r.Context(), a.Address)
	if err != nil && n == 0 {
		return nil, err
	}
	if aerr := s.audit(r.Context(), p, "held.purge", "account:"+a.Address, map[string]any{"held_messages": n}, map[string]any{"purged_messages": n, "reports": 0}); aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"result": done("purged %d held message(s) of %s without reports; the account stays held", n, a.Address).Result, "purged": n}, nil
}

func (s *Server) listOverrides(r *http.Request, p *principal) (any, error) {
	h, err := s.held()
	if err != nil {
		return nil, err
	}
	return h.Overrides(r.Context())
}

func (s *Server) setOverride(r *http.Request, p *principal) (any, error) {
	h, err := s.held()
	if err != nil {
		return nil, err
	}
	var in struct {
		Target string `json:"target"`
		Action string `json:"action"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	t, err := contain.NormalizeTarget(in.Target)
	if err != nil {
		return nil, badRequest("target: %v", err)
	}
	switch in.Action {
	case "", contain.ActionHold, contain.ActionWarn:
	default:
		return nil, badRequest("action %q: must be %q, %q or \"\" (the configured action)", in.Action, contain.ActionHold, contain.ActionWarn)
	}
	all, err := h.Overrides(r.Context())
	if err != nil {
		return nil, err
	}
	if err := h.SetOverride(r.Context(), t, in.Action); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "held.override", "contain:"+t, map[string]string{"action": all[t]}, map[string]string{"action": in.Action}); err != nil {
		return nil, err
	}
	if in.Action == "" {
		return done("%s takes the configured action", t), nil
	}
	return done("a trip of %s will %s", t, in.Action), nil
}
