package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

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
	// Frees is when the rolling window frees a slot, while it is full:
	// the time a refused client is told to try again after.
	Frees *time.Time `json:"frees,omitempty"`
}

// sendingView is GET's answer.
type sendingView struct {
	// Name is the account or hosted domain; Kind says which.
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Limits are the limits in effect by key.
	Limits map[string]sendingLimit `json:"limits"`
}

// viewSending returns the view of t's limits.
func (s *Server) viewSending(ctx context.Context, st directory.SendingStore, t sendingTarget) (*sendingView, error) {
	over, err := st.SendingLimits(ctx, t.name)
	if err != nil {
		return nil, err
	}
	base, kind := s.settings().SendingAccount, "account"
	if !t.account {
		base, kind = s.settings().SendingDomain, "domain"
	}
	eff := sending.Override(over).Apply(base)
	var used *sending.Usage
	if s.SendingUsage != nil {
		acct, dom, err := s.SendingUsage(t.name, t.domain)
		if err != nil {
			return nil, fmt.Errorf("sending usage of %s: %w", t.name, err)
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
			if f := used.Frees[l]; !f.IsZero() {
				sl.Frees = &f
			}
		}
		v.Limits[l.Key()] = sl
	}
	return v, nil
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
	return s.viewSending(r.Context(), st, t)
}

func (s *Server) setSending(r *http.Request, p *principal) (any, error) {
	// Raw values: a JSON number, or the same digits in a string as a
	// browser's form sends them; CheckValue takes nothing else.
	var in map[string]json.RawMessage
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, badRequest("give at least one limit, like {\"recipients_per_hour\": 1000}; keys: %s", strings.Join(sending.Keys(), ", "))
	}
	set := map[string]int64{}
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
	t, err := s.changeSending(r, p, "sending.set", func(st directory.SendingStore, name string, before map[string]int64) (map[string]int64, error) {
		after := maps.Clone(before)
		maps.Copy(after, set)
		return after, st.SetSendingLimits(r.Context(), name, set)
	})
	if err != nil {
		return nil, err
	}
	return done("set %s of %s", settings(set), t.name), nil
}

func (s *Server) clearSending(r *http.Request, p *principal) (any, error) {
	keys := r.URL.Query()["key"]
	for _, k := range keys {
		if _, err := sending.ParseKey(k); err != nil {
			return nil, badRequest("%v", err)
		}
	}
	t, err := s.changeSending(r, p, "sending.clear", func(st directory.SendingStore, name string, before map[string]int64) (map[string]int64, error) {
		after := map[string]int64{}
		if len(keys) > 0 {
			after = maps.Clone(before)
			for _, k := range keys {
				delete(after, k)
			}
		}
		return after, st.ClearSendingLimits(r.Context(), name, keys)
	})
	if err != nil {
		return nil, err
	}
	what := "every sending limit override"
	if len(keys) > 0 {
		what = strings.Join(keys, ", ")
	}
	return done("cleared %s of %s; the configured limits apply", what, t.name), nil
}

// changeSending changes the overrides of the account or domain in the
// path with apply, which makes the change and returns the overrides after
// it, and audits it as action with the overrides before and after.
func (s *Server) changeSending(r *http.Request, p *principal, action string,
	apply func(st directory.SendingStore, name string, before map[string]int64) (map[string]int64, error)) (sendingTarget, error) {
	st, err := s.sendingStore()
	if err != nil {
		return sendingTarget{}, err
	}
	t, err := s.sendingName(r)
	if err != nil {
		return t, err
	}
	before, err := st.SendingLimits(r.Context(), t.name)
	if err != nil {
		return t, err
	}
	after, err := apply(st, t.name, before)
	if err != nil {
		return t, err
	}
	return t, s.audit(r.Context(), p, action, t.audit(), before, after)
}

// limitReply finds the name, the limit and the time in the sending_limit
// reply of SPEC R19.
var limitReply = regexp.MustCompile(`sending limit reached for (\S+): (\d+) ([a-z ]+); try again after (\d\d:\d\d)$`)

// limitReached explains a sending_limit reply for support, or returns ""
// for any other reply.
func limitReached(reply string) string {
	m := limitReply.FindStringSubmatch(reply)
	if m == nil {
		return ""
	}
	key := strings.ReplaceAll(m[3], " ", "_")
	return fmt.Sprintf("%s reached its limit of %s %s (R19); the rolling window frees a slot at %s UTC, and the client may send the rest then: nothing was lost. If the volume is legitimate: submitd sending set %s %s=N",
		m[1], m[2], m[3], m[4], m[1], key)
}

// settings formats limits as "key=value" in key order.
func settings(m map[string]int64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(out, " ")
}
