package admin

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestFindRefusedAsSpam: the line a customer pastes after rspamd refused a
// message finds the session, whose outcome says "refused as spam" and
// whose cause carries the verdict: action, score / required score and top
// symbols (SPEC R22). The session page shows the same.
func TestFindRefusedAsSpam(t *testing.T) {
	w := newWorld(t)
	const sid = "SpamSess0000000000000a"
	verdict := "reject score 15.00/15.00: GTUBE 0.00, MISSING_MID 2.50 (Gtube pattern)"
	saveSession(t, w.sessions, sid, "192.0.2.30", testAccount, time.Now().Add(-time.Minute),
		[3]string{"auth", testAccount, "235 2.7.0 authentication successful"},
		[3]string{"mail", testAccount, "250 2.1.0 <jan@firma.cz> sender OK"},
		[3]string{"rcpt", "eva@example.org", "250 2.1.5 <eva@example.org> recipient OK"},
		[3]string{"scan", "33nch6rqk35abfqqhoaor30d: " + verdict, ""},
		[3]string{"data", "", "550 5.7.1 " + sid + " message refused as spam: Gtube pattern"})
	line := "The message could not be sent because one of the recipients was rejected by the server. The rejected e-mail address was 'eva@example.org'. Server Response: 550 5.7.1 " + sid + " message refused as spam: Gtube pattern"
	r := w.do("GET", "/api/v1/find?q="+url.QueryEscape(line), "", RoleSupport)
	ss, _ := r.body["sessions"].([]any)
	if r.status != 200 || len(ss) == 0 || ss[0].(map[string]any)["id"] != sid || ss[0].(map[string]any)["outcome"] != "refused as spam" {
		t.Fatalf("find: %d %s", r.status, r.raw)
	}
	r = w.do("GET", "/api/v1/sessions/"+sid, "", RoleSupport)
	cause, _ := r.body["cause"].(string)
	if !strings.Contains(cause, "refused the message as spam") || !strings.Contains(cause, verdict) {
		t.Errorf("cause %q", cause)
	}
	b := w.webClient()
	b.login("petra")
	p := b.get("/sessions/" + sid)
	contains(t, p, "refused as spam", "GTUBE 0.00, MISSING_MID 2.50")
}

// TestWebQueuedScan: a queued message's page shows the verdict recorded in
// its session (SPEC R22: a flagged message is sent, and support sees why
// it was flagged).
func TestWebQueuedScan(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	rec, err := w.sessions.Get(ctx, testSID)
	if err != nil {
		t.Fatal(err)
	}
	rec.Add("scan", w.qid+": add header score 6.00/15.00: GTUBE 0.00 (Gtube pattern)", "")
	must(t, w.sessions.Save(ctx, rec))
	b := w.webClient()
	b.login("petra")
	p := b.get("/queue/" + w.qid)
	contains(t, p, `<dd id="scan">add header score 6.00/15.00: GTUBE 0.00 (Gtube pattern)</dd>`)
	r := w.do("GET", "/api/v1/queue/"+w.qid, "", RoleSupport)
	if r.body["scan"] != "add header score 6.00/15.00: GTUBE 0.00 (Gtube pattern)" {
		t.Errorf("API: %s", r.raw)
	}
}
