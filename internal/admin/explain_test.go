package admin

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"submitd/internal/guard"
	"submitd/internal/sessionlog"
	"submitd/internal/testutil"
)

// saveSession records a session from ip at start with events of kind,
// detail and reply, each a second apart.
func saveSession(t *testing.T, st *sessionlog.SQLite, id, ip, account string, start time.Time, events ...[3]string) *sessionlog.Record {
	t.Helper()
	r := &sessionlog.Record{ID: id, Start: start, ClientIP: ip, Account: account, Listener: "submission"}
	r.Add("connect", ip+" port 40000", "")
	for _, e := range events {
		r.Add(e[0], e[1], e[2])
	}
	for i := range r.Events {
		r.Events[i].Time = start.Add(time.Duration(i) * time.Second)
	}
	r.End = start.Add(time.Duration(len(r.Events)) * time.Second)
	if err := st.Save(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestExplain: the cause of each kind of failure in plain words, from the
// session record, the directory and the guard (SPEC R4, R6, R9, R11, R13).
func TestExplain(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	must(t, w.dir.AddAccount(ctx, "jan.novak@firma.cz", "{BLF-CRYPT}x"))
	must(t, w.dir.AddAccount(ctx, "off@firma.cz", "{BLF-CRYPT}x"))
	must(t, w.dir.SetSMTPAccess(ctx, "off@firma.cz", false))
	must(t, w.dir.AddDomain(ctx, "jiny.cz"))
	x := w.srv.explainer
	now := time.Now().Add(-30 * time.Minute)
	sid := func(i int) string { return fmt.Sprintf("Expl%018d", i) }
	wrong := func(login string) [3]string { return [3]string{"auth", login, "535 5.1.0 SID authentication failed"} }
	for i := range 6 {
		saveSession(t, w.sessions, sid(i), "192.0.2.9", "", now.Add(time.Duration(i)*time.Minute), wrong("jan.novak@firma.cz"))
	}
	seventh := saveSession(t, w.sessions, sid(6), "192.0.2.9", "", now.Add(10*time.Minute), wrong("jan.novak@firma.cz"))

	ok := [3]string{"auth", testAccount, "235 2.7.0 Authentication succeeded"}
	rejected := func(addr string) [3]string {
		return [3]string{"mail", addr, "550 5.1.0 SID <" + addr + "> sender rejected"}
	}
	cases := []struct {
		name  string
		rec   *sessionlog.Record
		cause string
		fixes []string
	}{
		{"7th wrong password", seventh,
			"wrong password for jan.novak@firma.cz: 7th failure from 192.0.2.9 this hour; at 10 this IP is blocked for an hour", []string{"set_password"}},
		{"subdomain", saveSession(t, w.sessions, sid(10), "192.0.2.10", testAccount, now, ok, rejected("x@praha.firma.cz")),
			"sender x@praha.firma.cz: a subdomain of firma.cz, which is not allowed (R6)", nil},
		{"subdomain of an alias", saveSession(t, w.sessions, sid(11), "192.0.2.10", testAccount, now, ok, rejected("x@a.firma.com")),
			"sender x@a.firma.com: a subdomain of firma.com, which is not allowed (R6)", nil},
		{"other hosted domain", saveSession(t, w.sessions, sid(12), "192.0.2.10", testAccount, now, ok, rejected("x@jiny.cz")),
			"sender x@jiny.cz: jiny.cz is hosted here, but the login jan@firma.cz may send only from firma.cz or its aliases firma.com (R5, R6)", nil},
		{"freemail", saveSession(t, w.sessions, sid(13), "192.0.2.10", testAccount, now, ok, rejected("jan@gmail.com")),
			"sender jan@gmail.com: gmail.com is not firma.cz or its aliases firma.com; mail from it must go through that domain's own server (R5, R6)", nil},
		{"identity outside webmail", saveSession(t, w.sessions, sid(14), "192.0.2.10", testAccount, now, ok, rejected("jan@seznam.cz")),
			"sender jan@seznam.cz: an extra identity of jan@firma.cz, usable only from the webmail networks (R9)", nil},
		{"header sender", saveSession(t, w.sessions, sid(15), "192.0.2.10", testAccount, now, ok, [3]string{"mail", testAccount, "250 2.0.0 OK"},
			[3]string{"data", "300 bytes", "550 5.1.0 SID <boss@praha.firma.cz> sender rejected"}),
			"header sender boss@praha.firma.cz: a subdomain of firma.cz, which is not allowed (R6)", nil},
		{"disabled", saveSession(t, w.sessions, sid(16), "192.0.2.11", "", now, [3]string{"auth", "off@firma.cz", "535 5.1.0 SID authentication rejected access disabled"}),
			"SMTP access of off@firma.cz is disabled, so any password is rejected (R4)", []string{"enable"}},
		{"unknown account", saveSession(t, w.sessions, sid(17), "192.0.2.11", "", now, [3]string{"auth", "eva@firma.cz", "535 5.1.0 SID authentication rejected"}),
			"login eva@firma.cz: no such account on firma.cz (R2)", nil},
		{"not hosted", saveSession(t, w.sessions, sid(18), "192.0.2.11", "", now, [3]string{"auth", "eva@gmail.com", "535 5.1.0 SID authentication rejected"}),
			"login eva@gmail.com: the domain gmail.com is not hosted here (R2)", nil},
		{"not a full address", saveSession(t, w.sessions, sid(19), "192.0.2.11", "", now, [3]string{"auth", "jan", "535 5.1.0 SID authentication rejected"}),
			`login "jan" is not a full email address; the login is the whole mailbox address (R2)`, nil},
		{"no auth", saveSession(t, w.sessions, sid(20), "192.0.2.11", "", now, [3]string{"mail", testAccount, "550 5.1.0 SID authentication failed"}),
			"MAIL FROM without a successful AUTH: the mail client is not set to log in with the mailbox address and password (R1)", nil},
		{"accepted", saveSession(t, w.sessions, sid(21), "192.0.2.11", testAccount, now, ok, [3]string{"queued", "33lrhkj7b47fao68fvg29102", ""}),
			"accepted 1 message: queue id 33lrhkj7b47fao68fvg29102", nil},
		{"sending limit", saveSession(t, w.sessions, sid(23), "192.0.2.11", testAccount, now, ok, [3]string{"mail", testAccount, "250 2.1.0 <jan@firma.cz> sender OK"},
			[3]string{"rcpt", "x@example.org", "451 4.7.1 SID sending limit reached for firma.cz: 2500 recipients per hour; try again after 14:07"}),
			"firma.cz reached its limit of 2500 recipients per hour (R19); the rolling window frees a slot at 14:07 UTC, and the client may send the rest then: nothing was lost. If the volume is legitimate: submitd sending set firma.cz recipients_per_hour=N",
			[]string{"raise_sending_limit"}},
		{"busy", saveSession(t, w.sessions, sid(22), "192.0.2.11", "", now, [3]string{"auth", testAccount, "454 4.7.0 SID try again later"}),
			"temporary failure: the password check could not be made in time, or the directory was unreachable (R16a); the client tries again", nil},
	}
	for _, c := range cases {
		ex := x.Explain(ctx, c.rec)
		if ex.Cause != c.cause {
			t.Errorf("%s:\n got %q\nwant %q", c.name, ex.Cause, c.cause)
		}
		if !slices.Equal(ex.Fixes, c.fixes) {
			t.Errorf("%s: fixes %v, want %v", c.name, ex.Fixes, c.fixes)
		}
	}
}

// TestExplainBlock: the tenth failure says it blocked the IP; a refused
// connection names when the block began, the failing sessions and when it
// ends; after an unblock it says the block is over.
func TestExplainBlock(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	clk := testutil.NewClock(time.Date(2026, 3, 2, 13, 0, 0, 0, time.UTC))
	g, err := guard.New(ctx, guard.Config{Now: clk.Now}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := &Explainer{Directory: w.dir, Failures: w.sessions, Guard: g}
	ip := netip.MustParseAddr("198.51.100.20")
	var sids []string
	var last *sessionlog.Record
	for i := range 10 {
		id := fmt.Sprintf("Blck%018d", i)
		sids = append(sids, id)
		last = saveSession(t, w.sessions, id, ip.String(), "", clk.Now(), [3]string{"auth", testAccount, "535 5.1.0 " + id + " authentication failed"})
		g.Failure(ip, id)
		clk.Advance(47 * time.Second)
	}
	want := "wrong password for jan@firma.cz: 10th failure from 198.51.100.20 this hour, which blocked this IP for an hour"
	if ex := x.Explain(ctx, last); ex.Cause != want || !slices.Equal(ex.Fixes, []string{"set_password", "unblock"}) {
		t.Errorf("10th failure: %q %v\nwant %q", ex.Cause, ex.Fixes, want)
	}
	ref := saveSession(t, w.sessions, "Blckrefused00000000000", ip.String(), "", clk.Now(),
		[3]string{"refused", "client blocked", "554 5.1.0 Blckrefused00000000000 Connection refused from 198.51.100.20. Too many authorization failures from this IP, try again later."})
	ex := x.Explain(ctx, ref)
	want = "refused: IP 198.51.100.20 blocked at 13:07 UTC after 10 failures (sessions " + strings.Join(sids, ", ") + "), until 14:07 UTC"
	if ex.Cause != want || ex.Outcome != "refused: IP blocked" || !strings.Contains(ex.CustomerSaw, "Connection refused from 198.51.100.20") {
		t.Errorf("refused:\n got %q (%s)\nwant %q", ex.Cause, ex.Outcome, want)
	}
	g.Unblock(ctx, netip.PrefixFrom(ip, 32))
	if ex := x.Explain(ctx, ref); !strings.HasPrefix(ex.Cause, "refused: IP 198.51.100.20 was blocked (the block has ended or was lifted since) after 10 failures") {
		t.Errorf("after unblock: %q", ex.Cause)
	}
}
