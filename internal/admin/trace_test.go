package admin

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"submitd/internal/trace"
)

// doneQID is a message of the world's history that has left the queue.
const doneQID = "0000000000000000000000d1"

// saveHistory records the world's two messages in its delivery history.
func saveHistory(t testing.TB, w *world) {
	t.Helper()
	now := time.Now()
	b := &trace.Batch{
		Messages: []*trace.Message{
			{QueueID: doneQID, Received: now.Add(-2 * time.Hour), SessionID: testSID, ClientIP: blockedIP, Account: testAccount,
				From: testAccount, Subject: "Faktura 42", MessageID: "<done@firma.cz>", Rcpts: []trace.Rcpt{{Addr: "friend@example.org"}}},
			{QueueID: w.qid, Received: now, SessionID: testSID, ClientIP: blockedIP, Account: testAccount,
				From: testAccount, Subject: "hi", MessageID: "<abc.123@firma.cz>", Rcpts: []trace.Rcpt{{Addr: "eva@example.org"}}},
		},
		Events: []trace.Event{
			{QueueID: doneQID, Rcpt: "friend@example.org", Time: now.Add(-2 * time.Hour), Kind: "delivered",
				Host: "mx.example.org [192.0.2.25]", TLS: "TLS 1.3, certificate verified", Reply: "250 2.0.0 OK 1701 gsmtp"},
			{QueueID: w.qid, Rcpt: "eva@example.org", Time: now, Kind: "deferred", Host: "mx.example.org [192.0.2.25]",
				Reply: "451 4.3.0 try later", Next: now.Add(5 * time.Minute)},
		},
	}
	must(t, w.trace.Save(context.Background(), b))
}

// rows returns the "rows" of a trace answer.
func rows(t *testing.T, r reply) []map[string]any {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %v", r.status, r.body)
	}
	var out []map[string]any
	for _, v := range r.body["rows"].([]any) {
		out = append(out, v.(map[string]any))
	}
	return out
}

// TestTraceSearch: a recipient's messages come with their state and the
// remote's last reply; the Subject only for the admin role; the time range
// and the other kinds of terms narrow or widen it.
func TestTraceSearch(t *testing.T) {
	w := newWorld(t)
	got := rows(t, w.do("GET", "/api/v1/trace?q=friend@example.org", "", RoleSupport))
	if len(got) != 1 || got[0]["queue_id"] != doneQID || got[0]["state"] != "delivered" || got[0]["reply"] != "250 2.0.0 OK 1701 gsmtp" ||
		got[0]["session_id"] != testSID || got[0]["subject"] != "" || got[0]["subject_hidden"] != true {
		t.Errorf("support's search: %v", got)
	}
	got = rows(t, w.do("GET", "/api/v1/trace?q=friend@example.org", "", RoleAdmin))
	if len(got) != 1 || got[0]["subject"] != "Faktura 42" {
		t.Errorf("admin's search: %v", got)
	}
	// By sender: both messages, newest first, every recipient.
	got = rows(t, w.do("GET", "/api/v1/trace?q="+testAccount, "", RoleSupport))
	if len(got) != 2 || got[0]["queue_id"] != w.qid || got[0]["state"] != "deferred" || got[1]["queue_id"] != doneQID {
		t.Errorf("by sender: %v", got)
	}
	from := url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	got = rows(t, w.do("GET", "/api/v1/trace?q="+testAccount+"&from="+from, "", RoleSupport))
	if len(got) != 1 || got[0]["queue_id"] != w.qid {
		t.Errorf("from an hour ago: %v", got)
	}
	for _, q := range []string{"<done@firma.cz>", doneQID, testSID, blockedIP} {
		got := rows(t, w.do("GET", "/api/v1/trace?q="+url.QueryEscape(q), "", RoleSupport))
		found := false
		for _, r := range got {
			found = found || r["queue_id"] == doneQID
		}
		if !found {
			t.Errorf("trace %s: %v", q, got)
		}
	}
	wantError(t, "no q", w.do("GET", "/api/v1/trace", "", RoleSupport), 400)
	wantError(t, "bad from", w.do("GET", "/api/v1/trace?q=a@b.cz&from=yesterday", "", RoleSupport), 400)
	// Find lists the messages too.
	r := w.do("GET", "/api/v1/find?q=friend@example.org", "", RoleSupport)
	if ms, _ := r.body["messages"].([]any); len(ms) != 1 {
		t.Errorf("find: %v", r.body)
	}
}

// TestTraceMessage: a message's page has its session, each step and the
// fixes that apply; a delete is recorded with who made it.
func TestTraceMessage(t *testing.T) {
	w := newWorld(t)
	r := w.do("GET", "/api/v1/trace/"+doneQID, "", RoleSupport)
	if r.status != 200 || r.body["session"].(map[string]any)["id"] != testSID || r.body["queued"] != nil ||
		len(r.body["fixes"].([]any)) != 0 || len(r.body["events"].([]any)) != 1 {
		t.Fatalf("delivered message: %d %v", r.status, r.body)
	}
	ev := r.body["events"].([]any)[0].(map[string]any)
	if ev["tls"] != "TLS 1.3, certificate verified" || ev["host"] != "mx.example.org [192.0.2.25]" {
		t.Errorf("attempt: %v", ev)
	}
	r = w.do("GET", "/api/v1/trace/"+w.qid, "", RoleSupport)
	if fx := r.body["fixes"].([]any); len(fx) != 2 || fx[0] != "retry" || fx[1] != "delete" || r.body["queued"] == nil {
		t.Errorf("queued message: %v", r.body)
	}
	wantError(t, "unknown", w.do("GET", "/api/v1/trace/"+unknownQID, "", RoleSupport), 404)
	wantError(t, "bad id", w.do("GET", "/api/v1/trace/nope", "", RoleSupport), 400)

	if r := w.do("POST", "/api/v1/queue/"+w.qid+"/delete", `{"bounce":false}`, RoleSupport); r.status != 200 {
		t.Fatalf("delete: %d %v", r.status, r.body)
	}
	m, err := w.trace.Message(context.Background(), w.qid)
	if err != nil {
		t.Fatal(err)
	}
	last := m.Events[len(m.Events)-1]
	if last.Kind != "deleted" || !strings.Contains(last.Detail, "by petra") || m.Rcpts[0].State != "deleted" {
		t.Errorf("after the delete: %+v", m)
	}
}

// TestTracePages: the search page lists the recipient with its reply and
// links the message page, which links the session.
func TestTracePages(t *testing.T) {
	w := newWorld(t)
	get := func(path string) string { return webGetAs(t, w, path) }
	page := get("/trace?q=friend%40example.org")
	for _, want := range []string{`href="/trace/` + doneQID + `"`, "250 2.0.0 OK 1701 gsmtp", "delivered", "(admins only)"} {
		if !strings.Contains(page, want) {
			t.Errorf("search page lacks %q", want)
		}
	}
	page = get("/trace/" + w.qid)
	for _, want := range []string{`href="/sessions/` + testSID + `"`, "451 4.3.0 try later", `id="fix-retry"`, `id="fix-delete"`} {
		if !strings.Contains(page, want) {
			t.Errorf("message page lacks %q", want)
		}
	}
	if page := get("/sessions/" + testSID); !strings.Contains(page, "Session") {
		t.Errorf("session page: %s", page)
	}
}

// webGetAs fetches a support page with the support role's token.
func webGetAs(t *testing.T, w *world, path string) string {
	t.Helper()
	r := w.do("GET", path, "", RoleSupport)
	if r.status != 200 {
		t.Fatalf("%s: %d\n%s", path, r.status, r.raw)
	}
	return r.raw
}
