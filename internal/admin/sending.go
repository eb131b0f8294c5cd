package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"submitd/internal/directory"
	"submitd/internal/sending"
)

// SendingUsage reads the running server's counts of an account and of its
// hosted domain against their limits (sending.Limiter.Usage).
type SendingUsage func(account, domain string) (acct, dom sending.Usage, err error)

// sendingTarget is the account or hosted domain named in the path.
type sendingTarget struct {
	// name is the normalized name; domain its hosted domain.
	name, domain string
	// account is set when name is an account.
	account bool
}

// audit names the target in the audit log.
func (t sendingTarget) audit() string {
	if t.account {
		return "account:" + t.name
	}
	return "domain:" + t.name
}

// sendingStore returns the directory's overrides, or 503 for a directory
// that holds none.
func (s *Server) sendingStore() (directory.SendingStore, error) {
	st, ok := s.cfg.Directory.(directory.SendingStore)
	if !ok {
		return nil, errorf(http.StatusServiceUnavailable, "this directory keeps no sending limits")
	}
	return st, nil
}

// sendingName resolves the path's name: an account, or a hosted domain.
func (s *Server) sendingName(r *http.Request) (sendingTarget, error) {
	if n := r.PathValue("name"); strings.Contains(n, "@") {
		addr, err := parseAddress("address", n)
		if err != nil {
			return sendingTarget{}, err
		}
		a, err := s.cfg.Directory.Account(r.Context(), addr)
		if err != nil {
			return sendingTarget{}, err
		}
		return sendingTarget{name: a.Address, domain: a.Domain, account: true}, nil
	}
	d, err := s.hosted(r)
	if err != nil {
		return sendingTarget{}, err
	}
	return sendingTarget{name: d, domain: d}, nil
}

// sendingLimit is one limit as GET shows it.
type sendingLimit struct {
	// Limit is the value in effect; 0 is no limit.
	Limit int64 `json:"limit"`
	// Source is "config" or "override".
	Source string `json:"source"`
	// Used is the count in the limit's rolling window on the running
	// server; absent when no server runs.
	Used *int64 `json:"used,omitempty"`
}

// sendingView is GET's answer.
type sendingView struct {
	// Name is the account or hosted domain; Kind says which.
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Limits are the limits in effect by key.
	Limits map[string]sendingLimit `json:"limits"`
}

// sendingState returns t's overrides and the view of its limits.
func (s *Server) sendingState(ctx context.Context, st directory.SendingStore, t sendingTarget) (map[string]int64, *sendingView, error) {
	over, err := st.SendingLimits(ctx, t.name)
	if err != nil {
		return nil, nil, err
	}
	base, kind := s.cfg.SendingAccount, "account"
	if !t.account {
		base, kind = s.cfg.SendingDomain, "domain"
	}
	eff := sending.Override(over).Apply(base)
	var used *sending.Usage
	if s.SendingUsage != nil {
		acct, dom, err := s.SendingUsage(t.name, t.domain)
		if err != nil {
			return nil, nil, fmt.Errorf("sending usage of %s: %w", t.name, err)
		}
		used = &acct
		if !t.account {
			used = &dom
		}
	}
	v := &sendingView{Name: t.name, Kind: kind, Limits: map[string]sendingLimit{}}
	for l := range sending.NumLimits {
		sl := sendingLimit{Limit: eff[l], Source: "config"}
		if _, ok := over[l.Key()]; ok {
			sl.Source = "override"
		}
		if used != nil {
			n := used.Used[l]
			sl.Used = &n
		}
		v.Limits[l.Key()] = sl
	}
	return over, v, nil
}

func (s *Server) getSending(r *http.Request, p *principal) (any, error) {
	st, err := s.sendingStore()
	if err != nil {
		return nil, err
	}
	t, err := s.sendingName(r)
	if err != nil {
		return nil, err
	}
	_, v, err := s.sendingState(r.Context(), st, t)
	return v, err
}

func (s *Server) setSending(r *http.Request, p *principal) (any, error) {
	st, err := s.sendingStore()
	if err != nil {
		return nil, err
	}
	// Raw values: a JSON number, or the same digits in a string as a
	// browser's form sends them; CheckValue takes nothing else.
	var in map[string]json.RawMessage
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, badRequest("give at least one limit, like {\"recipients_per_hour\": 1000}; keys: %s", strings.Join(sending.Keys(), ", "))
	}
	set := sending.Override{}
	for k, v := range in {
		if _, err := sending.ParseKey(k); err != nil {
			return nil, badRequest("%v", err)
		}
		val := string(v)
		if u, err := strconv.Unquote(val); err == nil {
			val = u
		}
		n, err := sending.CheckValue(k, val)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		set[k] = n
	}
	t, err := s.sendingName(r)
	if err != nil {
		return nil, err
	}
	before, _, err := s.sendingState(r.Context(), st, t)
	if err != nil {
		return nil, err
	}
	if err := st.SetSendingLimits(r.Context(), t.name, set); err != nil {
		return nil, err
	}
	after := maps.Clone(before)
	maps.Copy(after, set)
	if err := s.audit(r.Context(), p, "sending.set", t.audit(), before, after); err != nil {
		return nil, err
	}
	return done("set %s of %s", settings(set), t.name), nil
}

func (s *Server) clearSending(r *http.Request, p *principal) (any, error) {
	st, err := s.sendingStore()
	if err != nil {
		return nil, err
	}
	keys := r.URL.Query()["key"]
	for _, k := range keys {
		if _, err := sending.ParseKey(k); err != nil {
			return nil, badRequest("%v", err)
		}
	}
	t, err := s.sendingName(r)
	if err != nil {
		return nil, err
	}
	before, _, err := s.sendingState(r.Context(), st, t)
	if err != nil {
		return nil, err
	}
	if err := st.ClearSendingLimits(r.Context(), t.name, keys); err != nil {
		return nil, err
	}
	after := map[string]int64{}
	if len(keys) > 0 {
		after = maps.Clone(before)
		for _, k := range keys {
			delete(after, k)
		}
	}
	if err := s.audit(r.Context(), p, "sending.clear", t.audit(), before, after); err != nil {
		return nil, err
	}
	what := "every sending limit override"
	if len(keys) > 0 {
		what = strings.Join(keys, ", ")
	}
	return done("cleared %s of %s; the configured limits apply", what, t.name), nil
}

// settings formats limits as "key=value" in key order.
func settings(m map[string]int64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(out, " ")
}
