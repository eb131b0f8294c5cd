package admin

import (
	"context"
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/directory"
	"submitd/internal/sending"
	"submitd/internal/testutil"
)

// sendingWorld gives w's server a real limiter on w's directory, as a node
// wires it: the configured limits, the overrides read from the directory
// and dropped from its cache by the change feed (synced by the returned
// func), and the windows counted in memory on clock.
func sendingWorld(t *testing.T, w *world, clock *testutil.Clock) (*sending.Limiter, func()) {
	t.Helper()
	acct := sending.Limits{sending.MessagesPerHour: 7}
	dom := sending.Limits{sending.MessagesPerHour: 1000, sending.RecipientsPerHour: 2500}
	w.change(func(st *Settings) { st.SendingAccount, st.SendingDomain = acct, dom })
	l := sending.New(sending.Config{Account: acct, Domain: dom, Overrides: w.dir, Now: clock.Now})
	w.srv.SendingUsage = l.Usage
	feed, err := directory.NewWatcher(context.Background(), w.dir, directory.WatcherConfig{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	feed.Subscribe(l.DirectoryChanged)
	return l, func() {
		t.Helper()
		if err := feed.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// sendThrough sends a message from account with n recipients through the
// limiter, as an SMTP session does at MAIL and RCPT, and fails the test if
// a limit refuses it.
func sendThrough(t *testing.T, l *sending.Limiter, account, domain string, n int) {
	t.Helper()
	tx, hit := l.Begin(account, domain)
	if hit != nil {
		t.Fatalf("MAIL refused: %s", hit.Text())
	}
	for i := range n {
		if hit := tx.Recipient("r" + string(rune('a'+i)) + "@example.org"); hit != nil {
			t.Fatalf("RCPT %d refused: %s", i, hit.Text())
		}
	}
	tx.Accepted()
}

// usageOf is the text of the usage cell with id on page p.
func usageOf(t *testing.T, p webAnswer, id string) string {
	t.Helper()
	m := regexp.MustCompile(`<dd id="` + regexp.QuoteMeta(id) + `">(.*?)</dd>`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("page %s has no %s:\n%s", p.path, id, p.body)
	}
	text := regexp.MustCompile(`<[^>]*>`).ReplaceAllString(m[1], "")
	return strings.Join(strings.Fields(html.UnescapeString(text)), " ")
}

// The account page shows each sending limit's count in its window against
// the account's limit and its domain's, where each limit comes from, and
// when a full window frees a slot; its forms set and clear an override
// after a confirmation step, audited, and the page then shows the new
// limit; a bad value is the API's 400 shown on the page.
func TestWebSendingAccount(t *testing.T) {
	w := newWorld(t)
	clock := testutil.NewClock(time.Date(2026, 3, 2, 13, 7, 30, 0, time.UTC))
	l, sync := sendingWorld(t, w, clock)
	// The world's account has overrides of 50 recipients per hour and 9
	// per day: fill the day's and the configured 7 messages per hour.
	sendThrough(t, l, testAccount, "firma.cz", 3)
	clock.Advance(10 * time.Minute)
	for range 6 {
		sendThrough(t, l, testAccount, "firma.cz", 1)
	}
	if tx, hit := l.Begin(testAccount, "firma.cz"); hit == nil {
		tx.Abandon()
		t.Fatal("an eighth message was not refused")
	}

	b := w.webClient()
	b.login("petra")
	path := "/accounts/" + testAccount
	p := b.get(path)
	checkLabels(t, path, p.body)
	for id, want := range map[string]string{
		"used-messages_per_hour":             "7 of 7 (config) Full until 2026-03-02 14:07:00 UTC: the window frees a slot then",
		"used-domain-messages_per_hour":      "7 of 1000 (config)",
		"used-recipients_per_hour":           "9 of 50 (override)",
		"used-domain-recipients_per_hour":    "9 of 2500 (config)",
		"used-recipients_per_day":            "9 of 9 (override) Full until 2026-03-03 13:07:00 UTC: the window frees a slot then",
		"used-domain-recipients_per_day":     "no limit (config)",
		"used-new_recipients_per_day":        "no limit (config)",
		"used-domain-new_recipients_per_day": "no limit (config)",
	} {
		if got := usageOf(t, p, id); got != want {
			t.Errorf("%s: %q, want %q", id, got, want)
		}
	}
	// The API tells the same, with the minute a full window frees.
	r := w.do("GET", "/api/v1/sending/"+testAccount, "", RoleSupport)
	if got := fmt.Sprint(r.body["limits"].(map[string]any)["messages_per_hour"]); got != "map[frees:2026-03-02T14:07:00Z limit:7 source:config used:7]" {
		t.Errorf("API messages_per_hour: %s", got)
	}
	contains(t, p, `id="clear-recipients_per_hour"`, `id="clear-recipients_per_day"`, `href="/domains/firma.cz"`)
	if strings.Contains(p.body, `id="clear-messages_per_hour"`) {
		t.Error("a clear button for a limit without an override")
	}

	form := url.Values{"csrf_token": {csrf(t, p)}, "back": {path}, "limit": {"messages_per_hour"}, "value": {"20"}}
	p = b.post(path+"/sending", form)
	contains(t, p, "Set messages_per_hour of "+testAccount+" to 20 (0 is no limit)?", `name="confirmed" value="yes"`)
	if o, _ := w.dir.SendingLimits(context.Background(), testAccount); o["messages_per_hour"] != 0 {
		t.Fatalf("the confirmation step set the override: %v", o)
	}
	form.Set("confirmed", "yes")
	p = b.post(path+"/sending", form)
	if p.path != path {
		t.Fatalf("after set: at %s", p.path)
	}
	contains(t, p, "set messages_per_hour=20 of "+testAccount)
	if e := w.lastAudit(); e == nil || e.Action != "sending.set" || e.Target != "account:"+testAccount || e.Actor != "petra" {
		t.Fatalf("audit entry %+v, want sending.set of account:%s by petra", e, testAccount)
	}
	// The page shows the new limit at once, not full any more, before the
	// change feed has reached the limiter's cache...
	p = b.get(path)
	if got := usageOf(t, p, "used-messages_per_hour"); got != "7 of 20 (override)" {
		t.Errorf("after set: %q, want 7 of 20 (override)", got)
	}
	// ...and once it has, the eighth message is accepted.
	sync()
	sendThrough(t, l, testAccount, "firma.cz", 0)

	// A clear goes back to the configured limit.
	form = url.Values{"csrf_token": {csrf(t, p)}, "back": {path}, "limit": {"recipients_per_day"}}
	p = b.post(path+"/sending/clear", form)
	contains(t, p, "Clear the recipients_per_day override of "+testAccount+", so the configured limit applies?")
	form.Set("confirmed", "yes")
	p = b.post(path+"/sending/clear", form)
	contains(t, p, "cleared recipients_per_day of "+testAccount+"; the configured limits apply")
	if e := w.lastAudit(); e == nil || e.Action != "sending.clear" || e.Target != "account:"+testAccount {
		t.Fatalf("audit entry %+v, want sending.clear", e)
	}
	sync()
	p = b.get(path)
	if got := usageOf(t, p, "used-recipients_per_day"); got != "no limit (config)" {
		t.Errorf("after clear: %q", got)
	}
	if strings.Contains(p.body, `id="clear-recipients_per_day"`) {
		t.Error("a clear button after the override was cleared")
	}

	// A window without a limit is not counted, so no count is shown.
	if strings.Contains(usageOf(t, p, "used-new_recipients_per_day"), "of") {
		t.Error("a count shown for a limit that is off")
	}

	// Bad values are the API's 400, shown on the page; nothing changes.
	before, _ := w.dir.SendingLimits(context.Background(), testAccount)
	for _, bad := range []url.Values{
		{"limit": {"messages_per_hour"}, "value": {"-1"}},
		{"limit": {"messages_per_hour"}, "value": {"1e3"}},
		{"limit": {"messages_per_hour"}, "value": {"100000000000"}},
		{"limit": {"messages_per_minute"}, "value": {"5"}},
		{"limit": {"csrf_token"}, "value": {"5"}},
	} {
		bad.Set("csrf_token", csrf(t, p))
		bad.Set("back", path)
		bad.Set("confirmed", "yes")
		p = b.post(path+"/sending", bad)
		if p.path != path {
			t.Fatalf("%v: at %s", bad, p.path)
		}
		contains(t, p, `class="flash error"`)
	}
	contains(t, b.post(path+"/sending/clear", url.Values{"csrf_token": {csrf(t, p)}, "back": {path}, "limit": {""}, "confirmed": {"yes"}}),
		`class="flash error"`, "unknown sending limit")
	if after, _ := w.dir.SendingLimits(context.Background(), testAccount); len(after) != len(before) || after["messages_per_hour"] != 20 {
		t.Fatalf("bad values changed the overrides: %v, then %v", before, after)
	}
	p = b.post(path+"/sending", url.Values{"csrf_token": {csrf(t, p)}, "back": {path}, "limit": {"messages_per_hour"}, "value": {"x"}, "confirmed": {"yes"}})
	contains(t, p, `messages_per_hour="x": must be a whole number from 0 (no limit) to`)
}

// The domain page shows the domain's limits against the count of all its
// accounts, and sets and clears the domain's override; a wrong CSRF token
// is refused and changes nothing; support may change limits, as in the API.
func TestWebSendingDomain(t *testing.T) {
	w := newWorld(t)
	clock := testutil.NewClock(time.Date(2026, 3, 2, 13, 7, 30, 0, time.UTC))
	l, sync := sendingWorld(t, w, clock)
	must(t, w.dir.AddAccount(context.Background(), "eva@firma.cz", "x"))
	sendThrough(t, l, testAccount, "firma.cz", 2)
	sendThrough(t, l, "eva@firma.cz", "firma.cz", 3)

	b := w.webClient()
	b.login("petra")
	path := "/domains/firma.cz"
	p := b.get(path)
	checkLabels(t, path, p.body)
	if got := usageOf(t, p, "used-recipients_per_hour"); got != "5 of 2500 (config)" {
		t.Errorf("domain recipients per hour: %q", got)
	}
	if got := usageOf(t, p, "used-messages_per_hour"); got != "2 of 1000 (config)" {
		t.Errorf("domain messages per hour: %q", got)
	}
	if strings.Contains(p.body, "used-domain-") {
		t.Error("the domain page shows a domain's domain")
	}

	p = b.post(path+"/sending", url.Values{"csrf_token": {strings.Repeat("0", 64)}, "back": {path},
		"limit": {"recipients_per_hour"}, "value": {"4"}, "confirmed": {"yes"}})
	if p.status != http.StatusForbidden {
		t.Fatalf("wrong CSRF token: %d, want 403", p.status)
	}
	if o, _ := w.dir.SendingLimits(context.Background(), "firma.cz"); len(o) != 0 {
		t.Fatalf("set without a CSRF token: %v", o)
	}
	// A browser not logged in is sent to the login page.
	p = w.webClient().post(path+"/sending", url.Values{"csrf_token": {csrf(t, b.get(path))}, "back": {path},
		"limit": {"recipients_per_hour"}, "value": {"4"}, "confirmed": {"yes"}})
	if !strings.HasPrefix(p.path, "/login") {
		t.Fatalf("not logged in: at %s, want the login page", p.path)
	}
	if o, _ := w.dir.SendingLimits(context.Background(), "firma.cz"); len(o) != 0 {
		t.Fatalf("set without a login: %v", o)
	}
	p = b.get(path)
	p = b.post(path+"/sending", url.Values{"csrf_token": {csrf(t, p)}, "back": {path},
		"limit": {"recipients_per_hour"}, "value": {"6"}, "confirmed": {"yes"}})
	contains(t, p, "set recipients_per_hour=6 of firma.cz")
	if e := w.lastAudit(); e == nil || e.Action != "sending.set" || e.Target != "domain:firma.cz" {
		t.Fatalf("audit entry %+v", e)
	}
	sync()
	// The domain's 6 recipients per hour, summed over its accounts: one
	// more fits, then the window is full.
	sendThrough(t, l, "eva@firma.cz", "firma.cz", 1)
	p = b.get(path)
	if got := usageOf(t, p, "used-recipients_per_hour"); got != "6 of 6 (override) Full until 2026-03-02 14:07:00 UTC: the window frees a slot then" {
		t.Errorf("full domain: %q", got)
	}
	p = b.get("/accounts/" + testAccount)
	if got := usageOf(t, p, "used-domain-recipients_per_hour"); !strings.HasPrefix(got, "6 of 6 (override) Full until") {
		t.Errorf("account page, its full domain: %q", got)
	}
	p = b.get(path)
	p = b.post(path+"/sending/clear", url.Values{"csrf_token": {csrf(t, p)}, "back": {path},
		"limit": {"recipients_per_hour"}, "confirmed": {"yes"}})
	contains(t, p, "cleared recipients_per_hour of firma.cz")
	if o, _ := w.dir.SendingLimits(context.Background(), "firma.cz"); len(o) != 0 {
		t.Fatalf("after clear: %v", o)
	}
	// A domain that is not hosted is the API's 404.
	p = b.post("/domains/jina.cz/sending", url.Values{"csrf_token": {csrf(t, p)}, "back": {path},
		"limit": {"recipients_per_hour"}, "value": {"6"}, "confirmed": {"yes"}})
	contains(t, p, `class="flash error"`, "jina.cz: not a hosted domain")
}
