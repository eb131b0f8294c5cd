package admin

import (
	"context"
	"net/http"
	"time"

	"submitd/internal/loginwatch"
)

// Logins is what the server reads and changes of the per-login failure
// count (SPEC R21); loginwatch.Watch is one. Its state lives in the memory
// of the running server.
type Logins interface {
	// List returns the logins under attack, or with all every login with
	// failures.
	List(all bool) []loginwatch.Login
	// Get returns what is held of one login.
	Get(login string) (loginwatch.Login, bool)
	// Clear ends a login's attack state and forgets its failures.
	Clear(login string) (loginwatch.Login, bool)
	// Networks returns the networks a login may try from during an attack.
	Networks(ctx context.Context, login string) ([]loginwatch.Network, error)
}

// SetLogins gives the server the login watch of the running node; without
// one the endpoints below answer 503.
func (s *Server) SetLogins(l Logins) {
	s.logins = l
	s.explainer.Logins = l
}

// loginRoutes registers the endpoints of the per-login count.
func (s *Server) loginRoutes() {
	s.handle("GET /api/v1/logins/under-attack", RoleSupport, s.listUnderAttack)
	s.handle("DELETE /api/v1/logins/under-attack/{login}", RoleSupport, s.clearUnderAttack)
	s.handle("GET /api/v1/logins/{login}/networks", RoleSupport, s.loginNetworks)
}

// loginsOrUnavailable returns the watch, or the 503 of a process without
// one: the CLI with no server running, or login_guard.enabled = false.
func (s *Server) loginsOrUnavailable() (Logins, error) {
	if s.logins == nil {
		return nil, errorf(http.StatusServiceUnavailable, "the per-login failure counts live in the running server's memory; no server runs here, or [login_guard] enabled = false")
	}
	return s.logins, nil
}

func (s *Server) listUnderAttack(r *http.Request, p *principal) (any, error) {
	l, err := s.loginsOrUnavailable()
	if err != nil {
		return nil, err
	}
	all, err := boolParam(r, "all")
	if err != nil {
		return nil, err
	}
	return page(r, l.List(all))
}

// loginOf returns the watch and the normalized login the path names.
func (s *Server) loginOf(r *http.Request) (Logins, string, error) {
	l, err := s.loginsOrUnavailable()
	if err != nil {
		return nil, "", err
	}
	login, err := parseAddress("login", r.PathValue("login"))
	return l, login, err
}

func (s *Server) clearUnderAttack(r *http.Request, p *principal) (any, error) {
	l, login, err := s.loginOf(r)
	if err != nil {
		return nil, err
	}
	before, ok := l.Clear(login)
	if !ok {
		return nil, errorf(http.StatusNotFound, "%s: not under attack, no failures counted", login)
	}
	if err := s.audit(r.Context(), p, "logins.clear", "login:"+login, before, nil); err != nil {
		return nil, err
	}
	if before.UnderAttack {
		return done("cleared %s: under attack since %s, %d failures from %d IPs; every network may try it again",
			login, before.Since.UTC().Format(time.RFC3339), before.Failures, before.IPs), nil
	}
	return done("cleared %s: %d failures from %d IPs forgotten", login, before.Failures, before.IPs), nil
}

// loginNetworksView is a login's trusted networks and its state.
type loginNetworksView struct {
	// Login is the normalized address.
	Login string `json:"login"`
	// Networks are those with a success in login_guard.trusted_for, the
	// latest first.
	Networks []loginwatch.Network `json:"networks"`
	// State is the count held now, nil when there is none.
	State *loginwatch.Login `json:"state"`
}

func (s *Server) loginNetworks(r *http.Request, p *principal) (any, error) {
	l, login, err := s.loginOf(r)
	if err != nil {
		return nil, err
	}
	nets, err := l.Networks(r.Context(), login)
	if err != nil {
		return nil, err
	}
	v := loginNetworksView{Login: login, Networks: nets}
	if st, ok := l.Get(login); ok {
		v.State = &st
	}
	return v, nil
}
