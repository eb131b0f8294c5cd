package admin

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/dkim"
	"submitd/internal/testutil"
)

// webAnswer is a page the server answered.
type webAnswer struct {
	status int
	// path is where the browser ended up after redirects.
	path string
	body string
}

// webClient is a browser: a cookie jar, redirects followed.
type webClient struct {
	w *world
	c *http.Client
}

func (w *world) webClient() *webClient {
	jar, _ := cookiejar.New(nil)
	return &webClient{w: w, c: &http.Client{Jar: jar}}
}

func (b *webClient) answer(resp *http.Response, err error) webAnswer {
	b.w.t.Helper()
	if err != nil {
		b.w.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return webAnswer{status: resp.StatusCode, path: resp.Request.URL.RequestURI(), body: string(body)}
}

func (b *webClient) get(path string) webAnswer {
	b.w.t.Helper()
	return b.answer(b.c.Get(b.w.ts.URL + path))
}

func (b *webClient) post(path string, form url.Values) webAnswer {
	b.w.t.Helper()
	return b.answer(b.c.PostForm(b.w.ts.URL+path, form))
}

// login logs name in through the login page.
func (b *webClient) login(name string) {
	b.w.t.Helper()
	p := b.post("/login", url.Values{"name": {name}, "password": {staffPass}, "next": {"/blocked"}})
	if p.status != 200 || p.path != "/blocked" {
		b.w.t.Fatalf("login %s: %d at %s\n%s", name, p.status, p.path, p.body)
	}
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([0-9a-f]{64})"`)

// csrf is the token in a page's forms.
func csrf(t *testing.T, p webAnswer) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token in page %s:\n%s", p.path, p.body)
	}
	return m[1]
}

func contains(t *testing.T, p webAnswer, want ...string) {
	t.Helper()
	text := html.UnescapeString(p.body)
	for _, w := range want {
		if !strings.Contains(p.body, w) && !strings.Contains(text, w) {
			t.Errorf("page %s (%d) lacks %q:\n%s", p.path, p.status, w, p.body)
		}
	}
}

// A browser that is not logged in lands on the login page, and after
// logging in on the page it asked for; a wrong password is told on the
// login page.
func TestWebLogin(t *testing.T) {
	w := newWorld(t)
	b := w.webClient()
	p := b.get("/sessions/" + testSID)
	if p.path != "/login?next=%2Fsessions%2F"+testSID {
		t.Fatalf("not logged in: ended at %s, want the login page", p.path)
	}
	p = b.post("/login", url.Values{"name": {"petra"}, "password": {"wrong"}, "next": {"/sessions/" + testSID}})
	if p.status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d, want 401", p.status)
	}
	contains(t, p, "wrong name or password", `for="password"`)
	p = b.post("/login", url.Values{"name": {"petra"}, "password": {staffPass}, "next": {"/sessions/" + testSID}})
	if p.status != 200 || p.path != "/sessions/"+testSID {
		t.Fatalf("login: %d at %s", p.status, p.path)
	}
	// A next pointing at another site is not followed.
	p = b.post("/login", url.Values{"name": {"petra"}, "password": {staffPass}, "next": {"//evil.example/"}})
	if p.path != "/find" {
		t.Fatalf("next=//evil.example/: ended at %s, want /find", p.path)
	}
	p = b.post("/logout", url.Values{"csrf_token": {csrf(t, p)}})
	if !strings.HasPrefix(p.path, "/login") {
		t.Fatalf("logout: ended at %s", p.path)
	}
	if p = b.get("/find"); !strings.HasPrefix(p.path, "/login") {
		t.Fatalf("after logout /find answered at %s", p.path)
	}
	// The login page counts failures in the API login's guard: past its
	// limit (3 in this world, one spent above) even the right password is
	// refused.
	for range 2 {
		b.post("/login", url.Values{"name": {"petra"}, "password": {"wrong"}})
	}
	p = b.post("/login", url.Values{"name": {"petra"}, "password": {staffPass}})
	if p.status != http.StatusTooManyRequests {
		t.Fatalf("login past the limit: %d, want 429", p.status)
	}
	contains(t, p, "too many failed logins from 127.0.0.1")
	if r := w.do("GET", "/static/style.css", "", ""); r.status != 200 || !strings.Contains(r.raw, "font") {
		t.Fatalf("style sheet: %d", r.status)
	}
	if r := w.do("GET", "/static/", "", ""); r.status != http.StatusNotFound {
		t.Fatalf("/static/ answered %d, want 404", r.status)
	}
}

// The Outlook line of the seed lands on the session page, which names the
// cause and offers the fixes; an IP lists its matches.
func TestWebFind(t *testing.T) {
	w := newWorld(t)
	b := w.webClient()
	b.login("petra")
	outlook := "Server response: 550 5.1.0 " + testSID + " authentication failed"
	p := b.get("/find?q=" + url.QueryEscape(outlook))
	if p.status != 200 || p.path != "/sessions/"+testSID {
		t.Fatalf("find %q: %d at %s", outlook, p.status, p.path)
	}
	contains(t, p, "wrong password for "+testAccount, "535 5.1.0 "+testSID+" authentication failed",
		`id="fix-password"`, `id="fix-unblock"`, `value="`+blockedIP+`"`)
	p = b.get("/find?q=" + url.QueryEscape("Connection refused from 203.0.113.9. Too many"))
	if p.path != "/find?q=Connection+refused+from+203.0.113.9.+Too+many" {
		t.Fatalf("find by IP ended at %s, want the list", p.path)
	}
	contains(t, p, `href="/sessions/`+testSID+`"`, "203.0.113.9</a>: 1 failures, blocked until")
	p = b.get("/find?q=" + testAccount)
	if p.path != "/find?q=jan@firma.cz" {
		t.Fatalf("find by address ended at %s", p.path)
	}
	contains(t, p, `href="/accounts/jan@firma.cz"`, `href="/queue/`+w.qid+`"`)
	p = b.get("/find?q=" + strings.Repeat("x", maxFindText+1))
	if p.status != http.StatusBadRequest {
		t.Fatalf("overlong find: %d, want 400", p.status)
	}
	contains(t, p, "longer than 4096 bytes")
}

// Unblock from the Blocked IPs page: the first press shows the
// confirmation step and changes nothing; the confirmation lifts the block,
// writes the audit entry, and shows the outcome on the page it came from.
func TestWebUnblockConfirm(t *testing.T) {
	w := newWorld(t)
	b := w.webClient()
	b.login("petra")
	p := b.get("/blocked")
	contains(t, p, blockedIP, `href="/sessions/`+testSID+`"`)
	tok := csrf(t, p)
	form := url.Values{"csrf_token": {tok}, "back": {"/blocked"}, "target": {blockedIP}}
	p = b.post("/blocked/unblock", form)
	contains(t, p, "Unblock "+blockedIP+" and clear its failures?", `name="confirmed" value="yes"`)
	if !w.guard.Blocked(netip.MustParseAddr(blockedIP)) {
		t.Fatal("the confirmation step lifted the block")
	}
	form.Set("confirmed", "yes")
	p = b.post("/blocked/unblock", form)
	if p.path != "/blocked" {
		t.Fatalf("after unblock: at %s", p.path)
	}
	contains(t, p, "unblocked "+blockedIP, "Nothing blocked.")
	if w.guard.Blocked(netip.MustParseAddr(blockedIP)) {
		t.Fatal("still blocked")
	}
	if e := w.lastAudit(); e == nil || e.Action != "guard.unblock" || e.Actor != "petra" {
		t.Fatalf("audit entry %+v, want guard.unblock by petra", e)
	}
	// Again: the API's 404 is shown on the page, not as JSON.
	p = b.post("/blocked/unblock", form)
	contains(t, p, `class="flash error"`, blockedIP+": not blocked, no failures counted")
}

// A change without the right CSRF token, or by a role that may not make it,
// is refused on a page with its status and changes nothing; support does
// not see the admin's forms.
func TestWebRefusals(t *testing.T) {
	w := newWorld(t)
	b := w.webClient()
	b.login("petra")
	p := b.post("/accounts/"+testAccount+"/smtp_access", url.Values{"csrf_token": {strings.Repeat("0", 64)}, "enabled": {"false"}, "confirmed": {"yes"}})
	if p.status != http.StatusForbidden {
		t.Fatalf("wrong CSRF token: %d, want 403", p.status)
	}
	contains(t, p, "missing or wrong CSRF token")
	a, _ := w.dir.Account(context.Background(), testAccount)
	if !a.SMTPAccess {
		t.Fatal("SMTP access changed without a CSRF token")
	}
	p = b.get("/domains/firma.cz")
	if strings.Contains(p.body, "Add alias") || strings.Contains(p.body, "Make a new key") {
		t.Error("support sees the admin's domain forms")
	}
	p = b.post("/domains/firma.cz/aliases", url.Values{"csrf_token": {csrf(t, p)}, "alias": {"firma.eu"}, "confirmed": {"yes"}})
	if p.status != http.StatusForbidden {
		t.Fatalf("support adding an alias: %d, want 403", p.status)
	}
	contains(t, p, "petra may not do this: it needs the admin role")
	// The back field cannot send the browser away.
	p = b.get("/accounts/" + testAccount)
	p = b.post("/accounts/"+testAccount+"/smtp_access", url.Values{"csrf_token": {csrf(t, p)}, "enabled": {"false"},
		"confirmed": {"yes"}, "back": {"https://evil.example/"}})
	if p.path != "/find" {
		t.Fatalf("back=https://evil.example/: ended at %s", p.path)
	}
	for _, id := range []string{unknownSID, "bad"} {
		p = b.get("/sessions/" + id)
		if p.status != http.StatusNotFound && p.status != http.StatusBadRequest {
			t.Fatalf("session %s: %d", id, p.status)
		}
		contains(t, p, `class="flash error"`)
	}
}

// The account page switches SMTP access off and on, sets a password only
// when it is typed twice the same, and adds and removes identities; each
// change is audited.
func TestWebAccount(t *testing.T) {
	w := newWorld(t)
	b := w.webClient()
	b.login("petra")
	path := "/accounts/" + testAccount
	p := b.get(path)
	contains(t, p, `id="smtp-off"`, "jan@seznam.cz", `href="/sessions/`+testSID+`"`, blockedIP)
	tok := csrf(t, p)
	change := func(action string, form url.Values, audit string) webAnswer {
		t.Helper()
		form.Set("csrf_token", tok)
		form.Set("back", path)
		form.Set("confirmed", "yes")
		p := b.post(path+action, form)
		if p.path != path {
			t.Fatalf("%s: at %s", action, p.path)
		}
		if audit != "" {
			if e := w.lastAudit(); e == nil || e.Action != audit {
				t.Fatalf("%s: audit entry %+v, want %s", action, e, audit)
			}
		}
		return p
	}
	p = change("/smtp_access", url.Values{"enabled": {"false"}}, "account.disable")
	contains(t, p, "disabled SMTP access of "+testAccount, `id="smtp-on"`)
	p = change("/password", url.Values{"password": {"nové heslo"}, "password_again": {"nove heslo"}}, "account.disable")
	contains(t, p, "the two passwords differ")
	p = change("/password", url.Values{"password": {"nové heslo"}, "password_again": {"nové heslo"}}, "account.passwd")
	contains(t, p, "changed password of "+testAccount)
	if strings.Contains(p.body, "nové heslo") {
		t.Fatal("the page shows the password")
	}
	p = change("/identities", url.Values{"identity": {"jan@example.net"}}, "account.identity.add")
	contains(t, p, "added identity jan@example.net")
	p = change("/identities/jan@example.net/remove", url.Values{}, "account.identity.remove")
	contains(t, p, "removed identity jan@example.net")
}

// Retry and delete from the queue pages go through the queue and the
// audit log; the delete leads back to the list.
func TestWebQueue(t *testing.T) {
	w := newWorld(t)
	b := w.webClient()
	b.login("petra")
	p := b.get("/queue?state=pending")
	contains(t, p, `href="/queue/`+w.qid+`"`, "example.org (pending)")
	if p = b.get("/queue?state=deferred"); strings.Contains(p.body, w.qid) {
		t.Error("the deferred filter lists a pending message")
	}
	p = b.get("/queue/" + w.qid)
	contains(t, p, "eva@example.org", "Message-ID: &lt;abc.123@firma.cz&gt;", `id="retry"`)
	tok := csrf(t, p)
	p = b.post("/queue/"+w.qid+"/retry", url.Values{"csrf_token": {tok}, "back": {"/queue/" + w.qid}})
	contains(t, p, "Try to deliver "+w.qid+" now?")
	p = b.post("/queue/"+w.qid+"/retry", url.Values{"csrf_token": {tok}, "back": {"/queue/" + w.qid}, "confirmed": {"yes"}})
	if e := w.lastAudit(); e == nil || e.Action != "queue.retry" {
		t.Fatalf("audit entry %+v, want queue.retry", e)
	}
	p = b.post("/queue/"+w.qid+"/delete", url.Values{"csrf_token": {tok}, "back": {"/queue"}, "confirmed": {"yes"}})
	if p.path != "/queue" {
		t.Fatalf("after delete: at %s", p.path)
	}
	contains(t, p, "Nothing queued.")
	if p = b.get("/audit?action=queue.delete"); !strings.Contains(p.body, "queue:"+w.qid) {
		t.Errorf("audit page lacks the delete:\n%s", p.body)
	}
}

// Every page renders for both roles, labels its inputs, and answers with
// headers that keep it out of caches and frames.
func TestWebPagesRender(t *testing.T) {
	w := newWorld(t)
	withLogins(t, w)
	for _, name := range []string{"petra", "adam"} {
		b := w.webClient()
		b.login(name)
		for _, path := range []string{"/find", "/sessions/" + testSID, "/blocked", "/blocked?all=true", "/accounts", "/accounts?q=jan",
			"/accounts/" + testAccount, "/domains", "/domains/firma.cz", "/queue", "/queue/" + w.qid, "/audit", "/audit?limit=1",
			"/logins", "/logins?all=true"} {
			resp, err := b.c.Get(w.ts.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s as %s: %d\n%s", path, name, resp.StatusCode, body)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("%s: CSP %q", path, csp)
			}
			checkLabels(t, path, string(body))
		}
	}
}

var (
	inputID  = regexp.MustCompile(`<(?:input|select)\b[^>]*>`)
	idAttr   = regexp.MustCompile(`\bid="([^"]+)"`)
	typeAttr = regexp.MustCompile(`\btype="(hidden|submit|checkbox)"`)
)

// checkLabels checks that every visible form control has a label.
func checkLabels(t *testing.T, path, body string) {
	t.Helper()
	for _, tag := range inputID.FindAllString(body, -1) {
		if m := typeAttr.FindStringSubmatch(tag); m != nil && m[1] != "checkbox" {
			continue
		}
		id := idAttr.FindStringSubmatch(tag)
		if id == nil || !strings.Contains(body, `for="`+id[1]+`"`) {
			t.Errorf("%s: control without a label: %s", path, tag)
		}
	}
}

// The domain page and the API's domain detail say whether the DKIM record
// in DNS carries the stored key: matches, differs (both shown), missing, or
// lookup failed.
func TestDKIMDNSCheck(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	k, err := w.srv.cfg.DKIM.Get(ctx, "firma.com")
	if err != nil {
		t.Fatal(err)
	}
	own, err := dkim.Generate("firma.cz", "s2", dkim.RSA)
	if err != nil {
		t.Fatal(err)
	}
	must(t, w.srv.cfg.DKIM.Put(ctx, own, false))
	dns := testutil.NewDNSServer(t)
	w.change(func(st *Settings) { st.DNS = &delivery.Resolver{Addr: dns.Addr, Timeout: time.Second} })

	// firma.cz's RSA record, split in strings as DNS hosts publish it.
	dns.AddTXT(own.RecordName(), dkim.SplitTXT(own.TXTValue())...)
	other, _ := dkim.Generate("firma.com", "s1", dkim.Ed25519)
	dns.AddTXT(k.RecordName(), other.TXTValue())

	r := w.do("GET", "/api/v1/domains/firma.cz", "", RoleSupport)
	dnsOf := func(v any) map[string]any {
		m, _ := v.(map[string]any)
		d, _ := m["dns"].(map[string]any)
		return d
	}
	if got := dnsOf(r.body["dkim"]); got["status"] != DKIMMatches {
		t.Fatalf("firma.cz: %v, want matches\n%s", got, r.raw)
	}
	alias := dnsOf(r.body["alias_dkim"].([]any)[0])
	if alias["status"] != DKIMDiffers || alias["expected"] != k.TXTValue() || alias["published"].([]any)[0] != other.TXTValue() {
		t.Fatalf("firma.com: %v, want differs with both values", alias)
	}
	b := w.webClient()
	b.login("petra")
	p := b.get("/domains/firma.cz")
	contains(t, p, "<strong>matches</strong>", "<strong>differs</strong>", other.TXTValue(), k.TXTValue())

	dns.Remove(own.RecordName())
	dns.SetRcode(k.RecordName(), 2) // SERVFAIL
	r = w.do("GET", "/api/v1/domains/firma.cz", "", RoleSupport)
	if got := dnsOf(r.body["dkim"]); got["status"] != DKIMMissing {
		t.Fatalf("firma.cz without a record: %v, want missing", got)
	}
	if got := dnsOf(r.body["alias_dkim"].([]any)[0]); got["status"] != DKIMLookupFailed || !strings.Contains(got["message"].(string), "SERVFAIL") {
		t.Fatalf("firma.com on SERVFAIL: %v, want lookup failed", got)
	}
}

// SameDKIMKey compares the key, not the spelling of the record.
func TestSameDKIMKey(t *testing.T) {
	want := "v=DKIM1; k=ed25519; p=AbC="
	for _, c := range []struct {
		published string
		same      bool
	}{
		{"v=DKIM1; k=ed25519; p=AbC=", true},
		{"v=DKIM1;k=ed25519;p=A bC=;t=y;", true},
		{"k=ed25519; p=AbC=", true},
		{"v=DKIM1; p=AbC=", false}, // k defaults to rsa
		{"v=DKIM1; k=ed25519; p=AbD=", false},
		{"v=DKIM2; k=ed25519; p=AbC=", false},
		{"v=DKIM1; k=ed25519; p=", false}, // a revoked key
		{"v=DKIM1; k=ed25519; p=AbC=; p=AbC=", false},
		{"v=spf1 -all", false},
		{"", false},
	} {
		if got := SameDKIMKey(c.published, want); got != c.same {
			t.Errorf("SameDKIMKey(%q) = %v, want %v", c.published, got, c.same)
		}
	}
}

func FuzzParseTags(f *testing.F) {
	f.Add("v=DKIM1; k=ed25519; p=AbC=")
	f.Add("v=DKIM1;k=rsa;p=MIIB IjAN; t=y:s;")
	f.Add(";;=;")
	f.Fuzz(func(t *testing.T, s string) {
		tags := ParseTags(s)
		if tags == nil {
			return
		}
		for k, v := range tags {
			if k == "" || strings.ContainsAny(k, ";=") || strings.ContainsAny(v, "; \t\r\n") {
				t.Fatalf("ParseTags(%q): tag %q=%q", s, k, v)
			}
		}
		v, hasV := tags["v"]
		if tags["p"] != "" && (!hasV || v == "DKIM1") && !SameDKIMKey(s, s) {
			t.Fatalf("a record is not the same key as itself: %q", s)
		}
	})
}

// BenchmarkWebSessionPage measures the session page, the one support opens
// most, beside the API's answer for the same session.
func BenchmarkWebSessionPage(b *testing.B) {
	for _, kind := range []string{"api", "page"} {
		b.Run(kind, func(b *testing.B) {
			w := newWorld(b)
			c := w.webClient()
			c.login("petra")
			path := "/sessions/" + testSID
			if kind == "api" {
				path = "/api/v1/sessions/" + testSID
			}
			b.ResetTimer()
			for b.Loop() {
				resp, err := c.c.Get(w.ts.URL + path)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %d", path, resp.StatusCode)
				}
			}
		})
	}
}

// A login under attack is listed on its page and cleared from it, the
// same as through the API, audited; without a running server's watch the
// page says why it cannot answer.
func TestWebLogins(t *testing.T) {
	w := newWorld(t)
	b := w.webClient()
	b.login("petra")
	p := b.get("/logins")
	if p.status != http.StatusServiceUnavailable {
		t.Fatalf("no watch: %d, want 503", p.status)
	}
	contains(t, p, "no server runs here")
	lw, _ := withLogins(t, w)
	p = b.get("/logins")
	contains(t, p, `href="/accounts/`+testAccount+`"`, "2026-03-02 13:00:00 UTC", `action="/logins/`+testAccount+`/clear"`)
	p = b.post("/logins/"+testAccount+"/clear", url.Values{"csrf_token": {csrf(t, p)}, "back": {"/logins"}, "confirmed": {"yes"}})
	contains(t, p, "cleared jan@firma.cz: under attack since 2026-03-02T13:00:00Z", "None.")
	if _, ok := lw.Get(testAccount); ok {
		t.Fatal("still held after Clear")
	}
	if e := w.lastAudit(); e == nil || e.Action != "logins.clear" || e.Actor != "petra" {
		t.Fatalf("audit entry %+v", e)
	}
}
