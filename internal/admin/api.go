package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"submitd/internal/address"
	"submitd/internal/delivery"
	"submitd/internal/directory"
	"submitd/internal/dkim"
	"submitd/internal/guard"
	"submitd/internal/ids"
	"submitd/internal/password"
	"submitd/internal/queue"
	"submitd/internal/sessionlog"
	"submitd/internal/trace"
)

// Paging defaults of the list endpoints.
const (
	defaultLimit = 50
	maxLimit     = 500
)

// routes registers every endpoint; docs/api.md describes them.
func (s *Server) routes() {
	s.mux.HandleFunc("POST /api/v1/login", s.login)
	s.handle("POST /api/v1/logout", RoleSupport, s.logout)
	s.handle("GET /api/v1/me", RoleSupport, s.me)

	s.handle("GET /api/v1/find", RoleSupport, s.find)
	s.handle("GET /api/v1/sessions/{id}", RoleSupport, s.getSession)

	s.handle("GET /api/v1/blocked", RoleSupport, s.listBlocked)
	s.handle("POST /api/v1/block", RoleSupport, s.block)
	s.handle("POST /api/v1/unblock", RoleSupport, s.unblock)
	s.loginRoutes()

	s.handle("GET /api/v1/accounts", RoleSupport, s.listAccounts)
	s.handle("POST /api/v1/accounts", RoleAdmin, s.addAccount)
	s.handle("GET /api/v1/accounts/{address}", RoleSupport, s.getAccount)
	s.handle("DELETE /api/v1/accounts/{address}", RoleAdmin, s.removeAccount)
	s.handle("POST /api/v1/accounts/{address}/smtp_access", RoleSupport, s.setSMTPAccess)
	s.handle("POST /api/v1/accounts/{address}/password", RoleSupport, s.setPassword)
	s.handle("POST /api/v1/accounts/{address}/identities", RoleSupport, s.addIdentity)
	s.handle("DELETE /api/v1/accounts/{address}/identities/{identity}", RoleSupport, s.removeIdentity)

	s.handle("GET /api/v1/domains", RoleSupport, s.listDomains)
	s.handle("POST /api/v1/domains", RoleAdmin, s.addDomain)
	s.handle("GET /api/v1/domains/{name}", RoleSupport, s.getDomain)
	s.handle("DELETE /api/v1/domains/{name}", RoleAdmin, s.removeDomain)
	s.handle("POST /api/v1/domains/{name}/aliases", RoleAdmin, s.addAlias)
	s.handle("DELETE /api/v1/aliases/{alias}", RoleAdmin, s.removeAlias)
	s.handle("POST /api/v1/domains/{name}/dkim", RoleAdmin, s.generateDKIM)
	s.handle("DELETE /api/v1/domains/{name}/dkim", RoleAdmin, s.removeDKIM)

	s.handle("GET /api/v1/sending/{name}", RoleSupport, s.getSending)
	s.handle("PUT /api/v1/sending/{name}", RoleSupport, s.setSending)
	s.handle("DELETE /api/v1/sending/{name}", RoleSupport, s.clearSending)

	s.handle("GET /api/v1/queue", RoleSupport, s.listQueue)
	s.handle("GET /api/v1/queue/backoffs", RoleSupport, s.listBackoffs)
	s.handle("GET /api/v1/queue/{id}", RoleSupport, s.getQueued)
	s.handle("POST /api/v1/queue/{id}/retry", RoleSupport, s.retryQueued)
	s.handle("POST /api/v1/queue/{id}/delete", RoleSupport, s.deleteQueued)
	s.handle("POST /api/v1/queue/adopt", RoleAdmin, s.adoptSpool)

	s.handle("GET /api/v1/audit", RoleSupport, s.listAudit)
	s.handle("POST /api/v1/reload", RoleAdmin, s.reload)
	s.handle("POST /api/v1/restart", RoleAdmin, s.restart)
	s.routesHeld()

	s.handle("GET /api/v1/staff", RoleAdmin, s.listStaff)
	s.handle("POST /api/v1/staff", RoleAdmin, s.addStaff)
	s.handle("DELETE /api/v1/staff/{name}", RoleAdmin, s.removeStaff)
	s.handle("POST /api/v1/staff/{name}/password", RoleAdmin, s.setStaffPassword)
	s.handle("POST /api/v1/staff/{name}/tokens", RoleAdmin, s.addToken)
	s.handle("GET /api/v1/tokens", RoleAdmin, s.listTokens)
	s.handle("DELETE /api/v1/tokens/{id}", RoleAdmin, s.revokeToken)

	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.webRoutes()
	s.traceRoutes()
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errorf(http.StatusNotFound, "no endpoint %s %s; see docs/api.md", r.Method, r.URL.Path))
	})
}

// metrics serves /metrics to MetricsNetworks, and to anyone else with a
// staff bearer token.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.Metrics == nil {
		s.writeError(w, r, errorf(http.StatusNotFound, "metrics are not available in this build"))
		return
	}
	ip := clientIP(r)
	open := r.Context().Value(peerKey{}) != nil
	for _, n := range s.settings().MetricsNetworks {
		if ip.IsValid() && n.Contains(ip) {
			open = true
		}
	}
	if !open {
		if _, err := s.authenticate(r); err != nil || r.Header.Get("Authorization") == "" {
			s.writeError(w, r, errorf(http.StatusUnauthorized, "metrics need a bearer token from outside [admin] metrics_networks"))
			return
		}
	}
	s.Metrics.ServeHTTP(w, r)
}

// list is one page of a list.
type list[T any] struct {
	// Items are the entries of the page.
	Items []T `json:"items"`
	// Total is how many entries there are in all.
	Total int `json:"total"`
	// Offset is where the page starts.
	Offset int `json:"offset"`
	// Limit is the most entries a page holds.
	Limit int `json:"limit"`
}

// paging reads offset and limit.
func paging(r *http.Request) (offset, limit int, err error) {
	limit = defaultLimit
	q := r.URL.Query()
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return 0, 0, badRequest("offset %q: must be a whole number, 0 or more", v)
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxLimit {
			return 0, 0, badRequest("limit %q: must be 1 to %d", v, maxLimit)
		}
	}
	return offset, limit, nil
}

// page cuts one page out of all.
func page[T any](r *http.Request, all []T) (any, error) {
	offset, limit, err := paging(r)
	if err != nil {
		return nil, err
	}
	items := []T{}
	if offset < len(all) {
		items = all[offset:min(len(all), offset+limit)]
	}
	return list[T]{Items: items, Total: len(all), Offset: offset, Limit: limit}, nil
}

// audit writes one audit entry for a change p made. The change is made by
// then; a failure to record it is logged and answered as an error, so the
// caller learns the log is incomplete.
func (s *Server) audit(ctx context.Context, p *principal, action, target string, before, after any) error {
	e := Entry{Time: s.cfg.Now(), Actor: p.actor, Action: action, Target: target, Before: raw(before), After: raw(after)}
	if _, err := s.cfg.Audit.AddAudit(ctx, e); err != nil {
		s.cfg.Log.Error("admin: audit entry not written", "actor", p.actor, "action", action, "target", target, "err", err)
		return fmt.Errorf("the change was made, but its audit entry could not be written: %w", err)
	}
	s.cfg.Log.Info("admin: change", "actor", p.actor, "action", action, "target", target)
	return nil
}

// raw marshals v for the audit log; nil stays null.
func raw(v any) json.RawMessage {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// result is the answer to a change.
type result struct {
	// Result says what was done, as the CLI prints it.
	Result string `json:"result"`
}

func done(format string, args ...any) result { return result{Result: fmt.Sprintf(format, args...)} }

func (s *Server) me(r *http.Request, p *principal) (any, error) {
	out := map[string]string{"name": p.name, "role": string(p.role)}
	if p.session != nil {
		out["csrf_token"] = p.session.csrf
	}
	return out, nil
}

// sessionSummary is a session in a list (Find, an account's recent
// sessions).
type sessionSummary struct {
	// ID is the session id.
	ID string `json:"id"`
	// Start is when the client connected.
	Start time.Time `json:"start"`
	// ClientIP is the client's address.
	ClientIP string `json:"client_ip"`
	// HELO is the name the client gave.
	HELO string `json:"helo"`
	// Login is the last login tried.
	Login string `json:"login"`
	// Account is the account that logged in, or "".
	Account string `json:"account"`
	// Outcome is how the session ended.
	Outcome string `json:"outcome"`
}

func (s *Server) summarize(ctx context.Context, r *sessionlog.Record) sessionSummary {
	ex := s.explainer.Explain(ctx, r)
	return sessionSummary{ID: r.ID, Start: r.Start, ClientIP: r.ClientIP, HELO: r.HELO, Login: ex.Login, Account: r.Account, Outcome: ex.Outcome}
}

// sessionView is the whole record of a session with its explanation.
type sessionView struct {
	*sessionlog.Record
	Explanation
	// Queued are the messages accepted in the session that are still in
	// the queue, with their recipients' states.
	Queued []queueSummary `json:"queued"`
	// IPBlock is the block in force now on the client's IP, whatever
	// caused it, or nil.
	IPBlock *blockedEntry `json:"ip_block,omitempty"`
}

func (s *Server) getSession(r *http.Request, p *principal) (any, error) {
	id := r.PathValue("id")
	if !ids.IsSession(id) {
		return nil, badRequest("%q is not a session id (22 letters and digits)", id)
	}
	rec, err := trace.Session(r.Context(), s.cfg.Sessions, id)
	if err != nil {
		return nil, err
	}
	v := sessionView{Record: rec, Explanation: s.explainer.Explain(r.Context(), rec), Queued: []queueSummary{}}
	if ip, err := netip.ParseAddr(rec.ClientIP); err == nil {
		for _, e := range s.blockedEntries(r.Context(), false) {
			if k, err := netip.ParsePrefix(keyPrefix(e.Key)); err == nil && k.Contains(ip) {
				v.IPBlock = &e
				break
			}
		}
	}
	if s.cfg.Queue != nil {
		for _, q := range rec.QueueIDs() {
			if it, _, err := s.cfg.Queue.Show(q); err == nil {
				v.Queued = append(v.Queued, summarizeQueued(*it))
			}
		}
	}
	return v, nil
}

// blockedEntry is one key of the guard as support sees it (SPEC R11a).
type blockedEntry struct {
	// Key is the address or network.
	Key string `json:"key"`
	// Failures are the failures in the window.
	Failures int `json:"failures"`
	// Blocked says whether a block is in force.
	Blocked bool `json:"blocked"`
	// Since and Until bound the block.
	Since *time.Time `json:"since,omitempty"`
	// Until is when the block ends by itself.
	Until *time.Time `json:"until,omitempty"`
	// Sessions are the sessions of the failures.
	Sessions []string `json:"sessions"`
	// Reason is what support gave for a block made by hand.
	Reason string `json:"reason,omitempty"`
}

func (s *Server) blockedEntries(ctx context.Context, all bool) []blockedEntry {
	out := []blockedEntry{}
	for _, e := range s.cfg.Guard.List() {
		if !e.Blocked && !all {
			continue
		}
		b := blockedEntry{Key: guard.FormatKey(e.Key), Failures: e.Failures, Blocked: e.Blocked, Sessions: e.SIDs}
		if b.Sessions == nil {
			b.Sessions = []string{}
		}
		if e.Blocked {
			since, until := e.Since, e.Until
			b.Since, b.Until = &since, &until
			if len(e.SIDs) == 0 {
				b.Reason = s.blockReason(ctx, e)
			}
		}
		out = append(out, b)
	}
	return out
}

// blockReason finds the reason of a block made by hand in the audit log.
func (s *Server) blockReason(ctx context.Context, e guard.Entry) string {
	es, _, err := s.cfg.Audit.Audit(ctx, AuditQuery{Target: "ip:" + guard.FormatKey(e.Key), Action: "guard.block", Limit: 1})
	if err != nil || len(es) == 0 {
		return ""
	}
	var after struct {
		Reason string `json:"reason"`
	}
	json.Unmarshal(es[0].After, &after)
	return after.Reason
}

func (s *Server) listBlocked(r *http.Request, p *principal) (any, error) {
	all, err := boolParam(r, "all")
	if err != nil {
		return nil, err
	}
	return page(r, s.blockedEntries(r.Context(), all))
}

func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s %q: must be true or false", name, v)
	}
	return b, nil
}

// maxBlock is the longest block support can make by hand.
const maxBlock = 365 * 24 * time.Hour

func (s *Server) block(r *http.Request, p *principal) (any, error) {
	var in struct {
		Target   string `json:"target"`
		Duration string `json:"duration"`
		Reason   string `json:"reason"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	t, err := guard.ParseTarget(in.Target)
	if err != nil {
		return nil, badRequest("target: %v", err)
	}
	d, err := time.ParseDuration(in.Duration)
	if err != nil || d <= 0 || d > maxBlock {
		return nil, badRequest("duration %q: give a positive Go duration up to %s, such as \"1h\" or \"30m\"", in.Duration, maxBlock)
	}
	if strings.TrimSpace(in.Reason) == "" || len(in.Reason) > 500 {
		return nil, badRequest("reason: say why, in at most 500 bytes")
	}
	until := s.cfg.Now().Add(d)
	key, err := s.cfg.Guard.BlockNetwork(r.Context(), t, until)
	if err != nil {
		return nil, err
	}
	k := guard.FormatKey(key)
	after := map[string]any{"until": until.UTC(), "reason": in.Reason}
	if err := s.audit(r.Context(), p, "guard.block", "ip:"+k, nil, after); err != nil {
		return nil, err
	}
	return done("blocked %s until %s", k, until.UTC().Format(time.RFC3339)), nil
}

func (s *Server) unblock(r *http.Request, p *principal) (any, error) {
	var in struct {
		Target string `json:"target"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	t, err := guard.ParseTarget(in.Target)
	if err != nil {
		return nil, badRequest("target: %v", err)
	}
	target := s.cfg.Guard.Config().Target(t)
	var before []blockedEntry
	for _, e := range s.blockedEntries(r.Context(), true) {
		if k, err := netip.ParsePrefix(keyPrefix(e.Key)); err == nil && k.Overlaps(target) {
			before = append(before, e)
		}
	}
	keys, err := s.cfg.Guard.Unblock(r.Context(), t)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errorf(http.StatusNotFound, "%s: not blocked, no failures counted", in.Target)
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = guard.FormatKey(k)
	}
	if err := s.audit(r.Context(), p, "guard.unblock", "ip:"+guard.FormatKey(target), before, map[string]any{"lifted": names}); err != nil {
		return nil, err
	}
	return map[string]any{"result": "unblocked " + strings.Join(names, ", "), "keys": names}, nil
}

// keyPrefix turns a formatted key back into CIDR form.
func keyPrefix(k string) string {
	if strings.Contains(k, "/") {
		return k
	}
	if a, err := netip.ParseAddr(k); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return k
}

// accountView is an account as the API shows it; the hash is never shown.
type accountView struct {
	// Address is the login.
	Address string `json:"address"`
	// Domain is its hosted domain.
	Domain string `json:"domain"`
	// SMTPAccess is false when sending is disabled (SPEC R4).
	SMTPAccess bool `json:"smtp_access"`
	// Held is set while the account is held as compromised (SPEC R20),
	// which refuses its AUTH whatever SMTPAccess says; HeldReason says why.
	Held       bool   `json:"held"`
	HeldReason string `json:"held_reason,omitempty"`
	// Identities are the extra sender identities (SPEC R9).
	Identities []string `json:"identities"`
	// Aliases are the alias domains of Domain, on the detail only.
	Aliases []string `json:"aliases,omitempty"`
	// Created is when the account was added.
	Created time.Time `json:"created"`
}

func viewAccount(a *directory.Account) accountView {
	v := accountView{Address: a.Address, Domain: a.Domain, SMTPAccess: a.SMTPAccess, Held: a.Held, HeldReason: a.HeldReason,
		Identities: a.Identities, Aliases: a.Aliases, Created: a.Created}
	if v.Identities == nil {
		v.Identities = []string{}
	}
	return v
}

func (s *Server) listAccounts(r *http.Request, p *principal) (any, error) {
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	dom := r.URL.Query().Get("domain")
	if dom != "" {
		d, err := address.Domain(dom)
		if err != nil {
			return nil, badRequest("domain %q: %v", dom, err)
		}
		dom = d
	}
	accts, err := s.cfg.Directory.Accounts(r.Context(), dom)
	if err != nil {
		return nil, err
	}
	out := []accountView{}
	for i := range accts {
		if q == "" || strings.Contains(accts[i].Address, q) {
			out = append(out, viewAccount(&accts[i]))
		}
	}
	return page(r, out)
}

// parseAddress checks an address from a path or body.
func parseAddress(what, s string) (string, error) {
	a, err := address.Parse(s)
	if err != nil {
		return "", badRequest("%s %q: %v", what, s, err)
	}
	return a.String(), nil
}

// account reads the account named in the path.
func (s *Server) account(r *http.Request) (*directory.Account, error) {
	addr, err := parseAddress("address", r.PathValue("address"))
	if err != nil {
		return nil, err
	}
	return s.cfg.Directory.Account(r.Context(), addr)
}

func (s *Server) getAccount(r *http.Request, p *principal) (any, error) {
	a, err := s.account(r)
	if err != nil {
		return nil, err
	}
	recs, err := s.cfg.Sessions.Find(r.Context(), sessionlog.Query{Address: a.Address, Limit: 20})
	if err != nil {
		return nil, err
	}
	recent := []sessionSummary{}
	for _, rec := range recs {
		recent = append(recent, s.summarize(r.Context(), rec))
	}
	return map[string]any{"account": viewAccount(a), "recent_sessions": recent}, nil
}

// newHash hashes a password given to the API.
func (s *Server) newHash(pw string) (string, error) {
	if pw == "" {
		return "", badRequest("password: must not be empty")
	}
	if len(pw) > 1024 {
		return "", badRequest("password: longer than 1024 bytes")
	}
	return password.Hash(s.settings().PasswordScheme, pw)
}

func (s *Server) addAccount(r *http.Request, p *principal) (any, error) {
	var in struct {
		Address  string `json:"address"`
		Password string `json:"password"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	addr, err := parseAddress("address", in.Address)
	if err != nil {
		return nil, err
	}
	h, err := s.newHash(in.Password)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.AddAccount(r.Context(), addr, h); err != nil {
		return nil, err
	}
	a, err := s.cfg.Directory.Account(r.Context(), addr)
	if err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "account.add", "account:"+a.Address, nil, viewAccount(a)); err != nil {
		return nil, err
	}
	return done("added account %s", a.Address), nil
}

func (s *Server) removeAccount(r *http.Request, p *principal) (any, error) {
	a, err := s.account(r)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.RemoveAccount(r.Context(), a.Address); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "account.remove", "account:"+a.Address, viewAccount(a), nil); err != nil {
		return nil, err
	}
	return done("removed account %s", a.Address), nil
}

func (s *Server) setSMTPAccess(r *http.Request, p *principal) (any, error) {
	var in struct {
		Enabled *bool `json:"enabled"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if in.Enabled == nil {
		return nil, badRequest("enabled: true or false is required")
	}
	a, err := s.account(r)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.SetSMTPAccess(r.Context(), a.Address, *in.Enabled); err != nil {
		return nil, err
	}
	verb := "disable"
	if *in.Enabled {
		verb = "enable"
	}
	err = s.audit(r.Context(), p, "account."+verb, "account:"+a.Address,
		map[string]bool{"smtp_access": a.SMTPAccess}, map[string]bool{"smtp_access": *in.Enabled})
	if err != nil {
		return nil, err
	}
	return done("%sd SMTP access of %s", verb, a.Address), nil
}

func (s *Server) setPassword(r *http.Request, p *principal) (any, error) {
	var in struct {
		Password string `json:"password"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	a, err := s.account(r)
	if err != nil {
		return nil, err
	}
	h, err := s.newHash(in.Password)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.SetPassword(r.Context(), a.Address, h); err != nil {
		return nil, err
	}
	// The audit log says that the password changed, never what it is.
	if err := s.audit(r.Context(), p, "account.passwd", "account:"+a.Address, nil, map[string]string{"password": "changed"}); err != nil {
		return nil, err
	}
	return done("changed password of %s", a.Address), nil
}

func (s *Server) addIdentity(r *http.Request, p *principal) (any, error) {
	var in struct {
		Identity string `json:"identity"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	id, err := parseAddress("identity", in.Identity)
	if err != nil {
		return nil, err
	}
	a, err := s.account(r)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.AddIdentity(r.Context(), a.Address, id); err != nil {
		return nil, err
	}
	after := append(slices.Clone(a.Identities), id)
	if err := s.audit(r.Context(), p, "account.identity.add", "account:"+a.Address,
		map[string][]string{"identities": a.Identities}, map[string][]string{"identities": after}); err != nil {
		return nil, err
	}
	return done("added identity %s to %s", id, a.Address), nil
}

func (s *Server) removeIdentity(r *http.Request, p *principal) (any, error) {
	id, err := parseAddress("identity", r.PathValue("identity"))
	if err != nil {
		return nil, err
	}
	a, err := s.account(r)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.RemoveIdentity(r.Context(), a.Address, id); err != nil {
		return nil, err
	}
	after := slices.DeleteFunc(slices.Clone(a.Identities), func(x string) bool { return x == id })
	if err := s.audit(r.Context(), p, "account.identity.remove", "account:"+a.Address,
		map[string][]string{"identities": a.Identities}, map[string][]string{"identities": after}); err != nil {
		return nil, err
	}
	return done("removed identity %s from %s", id, a.Address), nil
}

// domainView is a hosted domain with its aliases and DKIM record.
type domainView struct {
	// Name is the domain.
	Name string `json:"name"`
	// Aliases are its alias domains.
	Aliases []string `json:"aliases"`
	// Accounts is how many accounts it has.
	Accounts int `json:"accounts"`
	// DKIM is its signing key's DNS record, nil without a key.
	DKIM *dkimView `json:"dkim"`
	// AliasDKIM are the DKIM records of its aliases that have keys.
	AliasDKIM []dkimView `json:"alias_dkim"`
	// Health is the domain's DNS health; only the domain detail looks
	// it up, and only with a resolver.
	Health *domainHealth `json:"health,omitempty"`
}

// dkimView is a DKIM key's public side.
type dkimView struct {
	// Domain is the signing domain.
	Domain string `json:"domain"`
	// Selector is the key's selector.
	Selector string `json:"selector"`
	// Algorithm is "rsa" or "ed25519".
	Algorithm string `json:"algorithm"`
	// Name is the DNS name to publish the record under.
	Name string `json:"name"`
	// Value is the TXT value.
	Value string `json:"value"`
	// Record is the record in zone-file syntax.
	Record string `json:"record"`
	// Created is when the key was made.
	Created time.Time `json:"created"`
	// DNS says whether the record published in DNS matches the key; only
	// the domain detail looks it up.
	DNS *dkimCheck `json:"dns,omitempty"`
}

func viewDKIM(k *dkim.Key) *dkimView {
	return &dkimView{Domain: k.Domain, Selector: k.Selector, Algorithm: k.Algorithm, Name: k.RecordName(),
		Value: k.TXTValue(), Record: k.DNSRecord(), Created: k.Created}
}

func (s *Server) listDomains(r *http.Request, p *principal) (any, error) {
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	ds, err := s.cfg.Directory.Domains(r.Context())
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, d := range ds {
		if q == "" || strings.Contains(d, q) {
			out = append(out, d)
		}
	}
	return page(r, out)
}

// domainName checks a domain from a path or body.
func domainName(what, s string) (string, error) {
	d, err := address.Domain(s)
	if err != nil {
		return "", badRequest("%s %q: %v", what, s, err)
	}
	return d, nil
}

// hosted checks that the domain in the path is hosted and returns it.
func (s *Server) hosted(r *http.Request) (string, error) {
	d, err := domainName("domain", r.PathValue("name"))
	if err != nil {
		return "", err
	}
	ds, err := s.cfg.Directory.Domains(r.Context())
	if err != nil {
		return "", err
	}
	if !slices.Contains(ds, d) {
		return "", errorf(http.StatusNotFound, "domain %s: not a hosted domain", d)
	}
	return d, nil
}

func (s *Server) domainView(ctx context.Context, d string) (*domainView, error) {
	v := &domainView{Name: d, Aliases: []string{}, AliasDKIM: []dkimView{}}
	as, err := s.cfg.Directory.Aliases(ctx, d)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		v.Aliases = append(v.Aliases, a.Name)
		if k, err := s.cfg.DKIM.Get(ctx, a.Name); err == nil {
			v.AliasDKIM = append(v.AliasDKIM, *viewDKIM(k))
		}
	}
	accts, err := s.cfg.Directory.Accounts(ctx, d)
	if err != nil {
		return nil, err
	}
	v.Accounts = len(accts)
	k, err := s.cfg.DKIM.Get(ctx, d)
	switch {
	case err == nil:
		v.DKIM = viewDKIM(k)
	case !errors.Is(err, dkim.ErrNoKey):
		return nil, err
	}
	return v, nil
}

func (s *Server) getDomain(r *http.Request, p *principal) (any, error) {
	d, err := s.hosted(r)
	if err != nil {
		return nil, err
	}
	v, err := s.domainView(r.Context(), d)
	if err != nil {
		return nil, err
	}
	// The DNS check of each key with a record to publish: the domain's and
	// its aliases'.
	var keys []*dkim.Key
	var views []*dkimView
	for _, name := range append([]string{d}, v.Aliases...) {
		k, err := s.cfg.DKIM.Get(r.Context(), name)
		if err != nil {
			continue
		}
		if name == d && v.DKIM != nil {
			keys, views = append(keys, k), append(views, v.DKIM)
		}
		for i := range v.AliasDKIM {
			if v.AliasDKIM[i].Domain == name && name != d {
				keys, views = append(keys, k), append(views, &v.AliasDKIM[i])
			}
		}
	}
	s.checkDKIMViews(r.Context(), keys, views)
	v.Health = s.health(r.Context(), v)
	return v, nil
}

func (s *Server) addDomain(r *http.Request, p *principal) (any, error) {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	d, err := domainName("name", in.Name)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.AddDomain(r.Context(), d); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "domain.add", "domain:"+d, nil, map[string]string{"name": d}); err != nil {
		return nil, err
	}
	return done("added domain %s", d), nil
}

func (s *Server) removeDomain(r *http.Request, p *principal) (any, error) {
	force, err := boolParam(r, "force")
	if err != nil {
		return nil, err
	}
	d, err := domainName("domain", r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	// An unknown domain is answered by RemoveDomain, in the directory's
	// words.
	before, _ := s.domainView(r.Context(), d)
	if err := s.cfg.Directory.RemoveDomain(r.Context(), d, force); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "domain.remove", "domain:"+d, before, nil); err != nil {
		return nil, err
	}
	return done("removed domain %s", d), nil
}

func (s *Server) addAlias(r *http.Request, p *principal) (any, error) {
	var in struct {
		Alias string `json:"alias"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	a, err := domainName("alias", in.Alias)
	if err != nil {
		return nil, err
	}
	d, err := domainName("domain", r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Directory.AddAlias(r.Context(), a, d); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "alias.add", "domain:"+d, nil, map[string]string{"alias": a, "domain": d}); err != nil {
		return nil, err
	}
	return done("added alias %s of %s", a, d), nil
}

func (s *Server) removeAlias(r *http.Request, p *principal) (any, error) {
	a, err := domainName("alias", r.PathValue("alias"))
	if err != nil {
		return nil, err
	}
	d, err := s.cfg.Directory.DomainOf(r.Context(), a)
	if err != nil {
		return nil, err
	}
	if d == a {
		return nil, badRequest("%s is a hosted domain, not an alias", a)
	}
	if err := s.cfg.Directory.RemoveAlias(r.Context(), a); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "alias.remove", "domain:"+d, map[string]string{"alias": a, "domain": d}, nil); err != nil {
		return nil, err
	}
	return done("removed alias %s", a), nil
}

// dkimDomain checks that the domain in the path is hosted or an alias.
func (s *Server) dkimDomain(r *http.Request) (string, error) {
	d, err := domainName("domain", r.PathValue("name"))
	if err != nil {
		return "", err
	}
	if _, err := s.cfg.Directory.DomainOf(r.Context(), d); err != nil {
		return "", err
	}
	return d, nil
}

func (s *Server) generateDKIM(r *http.Request, p *principal) (any, error) {
	var in struct {
		Selector  string `json:"selector"`
		Algorithm string `json:"algorithm"`
		Replace   bool   `json:"replace"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	d, err := s.dkimDomain(r)
	if err != nil {
		return nil, err
	}
	if in.Selector == "" {
		in.Selector = "s" + s.cfg.Now().UTC().Format("200601")
	}
	if in.Algorithm != "" && in.Algorithm != dkim.RSA && in.Algorithm != dkim.Ed25519 {
		return nil, badRequest("algorithm %q: must be %q or %q", in.Algorithm, dkim.RSA, dkim.Ed25519)
	}
	k, err := dkim.Generate(d, in.Selector, in.Algorithm)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	var before *dkimView
	if old, err := s.cfg.DKIM.Get(r.Context(), d); err == nil {
		before = viewDKIM(old)
	}
	if err := s.cfg.DKIM.Put(r.Context(), k, in.Replace); err != nil {
		return nil, err
	}
	v := viewDKIM(k)
	if err := s.audit(r.Context(), p, "dkim.generate", "domain:"+d, before, v); err != nil {
		return nil, err
	}
	return v, nil
}

func (s *Server) removeDKIM(r *http.Request, p *principal) (any, error) {
	d, err := s.dkimDomain(r)
	if err != nil {
		return nil, err
	}
	old, err := s.cfg.DKIM.Get(r.Context(), d)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.DKIM.Delete(r.Context(), d); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "dkim.remove", "domain:"+d, viewDKIM(old), nil); err != nil {
		return nil, err
	}
	return done("removed the DKIM key of %s", d), nil
}

// queueSummary is a queued message in a list.
type queueSummary struct {
	// ID is the queue id.
	ID string `json:"id"`
	// Received is when it was accepted.
	Received time.Time `json:"received"`
	// AgeSeconds is how long ago that was.
	AgeSeconds int64 `json:"age_seconds"`
	// From is the envelope sender.
	From string `json:"from"`
	// Account and SessionID tell who sent it and how.
	Account string `json:"account"`
	// SessionID is the SMTP session that accepted it.
	SessionID string `json:"session_id"`
	// State is "deferred" when a recipient waits for a retry, else
	// "pending", or "done" when nothing is left to try.
	State string `json:"state"`
	// Recipients are the recipients with their states.
	Recipients []rcptSummary `json:"recipients"`
	// Next is when the message is due again, nil when nothing is left.
	Next *time.Time `json:"next"`
}

// rcptSummary is one recipient in a list.
type rcptSummary struct {
	// Addr is the recipient.
	Addr string `json:"addr"`
	// Domain is its destination.
	Domain string `json:"domain"`
	// Status is its delivery state.
	Status string `json:"status"`
	// Attempts counts the attempts.
	Attempts int `json:"attempts"`
}

func summarizeQueued(it queue.Item) queueSummary {
	q := queueSummary{ID: it.Env.ID, Received: it.Env.Received, AgeSeconds: int64(time.Since(it.Env.Received).Seconds()),
		From: it.Env.From, Account: it.Env.Account, SessionID: it.Env.SessionID, State: "done"}
	for _, r := range it.State.Rcpts {
		q.Recipients = append(q.Recipients, rcptSummary{Addr: r.Addr, Domain: r.Domain, Status: r.Status, Attempts: r.Attempts})
		switch {
		case r.Status == queue.Deferred:
			q.State = queue.Deferred
		case r.Status == queue.Pending && q.State != queue.Deferred:
			q.State = queue.Pending
		}
	}
	if t, ok := it.State.NextDue(); ok {
		q.Next = &t
	}
	if it.State.Held != nil {
		// SPEC R20: neither tried nor reported until a release.
		q.State, q.Next = queue.StateHeld, nil
	}
	return q
}

// queue returns the queue or a 503 when the node has none.
func (s *Server) queue() (Queue, error) {
	if s.cfg.Queue == nil {
		return nil, errorf(http.StatusServiceUnavailable, "the queue is not available")
	}
	return s.cfg.Queue, nil
}

func (s *Server) listQueue(r *http.Request, p *principal) (any, error) {
	q, err := s.queue()
	if err != nil {
		return nil, err
	}
	state := r.URL.Query().Get("state")
	switch state {
	case "", queue.Pending, queue.Deferred, "done":
	default:
		return nil, badRequest("state %q: must be %q, %q or \"done\"", state, queue.Pending, queue.Deferred)
	}
	dest := strings.ToLower(r.URL.Query().Get("domain"))
	items, err := q.List()
	if err != nil {
		return nil, err
	}
	out := []queueSummary{}
	for _, it := range items {
		sum := summarizeQueued(it)
		if state != "" && sum.State != state {
			continue
		}
		if dest != "" && !slices.ContainsFunc(sum.Recipients, func(r rcptSummary) bool { return r.Domain == dest }) {
			continue
		}
		out = append(out, sum)
	}
	return page(r, out)
}

// queuePage is the queue page's data: a page of the queue, and the
// destinations in back-off, with why.
type queuePage struct {
	list[queueSummary]
	// Backoffs are the MX hosts in back-off; none when the queue does not
	// deliver.
	Backoffs []delivery.Backoff
}

// queuePage lists the queue for the page, with the destinations in
// back-off when the queue knows them.
func (s *Server) queuePage(r *http.Request, p *principal) (any, error) {
	v, err := s.listQueue(r, p)
	if err != nil {
		return nil, err
	}
	d := queuePage{list: v.(list[queueSummary])}
	if b, ok := s.cfg.Queue.(Backoffs); ok {
		d.Backoffs = b.Backoffs()
	}
	return d, nil
}

// backoffSummary is one MX host in back-off as the API gives it.
type backoffSummary struct {
	// Host is the MX host name.
	Host string `json:"host"`
	// Reason is the receiver's reply that asked for it, and Since when it
	// came.
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// PausedUntil is the end of the pause: no connection to the host
	// before it.
	PausedUntil time.Time `json:"paused_until"`
	// MaxConnections is the lowered connection limit, in force until
	// LimitedUntil.
	MaxConnections int       `json:"max_connections"`
	LimitedUntil   time.Time `json:"limited_until"`
	// Level counts the replies asking for it in a row.
	Level int `json:"level"`
}

// listBackoffs lists the destinations in back-off because their receiver
// asked to slow down (issue 20): what the queue page shows, for scripts
// and the CLI. A node whose queue does not deliver has none.
func (s *Server) listBackoffs(r *http.Request, p *principal) (any, error) {
	q, err := s.queue()
	if err != nil {
		return nil, err
	}
	out := []backoffSummary{}
	if b, ok := q.(Backoffs); ok {
		for _, x := range b.Backoffs() {
			out = append(out, backoffSummary{Host: x.Host, Reason: x.Reason, Since: x.Since, PausedUntil: x.Until,
				MaxConnections: x.MaxConnections, LimitedUntil: x.Ends, Level: x.Level})
		}
	}
	return page(r, out)
}

// queueID checks the queue id in the path; "all" passes when all.
func queueID(r *http.Request, all bool) (string, error) {
	id := r.PathValue("id")
	if (all && id == "all") || ids.IsQueue(id) {
		return id, nil
	}
	return "", badRequest("%q is not a queue id (%d letters and digits)", id, ids.QueueLen)
}

func (s *Server) getQueued(r *http.Request, p *principal) (any, error) {
	q, err := s.queue()
	if err != nil {
		return nil, err
	}
	id, err := queueID(r, false)
	if err != nil {
		return nil, err
	}
	it, headers, err := q.Show(id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"summary": summarizeQueued(*it), "envelope": it.Env, "state": it.State, "headers": string(headers),
		"scan": s.scanOf(r.Context(), it.Env.SessionID, id)}, nil
}

func (s *Server) retryQueued(r *http.Request, p *principal) (any, error) {
	q, err := s.queue()
	if err != nil {
		return nil, err
	}
	id, err := queueID(r, true)
	if err != nil {
		return nil, err
	}
	msg, err := q.Retry(id)
	if err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "queue.retry", "queue:"+id, nil, nil); err != nil {
		return nil, err
	}
	return result{Result: msg}, nil
}

func (s *Server) deleteQueued(r *http.Request, p *principal) (any, error) {
	var in struct {
		Bounce bool `json:"bounce"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	q, err := s.queue()
	if err != nil {
		return nil, err
	}
	id, err := queueID(r, false)
	if err != nil {
		return nil, err
	}
	var before any
	if it, _, err := q.Show(id); err == nil {
		before = summarizeQueued(*it)
	}
	msg, err := q.Delete(id, in.Bounce)
	if err != nil {
		return nil, err
	}
	s.traceDeleted(r.Context(), p, id, in.Bounce)
	if err := s.audit(r.Context(), p, "queue.delete", "queue:"+id, before, map[string]bool{"bounce": in.Bounce}); err != nil {
		return nil, err
	}
	return result{Result: msg}, nil
}

// adoptSpool moves the messages of a stopped node's spool, its disk mounted
// here, into this node's queue ("submitd queue adopt").
func (s *Server) adoptSpool(r *http.Request, p *principal) (any, error) {
	var in struct {
		Dir string `json:"dir"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(in.Dir) {
		return nil, badRequest("dir %q: must be the absolute path of the other node's spool", in.Dir)
	}
	q, err := s.queue()
	if err != nil {
		return nil, err
	}
	res, err := q.Adopt(in.Dir)
	switch {
	case errors.Is(err, queue.ErrLocked):
		return nil, errorf(http.StatusConflict, "%s", err)
	case errors.Is(err, queue.ErrNotSpool), errors.Is(err, fs.ErrNotExist):
		return nil, badRequest("%s", err)
	}
	if res != nil && len(res.Adopted) > 0 {
		// Whatever moved is recorded, even when a later message failed.
		if aerr := s.audit(r.Context(), p, "queue.adopt", "spool:"+res.Dir, nil, res); aerr != nil && err == nil {
			err = aerr
		}
	}
	if err != nil {
		return nil, err
	}
	return result{Result: res.String()}, nil
}

func (s *Server) listAudit(r *http.Request, p *principal) (any, error) {
	offset, limit, err := paging(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	es, total, err := s.cfg.Audit.Audit(r.Context(), AuditQuery{Actor: q.Get("actor"), Target: q.Get("target"),
		Action: q.Get("action"), Offset: offset, Limit: limit})
	if err != nil {
		return nil, err
	}
	if es == nil {
		es = []Entry{}
	}
	return list[Entry]{Items: es, Total: total, Offset: offset, Limit: limit}, nil
}

func (s *Server) listStaff(r *http.Request, p *principal) (any, error) {
	st, err := s.cfg.Staff.ListStaff(r.Context())
	if err != nil {
		return nil, err
	}
	return page(r, st)
}

func (s *Server) addStaff(r *http.Request, p *principal) (any, error) {
	var in struct {
		Name     string `json:"name"`
		Role     string `json:"role"`
		Password string `json:"password"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if err := CheckStaffName(in.Name); err != nil {
		return nil, badRequest("%v", err)
	}
	role, err := ParseRole(in.Role)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	h, err := s.newHash(in.Password)
	if err != nil {
		return nil, err
	}
	st := Staff{Name: in.Name, Role: role, PasswordHash: h, Created: s.cfg.Now()}
	if err := s.cfg.Staff.AddStaff(r.Context(), st); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "staff.add", "staff:"+st.Name, nil, st); err != nil {
		return nil, err
	}
	return done("added %s %s", role, st.Name), nil
}

func (s *Server) staffNamed(r *http.Request) (*Staff, error) {
	name := r.PathValue("name")
	if err := CheckStaffName(name); err != nil {
		return nil, badRequest("%v", err)
	}
	return s.cfg.Staff.Staff(r.Context(), name)
}

func (s *Server) removeStaff(r *http.Request, p *principal) (any, error) {
	st, err := s.staffNamed(r)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Staff.RemoveStaff(r.Context(), st.Name); err != nil {
		return nil, err
	}
	s.endSessionsOf(st.Name)
	if err := s.audit(r.Context(), p, "staff.remove", "staff:"+st.Name, st, nil); err != nil {
		return nil, err
	}
	return done("removed %s", st.Name), nil
}

func (s *Server) setStaffPassword(r *http.Request, p *principal) (any, error) {
	var in struct {
		Password string `json:"password"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	st, err := s.staffNamed(r)
	if err != nil {
		return nil, err
	}
	h, err := s.newHash(in.Password)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Staff.SetStaffPassword(r.Context(), st.Name, h); err != nil {
		return nil, err
	}
	s.endSessionsOf(st.Name)
	if err := s.audit(r.Context(), p, "staff.passwd", "staff:"+st.Name, nil, map[string]string{"password": "changed"}); err != nil {
		return nil, err
	}
	return done("changed password of %s", st.Name), nil
}

func (s *Server) addToken(r *http.Request, p *principal) (any, error) {
	st, err := s.staffNamed(r)
	if err != nil {
		return nil, err
	}
	tok, t := NewToken(st.Name, s.cfg.Now())
	if t, err = s.cfg.Staff.AddToken(r.Context(), t); err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "staff.token.add", "staff:"+st.Name, nil, t); err != nil {
		return nil, err
	}
	return map[string]any{"id": t.ID, "staff": t.Staff, "token": tok}, nil
}

func (s *Server) listTokens(r *http.Request, p *principal) (any, error) {
	ts, err := s.cfg.Staff.Tokens(r.Context(), r.URL.Query().Get("staff"))
	if err != nil {
		return nil, err
	}
	return page(r, ts)
}

func (s *Server) revokeToken(r *http.Request, p *principal) (any, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return nil, badRequest("token id %q: must be a positive number (see GET /api/v1/tokens)", r.PathValue("id"))
	}
	t, err := s.cfg.Staff.RevokeToken(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if err := s.audit(r.Context(), p, "staff.token.revoke", "staff:"+t.Staff, t, nil); err != nil {
		return nil, err
	}
	return done("revoked token %d of %s", t.ID, t.Staff), nil
}
