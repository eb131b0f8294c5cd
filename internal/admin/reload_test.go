package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// change changes the server's settings as a reload does.
func (w *world) change(f func(*Settings)) {
	st := *w.srv.settings()
	f(&st)
	w.srv.SetSettings(st)
}

// POST /api/v1/reload takes the admin role, answers what the reload did,
// and is audited; a file that does not load is answered 422 with its
// reason; without a running server it is 503.
func TestReloadEndpoint(t *testing.T) {
	w := newWorld(t)
	if r := w.do("POST", "/api/v1/reload", "", RoleAdmin); r.status != http.StatusServiceUnavailable {
		t.Errorf("without a server: %d %s", r.status, r.raw)
	}
	calls := 0
	var fail error
	w.srv.Reload = func(context.Context) ([]string, []string, error) {
		calls++
		return []string{"limits.max_connections_per_ip"}, []string{"listen.smtp"}, fail
	}
	if r := w.do("POST", "/api/v1/reload", "", ""); r.status != http.StatusUnauthorized {
		t.Errorf("without credentials: %d %s", r.status, r.raw)
	}
	if r := w.do("POST", "/api/v1/reload", "", RoleSupport); r.status != http.StatusForbidden {
		t.Errorf("support: %d %s", r.status, r.raw)
	}
	if calls != 0 {
		t.Fatalf("the reload ran %d times for callers without the admin role", calls)
	}
	r := w.do("POST", "/api/v1/reload", "", RoleAdmin)
	if r.status != http.StatusOK || !strings.Contains(r.raw, `"limits.max_connections_per_ip"`) || !strings.Contains(r.raw, `"listen.smtp"`) {
		t.Fatalf("admin: %d %s", r.status, r.raw)
	}
	want := "configuration reloaded; in force now: limits.max_connections_per_ip; left as they were until a restart: listen.smtp"
	if r.body["result"] != want {
		t.Errorf("result %q, want %q", r.body["result"], want)
	}
	a := w.do("GET", "/api/v1/audit?action=config.reload", "", RoleSupport)
	if !strings.Contains(a.raw, `"actor": "adam"`) || !strings.Contains(a.raw, "limits.max_connections_per_ip") {
		t.Errorf("audit: %s", a.raw)
	}

	fail = errors.New("config /etc/submitd.toml: line 4: invalid value 0 for limits.max_connections_per_ip: must be at least 1")
	r = w.do("POST", "/api/v1/reload", "", RoleAdmin)
	if r.status != http.StatusUnprocessableEntity || r.body["error"] != "nothing changed: "+fail.Error() {
		t.Errorf("bad file: %d %s", r.status, r.raw)
	}
}
