package admin

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"submitd/internal/loginwatch"
	"submitd/internal/testutil"
)

// withLogins gives w's server a login watch on a clock of its own, with
// jan@firma.cz under attack after wrong passwords from three networks and
// an earlier success from 192.0.2.0/24.
func withLogins(t *testing.T, w *world) (*loginwatch.Watch, *testutil.Clock) {
	t.Helper()
	ctx := context.Background()
	st, err := loginwatch.NewSQLite(ctx, testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	clk := testutil.NewClock(time.Date(2026, 3, 2, 13, 0, 0, 0, time.UTC))
	lw := loginwatch.New(loginwatch.Config{MaxFailures: 3, Now: clk.Now}, st)
	lw.Succeeded(ctx, testAccount, netip.MustParseAddr("192.0.2.7"))
	for _, ip := range []string{"198.51.100.1", "198.51.100.2", "203.0.113.3"} {
		lw.Failed(ctx, testAccount, netip.MustParseAddr(ip))
	}
	w.srv.SetLogins(lw)
	return lw, clk
}

// TestLoginsAPI: support lists the logins under attack and a login's
// trusted networks, and clears the state through the API, audited; the
// endpoints take the roles and refuse bad input like the others; without a
// running server's watch they say why they cannot answer.
func TestLoginsAPI(t *testing.T) {
	w := newWorld(t)
	wantError(t, "no watch", w.do("GET", "/api/v1/logins/under-attack", "", RoleSupport), 503)
	lw, _ := withLogins(t, w)
	wantError(t, "unauthenticated", w.do("GET", "/api/v1/logins/under-attack", "", ""), 401)

	r := w.do("GET", "/api/v1/logins/under-attack", "", RoleSupport)
	items, _ := r.body["items"].([]any)
	if r.status != 200 || len(items) != 1 || items[0].(map[string]any)["login"] != testAccount ||
		items[0].(map[string]any)["ips"] != 3.0 || items[0].(map[string]any)["under_attack"] != true {
		t.Fatalf("under-attack: %d %s", r.status, r.raw)
	}
	wantError(t, "bad paging", w.do("GET", "/api/v1/logins/under-attack?limit=0", "", RoleSupport), 400)

	r = w.do("GET", "/api/v1/logins/JAN@firma.cz/networks", "", RoleSupport)
	if r.status != 200 || !strings.Contains(r.raw, `"network": "192.0.2.0/24"`) || !strings.Contains(r.raw, `"under_attack": true`) {
		t.Fatalf("networks: %d %s", r.status, r.raw)
	}
	wantError(t, "bad login", w.do("GET", "/api/v1/logins/jan/networks", "", RoleSupport), 400)

	wantError(t, "csrf", w.do("DELETE", "/api/v1/logins/under-attack/"+testAccount, "", "", "Cookie", SessionCookie+"=x"), 401)
	wantError(t, "nothing held", w.do("DELETE", "/api/v1/logins/under-attack/eva@firma.cz", "", RoleSupport), 404)
	r = w.do("DELETE", "/api/v1/logins/under-attack/"+testAccount, "", RoleSupport)
	if r.status != 200 || !strings.HasPrefix(r.body["result"].(string), "cleared jan@firma.cz: under attack since 2026-03-02T13:00:00Z, 3 failures from 3 IPs") {
		t.Fatalf("clear: %d %s", r.status, r.raw)
	}
	if e := w.lastAudit(); e == nil || e.Action != "logins.clear" || e.Target != "login:"+testAccount || e.Actor != "petra" ||
		!strings.Contains(string(e.Before), `"under_attack":true`) {
		t.Fatalf("audit entry %+v", e)
	}
	if l, ok := lw.Get(testAccount); ok {
		t.Fatalf("still held after clear: %+v", l)
	}
}

// TestExplainUnderAttack: a session refused because its login was under
// attack is told with the reason recorded then, and whether the state
// holds now (SPEC R21, R13).
func TestExplainUnderAttack(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	lw, clk := withLogins(t, w)
	d := lw.Check(ctx, testAccount, netip.MustParseAddr("100.64.9.9"))
	if !d.Refuse {
		t.Fatal("not refused")
	}
	rec := saveSession(t, w.sessions, "Attk000000000000000001", "100.64.9.9", "", clk.Now(),
		[3]string{loginwatch.EventKind, d.Reason, ""},
		[3]string{"auth", testAccount, "535 5.1.0 Attk000000000000000001 authentication failed"})
	ex := w.srv.explainer.Explain(ctx, rec)
	want := "login jan@firma.cz under attack from 4 IPs since 2026-03-02 13:00 UTC; this network 100.64.9.0/24 has no earlier success; " +
		"the password was not checked (R21); still under attack until 14:00 UTC: the customer can log in from a network where the login succeeded before, or support clears the state"
	if ex.Cause != want || ex.Outcome != "AUTH refused: login under attack" || len(ex.Fixes) != 1 || ex.Fixes[0] != "clear_attack" {
		t.Fatalf("explain:\n got %q %q %v\nwant %q", ex.Cause, ex.Outcome, ex.Fixes, want)
	}
	lw.Clear(testAccount)
	if ex := w.srv.explainer.Explain(ctx, rec); !strings.HasSuffix(ex.Cause, "the attack state has ended since, so the customer can log in again") {
		t.Fatalf("after clear: %q", ex.Cause)
	}
	// A wrong password that was checked is told as before.
	wrong := saveSession(t, w.sessions, "Attk000000000000000002", "192.0.2.7", "", clk.Now(),
		[3]string{"auth", testAccount, "535 5.1.0 Attk000000000000000002 authentication failed"})
	if ex := w.srv.explainer.Explain(ctx, wrong); !strings.HasPrefix(ex.Cause, "wrong password for jan@firma.cz") {
		t.Fatalf("checked wrong password: %q", ex.Cause)
	}
}
