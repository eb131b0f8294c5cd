package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"submitd/internal/directory"
	"submitd/internal/dkim"
	"submitd/internal/guard"
	"submitd/internal/password"
	"submitd/internal/queue"
	"submitd/internal/sending"
	"submitd/internal/sessionlog"
	"submitd/internal/spool"
	"submitd/internal/testutil"
	"submitd/internal/trace"
)

// world is an admin server over real stores in a temporary data_dir, with
// a domain, an account, a recorded session, a block and a queued message.
type world struct {
	t        testing.TB
	srv      *Server
	ts       *httptest.Server
	dir      *directory.SQLite
	sessions *sessionlog.SQLite
	guard    *guard.Guard
	store    *SQLite
	// tokens are bearer tokens by role.
	tokens map[Role]string
	// sid is the recorded session, of a wrong password from 203.0.113.9.
	sid string
	// qid is the queued message.
	qid string
	// trace is the delivery history: qid deferred to eva@example.org, and
	// doneQID delivered to friend@example.org.
	trace *trace.SQLite
}

const (
	testSID     = "piWs1j0010jifNx01iWsdh"
	blockedIP   = "203.0.113.9"
	staffPass   = "correct horse"
	unknownSID  = "AAAAAAAAAAAAAAAAAAAAAA"
	unknownQID  = "000000000000000000000000"
	testAccount = "jan@firma.cz"
)

func newWorld(t testing.TB) *world {
	t.Helper()
	ctx := context.Background()
	data := t.TempDir()
	db := testutil.OpenDBIn(t, data)
	w := &world{t: t, tokens: map[Role]string{}, sid: testSID}
	var err error
	if w.dir, err = directory.NewSQLite(ctx, db); err != nil {
		t.Fatal(err)
	}
	if w.sessions, err = sessionlog.NewSQLite(ctx, db); err != nil {
		t.Fatal(err)
	}
	gst, err := guard.NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if w.guard, err = guard.New(ctx, guard.Config{}, gst, nil); err != nil {
		t.Fatal(err)
	}
	keys, err := dkim.NewStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if w.store, err = NewSQLite(ctx, db); err != nil {
		t.Fatal(err)
	}
	lg, err := guard.New(ctx, guard.Config{MaxFailures: 3}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	h, sh := fixtureHashes()
	must(t, w.dir.AddDomain(ctx, "firma.cz"))
	must(t, w.dir.AddAlias(ctx, "firma.com", "firma.cz"))
	must(t, w.dir.AddAccount(ctx, testAccount, h))
	must(t, w.dir.AddIdentity(ctx, testAccount, "jan@seznam.cz"))
	must(t, w.dir.AddDomain(ctx, "jina.cz"))
	must(t, w.dir.RemoveDomain(ctx, "jina.cz", false))
	must(t, w.dir.SetSendingLimits(ctx, testAccount, map[string]int64{"recipients_per_hour": 50, "recipients_per_day": 9}))
	for _, r := range []Role{RoleSupport, RoleAdmin} {
		name := "petra"
		if r == RoleAdmin {
			name = "adam"
		}
		must(t, w.store.AddStaff(ctx, Staff{Name: name, Role: r, PasswordHash: sh, Created: time.Now()}))
		tok, tt := NewToken(name, time.Now())
		if _, err := w.store.AddToken(ctx, tt); err != nil {
			t.Fatal(err)
		}
		w.tokens[r] = tok
	}
	rec := &sessionlog.Record{ID: testSID, Start: time.Now().Add(-time.Minute), ClientIP: blockedIP, ClientPort: 50000, Listener: "submission"}
	rec.Add("connect", blockedIP+" port 50000", "")
	rec.Add("auth", testAccount, "535 5.1.0 "+testSID+" authentication failed")
	rec.End = time.Now()
	must(t, w.sessions.Save(ctx, rec))
	must(t, w.guard.Failure(netip.MustParseAddr(blockedIP), testSID) == false)
	if _, err := w.guard.BlockNetwork(ctx, netip.MustParsePrefix(blockedIP+"/32"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wr, err := sp.Create(&spool.Envelope{From: testAccount, To: []string{"eva@example.org"}, Account: testAccount,
		SessionID: testSID, ClientIP: blockedIP, Received: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(wr, "Message-ID: <abc.123@firma.cz>\r\nFrom: jan@firma.cz\r\nSubject: hi\r\n\r\nbody\r\n")
	must(t, wr.Commit())
	k, err := dkim.Generate("firma.com", "s1", dkim.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	must(t, keys.Put(ctx, k, false))
	envs, _ := sp.List()
	w.qid = envs[0].ID
	if w.trace, err = trace.NewSQLite(ctx, db); err != nil {
		t.Fatal(err)
	}
	saveHistory(t, w)

	w.srv = New(Config{
		Directory: w.dir, Sessions: w.sessions, Guard: w.guard, DKIM: keys, Staff: w.store, Audit: w.store, Trace: w.trace,
		Queue:      &queue.Admin{Spool: sp, Hostname: "mail.test", MaxAge: time.Hour},
		LoginGuard: lg, PasswordScheme: "bcrypt",
		SendingAccount: sending.Limits{sending.MessagesPerHour: 7},
	})
	w.srv.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up 1\n") })
	w.ts = httptest.NewServer(w.srv.Handler())
	t.Cleanup(w.ts.Close)
	return w
}

// hashes are the account's and the staff's password hashes, made once:
// bcrypt under the race detector is slow, and every test makes a world.
var hashes struct {
	once           sync.Once
	account, staff string
}

func fixtureHashes() (account, staff string) {
	hashes.once.Do(func() {
		// The lowest bcrypt cost: what is tested is the API, not the hash.
		a, _ := bcrypt.GenerateFromPassword([]byte("heslo"), bcrypt.MinCost)
		s, _ := bcrypt.GenerateFromPassword([]byte(staffPass), bcrypt.MinCost)
		hashes.account, hashes.staff = string(a), string(s)
	})
	return hashes.account, hashes.staff
}

// must fails the test on an error, or on false.
func must(t testing.TB, v any) {
	t.Helper()
	switch v := v.(type) {
	case error:
		t.Fatal(v)
	case bool:
		if !v {
			t.Fatal("unexpected false")
		}
	}
}

// reply is an answer of the server.
type reply struct {
	status int
	body   map[string]any
	raw    string
}

// do sends a request with a bearer token of role ("" for none) and extra
// headers.
func (w *world) do(method, path, body string, role Role, hdr ...string) reply {
	w.t.Helper()
	req, err := http.NewRequest(method, w.ts.URL+path, strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+w.tokens[role])
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return w.send(http.DefaultClient, req)
}

func (w *world) send(c *http.Client, req *http.Request) reply {
	w.t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, raw: string(b)}
	json.Unmarshal(b, &r.body)
	return r
}

// browser logs name in and returns a client with the cookie and the CSRF
// token.
func (w *world) browser(name string) (*http.Client, string) {
	w.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	req, _ := http.NewRequest("POST", w.ts.URL+"/api/v1/login", strings.NewReader(fmt.Sprintf(`{"name":%q,"password":%q}`, name, staffPass)))
	req.Header.Set("Content-Type", "application/json")
	r := w.send(c, req)
	if r.status != 200 {
		w.t.Fatalf("login %s: %d %s", name, r.status, r.raw)
	}
	return c, r.body["csrf_token"].(string)
}

// lastAudit returns the newest audit entry.
func (w *world) lastAudit() *Entry {
	es, _, err := w.store.Audit(context.Background(), AuditQuery{Limit: 1})
	if err != nil {
		w.t.Fatal(err)
	}
	if len(es) == 0 {
		return nil
	}
	return &es[0]
}

// endpoint is one API endpoint and the requests that test it.
type endpoint struct {
	method, path, body string
	// need is the role it needs.
	need Role
	// audit is the action of the audit entry a change writes; "" for reads.
	audit string
	// target is the audit entry's target.
	target string
	// unknown is a path (and body) naming something that does not exist;
	// "" when the endpoint names nothing.
	unknown, unknownBody string
	// bad is a path and body with bad input; "" when there is none.
	bad, badBody string
	// check looks at a successful answer.
	check func(t *testing.T, w *world, r reply)
}

func endpoints(w *world) []endpoint {
	q := w.qid
	return []endpoint{
		{method: "GET", path: "/api/v1/me", need: RoleSupport},
		{method: "GET", path: "/api/v1/find?q=" + url.QueryEscape("Server response: 550 5.1.0 "+testSID+" authentication failed"), need: RoleSupport,
			bad: "/api/v1/find?q=", check: func(t *testing.T, w *world, r reply) {
				ss := r.body["sessions"].([]any)
				if len(ss) == 0 || ss[0].(map[string]any)["id"] != testSID || ss[0].(map[string]any)["login"] != testAccount {
					t.Errorf("find: %s", r.raw)
				}
			}},
		{method: "GET", path: "/api/v1/sessions/" + testSID, need: RoleSupport, unknown: "/api/v1/sessions/" + unknownSID, bad: "/api/v1/sessions/short",
			check: func(t *testing.T, w *world, r reply) {
				if c, _ := r.body["cause"].(string); !strings.HasPrefix(c, "wrong password for jan@firma.cz: 1st failure from 203.0.113.9 this hour") {
					t.Errorf("cause %q", c)
				}
			}},
		{method: "GET", path: "/api/v1/blocked", need: RoleSupport, bad: "/api/v1/blocked?limit=0", check: func(t *testing.T, w *world, r reply) {
			if !strings.Contains(r.raw, `"key": "203.0.113.9"`) {
				t.Errorf("blocked: %s", r.raw)
			}
		}},
		{method: "POST", path: "/api/v1/block", body: `{"target":"198.51.100.0/24","duration":"2h","reason":"spam run"}`, need: RoleSupport,
			audit: "guard.block", target: "ip:198.51.100.0/24", bad: "/api/v1/block", badBody: `{"target":"198.51.100.0/24","duration":"forever","reason":"x"}`,
			check: func(t *testing.T, w *world, r reply) {
				if !w.guard.Blocked(netip.MustParseAddr("198.51.100.77")) {
					t.Error("not blocked")
				}
			}},
		{method: "POST", path: "/api/v1/unblock", body: `{"target":"203.0.113.9"}`, need: RoleSupport, audit: "guard.unblock", target: "ip:203.0.113.9",
			unknown: "/api/v1/unblock", unknownBody: `{"target":"192.0.2.200"}`, bad: "/api/v1/unblock", badBody: `{"target":"203.0.113"}`,
			check: func(t *testing.T, w *world, r reply) {
				if w.guard.Blocked(netip.MustParseAddr(blockedIP)) {
					t.Error("still blocked")
				}
			}},
		{method: "GET", path: "/api/v1/accounts?q=jan", need: RoleSupport, bad: "/api/v1/accounts?domain=bad..domain", check: func(t *testing.T, w *world, r reply) {
			if r.body["total"] != 1.0 {
				t.Errorf("accounts: %s", r.raw)
			}
		}},
		{method: "POST", path: "/api/v1/accounts", body: `{"address":"eva@firma.cz","password":"x1"}`, need: RoleAdmin, audit: "account.add", target: "account:eva@firma.cz",
			bad: "/api/v1/accounts", badBody: `{"address":"eva","password":"x1"}`, unknown: "/api/v1/accounts", unknownBody: `{"address":"eva@nothosted.cz","password":"x1"}`},
		{method: "GET", path: "/api/v1/accounts/" + testAccount, need: RoleSupport, unknown: "/api/v1/accounts/nobody@firma.cz", bad: "/api/v1/accounts/nobody",
			check: func(t *testing.T, w *world, r reply) {
				if !strings.Contains(r.raw, testSID) {
					t.Errorf("no recent session: %s", r.raw)
				}
			}},
		{method: "DELETE", path: "/api/v1/accounts/" + testAccount, need: RoleAdmin, audit: "account.remove", target: "account:" + testAccount,
			unknown: "/api/v1/accounts/nobody@firma.cz", bad: "/api/v1/accounts/nobody"},
		{method: "POST", path: "/api/v1/accounts/" + testAccount + "/smtp_access", body: `{"enabled":false}`, need: RoleSupport, audit: "account.disable",
			target: "account:" + testAccount, unknown: "/api/v1/accounts/nobody@firma.cz/smtp_access", unknownBody: `{"enabled":false}`,
			bad: "/api/v1/accounts/" + testAccount + "/smtp_access", badBody: `{"enabled":"no"}`,
			check: func(t *testing.T, w *world, r reply) {
				a, _ := w.dir.Account(context.Background(), testAccount)
				if a.SMTPAccess {
					t.Error("still enabled")
				}
				e := w.lastAudit()
				if string(e.Before) != `{"smtp_access":true}` || string(e.After) != `{"smtp_access":false}` {
					t.Errorf("audit before/after: %s %s", e.Before, e.After)
				}
			}},
		{method: "POST", path: "/api/v1/accounts/" + testAccount + "/password", body: `{"password":"nove heslo"}`, need: RoleSupport, audit: "account.passwd",
			target: "account:" + testAccount, unknown: "/api/v1/accounts/nobody@firma.cz/password", unknownBody: `{"password":"x"}`,
			bad: "/api/v1/accounts/" + testAccount + "/password", badBody: `{"password":""}`,
			check: func(t *testing.T, w *world, r reply) {
				a, _ := w.dir.Account(context.Background(), testAccount)
				if ok, _ := password.Verify(a.PasswordHash, "nove heslo"); !ok {
					t.Error("password not changed")
				}
				if strings.Contains(string(w.lastAudit().After), "nove") {
					t.Error("the audit log holds the password")
				}
			}},
		{method: "POST", path: "/api/v1/accounts/" + testAccount + "/identities", body: `{"identity":"jan@gmail.com"}`, need: RoleSupport,
			audit: "account.identity.add", target: "account:" + testAccount, unknown: "/api/v1/accounts/nobody@firma.cz/identities",
			unknownBody: `{"identity":"jan@gmail.com"}`, bad: "/api/v1/accounts/" + testAccount + "/identities", badBody: `{"identity":"not an address"}`},
		{method: "DELETE", path: "/api/v1/accounts/" + testAccount + "/identities/jan@seznam.cz", need: RoleSupport, audit: "account.identity.remove",
			target: "account:" + testAccount, unknown: "/api/v1/accounts/" + testAccount + "/identities/other@seznam.cz",
			bad: "/api/v1/accounts/" + testAccount + "/identities/nope"},
		{method: "GET", path: "/api/v1/domains?q=firma", need: RoleSupport, bad: "/api/v1/domains?offset=-1"},
		{method: "POST", path: "/api/v1/domains", body: `{"name":"nova.cz"}`, need: RoleAdmin, audit: "domain.add", target: "domain:nova.cz",
			bad: "/api/v1/domains", badBody: `{"name":"-bad-"}`},
		{method: "GET", path: "/api/v1/domains/firma.cz", need: RoleSupport, unknown: "/api/v1/domains/other.cz", bad: "/api/v1/domains/bad..cz",
			check: func(t *testing.T, w *world, r reply) {
				if !strings.Contains(r.raw, `"firma.com"`) {
					t.Errorf("no alias: %s", r.raw)
				}
			}},
		{method: "DELETE", path: "/api/v1/domains/firma.cz?force=true", need: RoleAdmin, audit: "domain.remove", target: "domain:firma.cz",
			unknown: "/api/v1/domains/other.cz", bad: "/api/v1/domains/firma.cz?force=maybe"},
		{method: "POST", path: "/api/v1/domains/firma.cz/aliases", body: `{"alias":"firma.eu"}`, need: RoleAdmin, audit: "alias.add", target: "domain:firma.cz",
			unknown: "/api/v1/domains/other.cz/aliases", unknownBody: `{"alias":"firma.eu"}`, bad: "/api/v1/domains/firma.cz/aliases", badBody: `{"alias":""}`},
		{method: "DELETE", path: "/api/v1/aliases/firma.com", need: RoleAdmin, audit: "alias.remove", target: "domain:firma.cz",
			unknown: "/api/v1/aliases/other.com", bad: "/api/v1/aliases/firma.cz"},
		{method: "POST", path: "/api/v1/domains/firma.cz/dkim", body: `{"selector":"s1","algorithm":"ed25519"}`, need: RoleAdmin, audit: "dkim.generate",
			target: "domain:firma.cz", unknown: "/api/v1/domains/other.cz/dkim", unknownBody: `{}`, bad: "/api/v1/domains/firma.cz/dkim",
			badBody: `{"algorithm":"dsa"}`, check: func(t *testing.T, w *world, r reply) {
				if v, _ := r.body["value"].(string); !strings.HasPrefix(v, "v=DKIM1; k=ed25519; p=") {
					t.Errorf("dkim: %s", r.raw)
				}
			}},
		{method: "DELETE", path: "/api/v1/domains/firma.com/dkim", need: RoleAdmin, audit: "dkim.remove", target: "domain:firma.com",
			unknown: "/api/v1/domains/firma.cz/dkim", bad: "/api/v1/domains/bad..cz/dkim"},
		{method: "GET", path: "/api/v1/queue?state=pending", need: RoleSupport, bad: "/api/v1/queue?state=lost", check: func(t *testing.T, w *world, r reply) {
			if !strings.Contains(r.raw, q) {
				t.Errorf("queue: %s", r.raw)
			}
		}},
		{method: "GET", path: "/api/v1/queue/" + q, need: RoleSupport, unknown: "/api/v1/queue/" + unknownQID, bad: "/api/v1/queue/..%2F..%2Fetc"},
		{method: "POST", path: "/api/v1/queue/" + q + "/retry", need: RoleSupport, audit: "queue.retry", target: "queue:" + q,
			unknown: "/api/v1/queue/" + unknownQID + "/retry", bad: "/api/v1/queue/xyz/retry"},
		{method: "POST", path: "/api/v1/queue/" + q + "/delete", body: `{"bounce":false}`, need: RoleSupport, audit: "queue.delete", target: "queue:" + q,
			unknown: "/api/v1/queue/" + unknownQID + "/delete", unknownBody: `{}`, bad: "/api/v1/queue/" + q + "/delete", badBody: `{"bounce":"yes"}`},
		{method: "GET", path: "/api/v1/audit", need: RoleSupport, bad: "/api/v1/audit?limit=100000"},
		{method: "GET", path: "/api/v1/staff", need: RoleAdmin, bad: "/api/v1/staff?limit=x"},
		{method: "POST", path: "/api/v1/staff", body: `{"name":"olga","role":"support","password":"pw"}`, need: RoleAdmin, audit: "staff.add", target: "staff:olga",
			bad: "/api/v1/staff", badBody: `{"name":"olga","role":"root","password":"pw"}`},
		{method: "DELETE", path: "/api/v1/staff/petra", need: RoleAdmin, audit: "staff.remove", target: "staff:petra", unknown: "/api/v1/staff/nobody", bad: "/api/v1/staff/Bad%20Name"},
		{method: "POST", path: "/api/v1/staff/petra/password", body: `{"password":"new"}`, need: RoleAdmin, audit: "staff.passwd", target: "staff:petra",
			unknown: "/api/v1/staff/nobody/password", unknownBody: `{"password":"x"}`, bad: "/api/v1/staff/petra/password", badBody: `{"password":""}`},
		{method: "POST", path: "/api/v1/staff/petra/tokens", need: RoleAdmin, audit: "staff.token.add", target: "staff:petra", unknown: "/api/v1/staff/nobody/tokens",
			bad: "/api/v1/staff/Bad%20Name/tokens", check: func(t *testing.T, w *world, r reply) {
				tok, _ := r.body["token"].(string)
				if !strings.HasPrefix(tok, "sdt_") {
					t.Fatalf("token: %s", r.raw)
				}
				w.tokens["new"] = tok
				if r := w.do("GET", "/api/v1/me", "", "new"); r.status != 200 || r.body["name"] != "petra" {
					t.Errorf("new token: %d %s", r.status, r.raw)
				}
			}},
		{method: "GET", path: "/api/v1/tokens", need: RoleAdmin, bad: "/api/v1/tokens?offset=x", check: func(t *testing.T, w *world, r reply) {
			if strings.Contains(r.raw, "hash") || r.body["total"] != 2.0 {
				t.Errorf("tokens: %s", r.raw)
			}
		}},
		{method: "GET", path: "/api/v1/sending/" + testAccount, need: RoleSupport, unknown: "/api/v1/sending/nikdo@firma.cz",
			bad: "/api/v1/sending/bad..domain", check: func(t *testing.T, w *world, r reply) {
				l, _ := r.body["limits"].(map[string]any)["messages_per_hour"].(map[string]any)
				if r.body["kind"] != "account" || l["source"] != "config" || l["limit"] != 7.0 || l["used"] != nil {
					t.Errorf("sending: %s", r.raw)
				}
			}},
		{method: "PUT", path: "/api/v1/sending/firma.cz", body: `{"recipients_per_hour":1000,"messages_per_hour":0}`, need: RoleSupport,
			audit: "sending.set", target: "domain:firma.cz", unknown: "/api/v1/sending/jina.cz", unknownBody: `{"recipients_per_hour":5}`,
			bad: "/api/v1/sending/firma.cz", badBody: `{"recipients_per_minute":5}`, check: func(t *testing.T, w *world, r reply) {
				m, err := w.dir.SendingLimits(context.Background(), "firma.cz")
				if err != nil || len(m) != 2 || m["recipients_per_hour"] != 1000 || m["messages_per_hour"] != 0 {
					t.Errorf("stored %v, %v", m, err)
				}
			}},
		{method: "DELETE", path: "/api/v1/sending/" + testAccount + "?key=recipients_per_day", need: RoleSupport,
			audit: "sending.clear", target: "account:" + testAccount, unknown: "/api/v1/sending/nikdo@firma.cz",
			bad: "/api/v1/sending/" + testAccount + "?key=bogus", check: func(t *testing.T, w *world, r reply) {
				m, _ := w.dir.SendingLimits(context.Background(), testAccount)
				if len(m) != 1 || m["recipients_per_hour"] != 50 {
					t.Errorf("left %v", m)
				}
				if e := w.lastAudit(); string(e.Before) != `{"recipients_per_day":9,"recipients_per_hour":50}` || string(e.After) != `{"recipients_per_hour":50}` {
					t.Errorf("audit %s → %s", e.Before, e.After)
				}
			}},
		{method: "DELETE", path: "/api/v1/tokens/1", need: RoleAdmin, audit: "staff.token.revoke", target: "staff:petra", unknown: "/api/v1/tokens/99",
			bad: "/api/v1/tokens/x", check: func(t *testing.T, w *world, r reply) {
				if r := w.do("GET", "/api/v1/me", "", RoleSupport); r.status != 401 {
					t.Errorf("revoked token: %d", r.status)
				}
			}},
	}
}

// wantError checks an error answer: the status and a JSON message.
func wantError(t *testing.T, what string, r reply, status int) {
	t.Helper()
	msg, _ := r.body["error"].(string)
	if r.status != status || msg == "" {
		t.Errorf("%s: %d %s, want %d with a message", what, r.status, r.raw, status)
	}
}

// TestEndpoints: every endpoint answers 401 without credentials, 403 to a
// role below its need and to a browser without the right CSRF token, 404
// with a message for an unknown id, 400 with a message for bad input, and a
// change writes its audit entry with the actor.
func TestEndpoints(t *testing.T) {
	for i, ep := range endpoints(newWorld(t)) {
		name := ep.method + " " + strings.NewReplacer("/api/v1/", "", "/", "_").Replace(strings.SplitN(ep.path, "?", 2)[0])
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			ep := endpoints(w)[i]
			checkEndpoint(t, w, ep)
		})
	}
}

// TestSendingInput: PUT /api/v1/sending takes whole numbers from 0 to the
// maximum under known keys, as JSON numbers or as a form's digits, and
// nothing else; an alias domain is refused
// with a word on its hosted domain.
func TestSendingInput(t *testing.T) {
	w := newWorld(t)
	for _, body := range []string{`{}`, `{"recipients_per_hour":-1}`, `{"recipients_per_hour":1.5}`, `{"recipients_per_hour":"five"}`, `{"recipients_per_hour":" 5"}`, `{"recipients_per_hour":true}`,
		`{"recipients_per_hour":10000001}`, `{"recipients_per_hour":1e3}`, `[1]`} {
		wantError(t, body, w.do("PUT", "/api/v1/sending/"+testAccount, body, RoleSupport), 400)
	}
	if m, _ := w.dir.SendingLimits(context.Background(), testAccount); len(m) != 2 {
		t.Errorf("a refused PUT changed the overrides: %v", m)
	}
	// A browser's form sends the number as text.
	if r := w.do("PUT", "/api/v1/sending/"+testAccount, `{"recipients_per_hour":"70"}`, RoleSupport); r.status != 200 {
		t.Errorf("number in a string: %d %s", r.status, r.raw)
	}
	r := w.do("PUT", "/api/v1/sending/firma.com", `{"recipients_per_hour":5}`, RoleSupport)
	if r.status != 404 || !strings.Contains(r.raw, "firma.com") {
		t.Errorf("alias domain: %d %s", r.status, r.raw)
	}
}

// checkEndpoint runs TestEndpoints' checks on one endpoint of w.
func checkEndpoint(t *testing.T, w *world, ep endpoint) {
	t.Helper()
	wantError(t, "unauthenticated", w.do(ep.method, ep.path, ep.body, ""), 401)
	wantError(t, "bad token", w.do(ep.method, ep.path, ep.body, "", "Authorization", "Bearer sdt_nope"), 401)
	if ep.need == RoleAdmin {
		wantError(t, "support", w.do(ep.method, ep.path, ep.body, RoleSupport), 403)
	}
	c, csrf := w.browser(map[Role]string{RoleSupport: "petra", RoleAdmin: "adam"}[ep.need])
	if !safeMethod(ep.method) {
		for _, tok := range []string{"", "wrong" + csrf} {
			req, _ := http.NewRequest(ep.method, w.ts.URL+ep.path, strings.NewReader(ep.body))
			req.Header.Set("Content-Type", "application/json")
			if tok != "" {
				req.Header.Set(CSRFHeader, tok)
			}
			wantError(t, "csrf "+tok, w.send(c, req), 403)
		}
		if e := w.lastAudit(); e != nil && e.Action == ep.audit {
			t.Fatalf("refused request audited: %+v", e)
		}
	}
	if ep.bad != "" {
		wantError(t, "bad input", w.do(ep.method, ep.bad, ep.badBody, ep.need), 400)
	}
	if ep.unknown != "" {
		wantError(t, "unknown", w.do(ep.method, ep.unknown, ep.unknownBody, ep.need), 404)
	}
	// The change itself, from the browser with its CSRF token.
	req, _ := http.NewRequest(ep.method, w.ts.URL+ep.path, strings.NewReader(ep.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(CSRFHeader, csrf)
	r := w.send(c, req)
	if r.status != 200 {
		t.Fatalf("%s %s: %d %s", ep.method, ep.path, r.status, r.raw)
	}
	if ep.audit != "" {
		e := w.lastAudit()
		who := map[Role]string{RoleSupport: "petra", RoleAdmin: "adam"}[ep.need]
		if e == nil || e.Action != ep.audit || e.Target != ep.target || e.Actor != who {
			t.Errorf("audit entry %+v, want %s %s by %s", e, ep.audit, ep.target, who)
		}
	}
	if ep.check != nil {
		ep.check(t, w, r)
	}
}
