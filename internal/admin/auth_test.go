package admin

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// TestLoginCookie: a login sets an HttpOnly, SameSite=Strict session cookie
// (Secure only under TLS); the session ends when idle for SessionIdle and
// at logout, which itself needs the CSRF token.
func TestLoginCookie(t *testing.T) {
	w := newWorld(t)
	clk := testutil.NewClock(time.Now())
	w.srv.cfg.Now = clk.Now
	req, _ := http.NewRequest("POST", w.ts.URL+"/api/v1/login", strings.NewReader(`{"name":"petra","password":"`+staffPass+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == SessionCookie {
			c = k
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure {
		t.Fatalf("cookie %+v", c)
	}
	w.srv.cfg.SecureCookie = true
	resp, _ = http.DefaultClient.Do(mustReq(t, "POST", w.ts.URL+"/api/v1/login", `{"name":"petra","password":"`+staffPass+`"}`))
	resp.Body.Close()
	if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure {
		t.Errorf("under TLS the cookie is not Secure: %+v", cs)
	}

	browser, csrf := w.browser("petra")
	if r := w.send(browser, mustReq(t, "GET", w.ts.URL+"/api/v1/me", "")); r.status != 200 || r.body["csrf_token"] != csrf {
		t.Fatalf("me: %d %s", r.status, r.raw)
	}
	clk.Advance(DefaultSessionIdle - time.Second)
	if r := w.send(browser, mustReq(t, "GET", w.ts.URL+"/api/v1/me", "")); r.status != 200 {
		t.Fatalf("used within the idle time: %d", r.status)
	}
	clk.Advance(DefaultSessionIdle)
	wantError(t, "idle session", w.send(browser, mustReq(t, "GET", w.ts.URL+"/api/v1/me", "")), 401)

	browser, csrf = w.browser("petra")
	wantError(t, "logout without CSRF", w.send(browser, mustReq(t, "POST", w.ts.URL+"/api/v1/logout", "")), 403)
	req = mustReq(t, "POST", w.ts.URL+"/api/v1/logout", "")
	req.Header.Set(CSRFHeader, csrf)
	if r := w.send(browser, req); r.status != 200 {
		t.Fatalf("logout: %d %s", r.status, r.raw)
	}
	wantError(t, "after logout", w.send(browser, mustReq(t, "GET", w.ts.URL+"/api/v1/me", "")), 401)

	// A form post carries the token in a field.
	browser, csrf = w.browser("petra")
	req = mustReq(t, "POST", w.ts.URL+"/api/v1/accounts/"+testAccount+"/smtp_access", "enabled=false&csrf_token="+csrf)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := w.send(browser, req); r.status != 200 {
		t.Fatalf("form post: %d %s", r.status, r.raw)
	}
	// A text field that reads like a boolean stays text: "true" is a
	// password like any other.
	req = mustReq(t, "POST", w.ts.URL+"/api/v1/accounts/"+testAccount+"/password", "password=true&csrf_token="+csrf)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := w.send(browser, req); r.status != 200 {
		t.Fatalf("form post of the password \"true\": %d %s", r.status, r.raw)
	}
}

func mustReq(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// TestLoginCrossSite: a login form posted from another site's page is
// refused (login CSRF) and sets no cookie; the same post from the server's
// own page, or from an API client without browser headers, logs in.
func TestLoginCrossSite(t *testing.T) {
	w := newWorld(t)
	post := func(hdr map[string]string) *http.Response {
		t.Helper()
		req := mustReq(t, "POST", w.ts.URL+"/login", "name=petra&password="+url.QueryEscape(staffPass))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "null"},
	} {
		if resp := post(hdr); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("login with %v: %d, cookies %v; want 403 and none", hdr, resp.StatusCode, resp.Cookies())
		}
	}
	for _, hdr := range []map[string]string{
		{"Origin": w.ts.URL, "Sec-Fetch-Site": "same-origin"},
		{},
	} {
		if resp := post(hdr); resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) == 0 {
			t.Errorf("login with %v: %d, cookies %v; want 303 and the session cookie", hdr, resp.StatusCode, resp.Cookies())
		}
	}
}

// TestLoginLimited: failed staff logins are counted per client IP by the
// login guard; at its limit even the right password is refused with 429,
// and an unknown name counts like a wrong password.
func TestLoginLimited(t *testing.T) {
	w := newWorld(t) // the login guard allows 3 failures
	for i, body := range []string{
		`{"name":"petra","password":"wrong"}`,
		`{"name":"nobody","password":"wrong"}`,
		`{"name":"petra","password":"wrong again"}`,
	} {
		wantError(t, "failure "+string(rune('1'+i)), w.send(http.DefaultClient, mustReq(t, "POST", w.ts.URL+"/api/v1/login", body)), 401)
	}
	r := w.send(http.DefaultClient, mustReq(t, "POST", w.ts.URL+"/api/v1/login", `{"name":"petra","password":"`+staffPass+`"}`))
	wantError(t, "right password after the limit", r, 429)
	if !strings.Contains(r.body["error"].(string), "127.0.0.1") {
		t.Errorf("429 message %q does not name the IP", r.body["error"])
	}
	// SMTP AUTH's guard counts separately.
	if w.guard.Blocked(mustAddr("127.0.0.1")) {
		t.Error("staff login failures blocked SMTP")
	}
	wantError(t, "empty", w.send(http.DefaultClient, mustReq(t, "POST", w.ts.URL+"/api/v1/login", `{"name":"petra"}`)), 400)
	wantError(t, "not JSON", w.send(http.DefaultClient, mustReq(t, "POST", w.ts.URL+"/api/v1/login", `{name`)), 400)
}

// TestMetricsGate: /metrics is open to metrics_networks and needs a bearer
// token from elsewhere.
func TestMetricsGate(t *testing.T) {
	w := newWorld(t)
	wantError(t, "no token", w.do("GET", "/metrics", "", ""), 401)
	if r := w.do("GET", "/metrics", "", RoleSupport); r.status != 200 || r.raw != "up 1\n" {
		t.Errorf("with a token: %d %q", r.status, r.raw)
	}
	w.change(func(st *Settings) { st.MetricsNetworks = mustPrefixes("127.0.0.0/8") })
	if r := w.do("GET", "/metrics", "", ""); r.status != 200 {
		t.Errorf("from metrics_networks: %d", r.status)
	}
	wantError(t, "unknown path", w.do("GET", "/api/v1/nothing", "", RoleSupport), 404)
	big := `{"target":"` + strings.Repeat("1", maxBody) + `"}`
	wantError(t, "huge body", w.do("POST", "/api/v1/unblock", big, RoleSupport), 413)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestLoginHashesBounded: while every password-check slot is taken, a login
// waits and then gets 503 instead of starting another hash; the place it
// took in the login guard is given back, so it counts as no failure.
func TestLoginHashesBounded(t *testing.T) {
	w := newWorld(t)
	for range cap(w.srv.loginSlots) {
		w.srv.loginSlots <- struct{}{}
	}
	start := time.Now()
	r := w.send(http.DefaultClient, mustReq(t, "POST", w.ts.URL+"/api/v1/login", `{"name":"petra","password":"`+staffPass+`"}`))
	wantError(t, "all slots taken", r, 503)
	if time.Since(start) < loginWait {
		t.Errorf("answered after %s, before the %s wait", time.Since(start), loginWait)
	}
	for range cap(w.srv.loginSlots) {
		<-w.srv.loginSlots
	}
	w.browser("petra")
	if es := w.srv.cfg.LoginGuard.List(); len(es) != 0 {
		t.Errorf("the refused login counted: %+v", es)
	}
}
