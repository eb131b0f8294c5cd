package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"submitd/internal/certs"
	"submitd/internal/directory"
	"submitd/internal/guard"
	"submitd/internal/password"
	"submitd/internal/policy"
	"submitd/internal/sessionlog"
	"submitd/internal/spool"
	"submitd/internal/testutil"
)

// testEnv is a running Server with a real SQLite directory and spool.
type testEnv struct {
	t     testing.TB
	srv   *Server
	db    *sql.DB
	dir   *directory.SQLite
	spool *spool.Spool
	log   *recordingLog
	addrs map[string]string // listener name -> address
	// listeners are started once the options have run.
	listeners []ListenerConfig
	// guard and clock are set by withGuard.
	guard *guard.Guard
	clock *testutil.Clock
}

// recordingLog collects finished session records.
type recordingLog struct {
	mu   sync.Mutex
	recs map[string]*sessionlog.Record
}

func (r *recordingLog) Save(rec *sessionlog.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs[rec.ID] = rec
}

func (r *recordingLog) get(id string) *sessionlog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recs[id]
}

const testPassword = "correct horse battery"

// testHash is testPassword as an imported {SHA512-CRYPT} hash with the fewest
// rounds crypt(3) allows, made with Python's crypt module: fast enough for
// the race detector, and a check that legacy hashes log in (SPEC R2).
const testHash = "{SHA512-CRYPT}$6$rounds=1000$saltsalt$cR7uED9S9icrxa11Lj7F5D.7U8449gpqBXyD2HSpuHRpxCc17kJRpsJMsHp434Y8yykgmcefOmxgCH44Cw7tW/"

// envOption adjusts a testEnv's server and listeners before they start.
type envOption func(*testEnv)

// withServer is an option that changes the server's settings.
func withServer(f func(*Server)) envOption {
	return func(e *testEnv) { f(e.srv) }
}

// withGuard gives the server the real guard with cfg, on a SQLite store in
// the env's database and on a clock the test moves (e.clock), so a block can
// be watched running out without waiting an hour.
func withGuard(cfg guard.Config) envOption {
	return func(e *testEnv) {
		e.t.Helper()
		ctx := context.Background()
		store, err := guard.NewSQLite(ctx, e.db)
		if err != nil {
			e.t.Fatal(err)
		}
		e.clock = testutil.NewClock(time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC))
		cfg.Now = e.clock.Now
		e.guard, err = guard.New(ctx, cfg, store, e.srv.Log)
		if err != nil {
			e.t.Fatal(err)
		}
		e.srv.Guard = GuardOf(e.guard)
	}
}

// withProxy adds the listener "proxied" (PROXY protocol, plaintext AUTH
// allowed) and trusts PROXY headers from the networks trusted.
func withProxy(trusted ...string) envOption {
	return func(e *testEnv) {
		for _, p := range trusted {
			e.srv.TrustedProxies = append(e.srv.TrustedProxies, netip.MustParsePrefix(p))
		}
		e.listeners = append(e.listeners, ListenerConfig{Name: "proxied", AllowPlaintextAuth: true, ProxyProtocol: true})
	}
}

// newTestEnv starts listeners "smtp" (STARTTLS), "submissions" (implicit
// TLS) and "plain" (STARTTLS, plaintext AUTH allowed) on loopback, and those
// the options add, with firma.cz (alias firma.com), příklad.cz and jina.cz
// hosted.
func newTestEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	ctx := context.Background()
	tmp := t.TempDir()
	db := testutil.OpenDB(t)
	dir, err := directory.NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	hash := testHash
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(dir.AddDomain(ctx, "firma.cz"))
	must(dir.AddAlias(ctx, "firma.com", "firma.cz"))
	must(dir.AddDomain(ctx, "příklad.cz"))
	must(dir.AddDomain(ctx, "jina.cz"))
	must(dir.AddAccount(ctx, "jan@firma.cz", hash))
	must(dir.AddAccount(ctx, "petr@příklad.cz", hash))
	must(dir.AddAccount(ctx, "eva@jina.cz", hash))
	must(dir.AddAccount(ctx, "zakazany@firma.cz", hash))
	must(dir.SetSMTPAccess(ctx, "zakazany@firma.cz", false))
	must(dir.AddIdentity(ctx, "jan@firma.cz", "jan.novak@seznam.cz"))

	sp, err := spool.Open(filepath.Join(tmp, "spool"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, _, err := certs.Load("", "", tmp, "mail.test")
	if err != nil {
		t.Fatal(err)
	}
	replies, err := NewReplies(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingLog{recs: map[string]*sessionlog.Record{}}
	srv := &Server{
		Settings: Settings{
			Policy:  &policy.Policy{},
			Replies: replies,
			Limits: Limits{
				MaxMessageSize: 64 << 10,
				MaxRecipients:  5,
				MaxLineLength:  1000,
				MaxHeaderSize:  32 << 10,
				CommandTimeout: 10 * time.Second,
				SessionTimeout: time.Minute,
				MaxConnsPerIP:  50,
				MaxConns:       100,
			},
		},
		Hostname:   "mail.test",
		Directory:  dir,
		Spool:      SpoolDir(sp),
		SessionLog: rl,
		Verify:     password.Verify,
		TLS:        tlsConf,
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		srv.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	e := &testEnv{t: t, srv: srv, db: db, dir: dir, spool: sp, log: rl, addrs: map[string]string{},
		listeners: []ListenerConfig{
			{Name: "smtp"},
			{Name: "submissions", ImplicitTLS: true},
			{Name: "plain", AllowPlaintextAuth: true},
		}}
	for _, o := range opts {
		o(e)
	}
	for _, lc := range e.listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		e.addrs[lc.Name] = ln.Addr().String()
		go srv.Serve(ln, lc)
		t.Cleanup(func() { ln.Close() })
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return e
}

// client speaks raw SMTP lines.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// dial connects to listener and returns a client that has not yet read the
// greeting.
func (e *testEnv) dial(listener string) *client {
	e.t.Helper()
	return e.dialFrom(listener, "", nil)
}

// dialFrom connects to listener from the address local ("" for the system's
// choice), writes prefix first when it is not empty (a PROXY header), and
// returns a client that has not yet read the greeting.
func (e *testEnv) dialFrom(listener, local string, prefix []byte) *client {
	e.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	nc, err := d.Dial("tcp", e.addrs[listener])
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	if len(prefix) > 0 {
		if _, err := nc.Write(prefix); err != nil {
			e.t.Fatal(err)
		}
	}
	if listener == "submissions" {
		nc = tls.Client(nc, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.test"})
	}
	return &client{t: e.t, conn: nc, r: bufio.NewReader(nc)}
}

// reply reads one reply and returns its lines.
func (c *client) reply() []string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply: %v (got %q)", err, lines)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// last returns the last line of the next reply.
func (c *client) last() string {
	c.t.Helper()
	ls := c.reply()
	return ls[len(ls)-1]
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// cmd sends a command and returns the last reply line.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.last()
}

func (c *client) expect(line, wantPrefix string) string {
	c.t.Helper()
	got := c.cmd(line)
	if !strings.HasPrefix(got, wantPrefix) {
		c.t.Fatalf("%s: got %q, want prefix %q", line, got, wantPrefix)
	}
	return got
}

// starttls upgrades the connection.
func (c *client) starttls() {
	c.t.Helper()
	c.expect("STARTTLS", "220 ")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.test"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// session connects to listener, writing prefix first when it is not empty
// (a PROXY header), checks the greeting and says EHLO, without upgrading to
// TLS.
func (e *testEnv) session(listener string, prefix []byte) *client {
	e.t.Helper()
	c := e.dialFrom(listener, "", prefix)
	if g := c.last(); !strings.HasPrefix(g, "220 ") {
		e.t.Fatalf("greeting %q", g)
	}
	c.expect("EHLO client.example", "250 ")
	return c
}

// open connects, greets, and (for STARTTLS listeners) upgrades to TLS.
func (e *testEnv) open(listener string) *client {
	c := e.session(listener, nil)
	if listener != "submissions" {
		c.starttls()
		c.expect("EHLO client.example", "250 ")
	}
	return c
}

func plain(login, pw string) string {
	return "AUTH PLAIN " + b64("\x00"+login+"\x00"+pw)
}

// login opens a TLS session authenticated as login.
func (e *testEnv) login(listener, login string) *client {
	c := e.open(listener)
	c.expect(plain(login, testPassword), "235 ")
	return c
}

var sidRe = `([A-Za-z0-9]{22})`

// matchSID checks line against a pattern where SID stands for a session id
// and returns the id.
func matchSID(t testing.TB, line, pattern string) string {
	t.Helper()
	re := regexp.MustCompile("^" + strings.Replace(regexp.QuoteMeta(pattern), "SID", sidRe, 1) + "$")
	m := re.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("reply %q does not match %q", line, pattern)
	}
	return m[1]
}

func (e *testEnv) spooled() []*spool.Envelope {
	e.t.Helper()
	envs, err := e.spool.Load()
	if err != nil {
		e.t.Fatal(err)
	}
	return envs
}

func (e *testEnv) content(id string) string {
	e.t.Helper()
	r, _, err := e.spool.Message(id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// waitRecord waits for the session record of sid (saved at close).
func (e *testEnv) waitRecord(sid string) *sessionlog.Record {
	e.t.Helper()
	var r *sessionlog.Record
	testutil.WaitFor(e.t, 5*time.Second, "the session record of "+sid, func() bool {
		r = e.log.get(sid)
		return r != nil
	})
	return r
}

// TestAuthReplies pins every AUTH reply of SPEC R4 byte for byte.
func TestAuthReplies(t *testing.T) {
	e := newTestEnv(t)
	cases := []struct {
		name, auth, want string
	}{
		{"wrong password", plain("jan@firma.cz", "wrong"), "535 5.1.0 SID authentication failed"},
		{"unknown login", plain("nikdo@firma.cz", testPassword), "535 5.1.0 SID authentication rejected"},
		{"login not a full address", plain("jan", testPassword), "535 5.1.0 SID authentication rejected"},
		{"login of unhosted domain", plain("jan@seznam.cz", testPassword), "535 5.1.0 SID authentication rejected"},
		{"disabled, right password", plain("zakazany@firma.cz", testPassword), "535 5.1.0 SID authentication rejected access disabled"},
		{"disabled, wrong password", plain("zakazany@firma.cz", "wrong"), "535 5.1.0 SID authentication rejected access disabled"},
		{"LOGIN wrong password", "", "535 5.1.0 SID authentication failed"},
		{"authzid differs", "AUTH PLAIN " + b64("eva@jina.cz\x00jan@firma.cz\x00"+testPassword), "535 5.7.8 SID authorization identity must be empty or equal the login"},
		{"authzid not an address", "AUTH PLAIN " + b64("jan\x00jan@firma.cz\x00"+testPassword), "535 5.7.8 SID authorization identity must be empty or equal the login"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.open("smtp")
			var got string
			if tc.auth == "" {
				c.expect("AUTH LOGIN", "334 ")
				c.expect(b64("jan@firma.cz"), "334 ")
				got = c.cmd(b64("wrong"))
			} else {
				got = c.cmd(tc.auth)
			}
			sid := matchSID(t, got, tc.want)
			// The same session id is in the MAIL refusal of that connection.
			mail := c.cmd("MAIL FROM:<jan@firma.cz>")
			if want := "550 5.1.0 " + sid + " authentication failed"; mail != want {
				t.Fatalf("MAIL after failed AUTH: got %q, want %q", mail, want)
			}
			c.send("QUIT")
			c.conn.Close()
			rec := e.waitRecord(sid)
			if rec.Account != "" {
				t.Fatalf("record account = %q after failed AUTH", rec.Account)
			}
			for _, ev := range rec.Events {
				if strings.Contains(ev.Detail+ev.Reply, testPassword) || strings.Contains(ev.Detail+ev.Reply, "wrong") {
					t.Fatalf("session record holds the password: %+v", ev)
				}
			}
		})
	}
}

func TestUniformFailures(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) { s.Replies, _ = NewReplies(nil, true) }))
	for _, auth := range []string{
		plain("jan@firma.cz", "wrong"),
		plain("nikdo@firma.cz", testPassword),
		plain("zakazany@firma.cz", testPassword),
	} {
		c := e.open("smtp")
		matchSID(t, c.cmd(auth), "535 5.1.0 SID authentication failed")
	}
}

func TestReplyOverride(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) {
		s.Replies, _ = NewReplies(map[string]string{ReplyAuthFailed: "{sid} wrong password, see https://help.example/smtp"}, false)
	}))
	c := e.open("smtp")
	matchSID(t, c.cmd(plain("jan@firma.cz", "bad")), "535 5.1.0 SID wrong password, see https://help.example/smtp")
	if _, err := NewReplies(map[string]string{"no_such_key": "x"}, false); err == nil {
		t.Fatal("unknown reply key accepted")
	}
}

func TestMailBeforeAuth(t *testing.T) {
	e := newTestEnv(t)
	for _, l := range []string{"smtp", "submissions"} {
		c := e.open(l)
		matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz>"), "550 5.1.0 SID authentication failed")
		// SPEC R10: without AUTH no recipient is accepted, for any domain.
		if got := c.cmd("RCPT TO:<eva@jina.cz>"); !strings.HasPrefix(got, "5") {
			t.Fatalf("unauthenticated RCPT: %q", got)
		}
		if got := c.cmd("DATA"); !strings.HasPrefix(got, "5") {
			t.Fatalf("unauthenticated DATA: %q", got)
		}
	}
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages spooled without AUTH", n)
	}
}

// TestAuthNeedsTLS: SPEC R3.
func TestAuthNeedsTLS(t *testing.T) {
	e := newTestEnv(t)
	c := e.dial("smtp")
	c.last()
	ehlo := strings.Join(c.reply0("EHLO client.example"), "\n")
	if strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH offered before STARTTLS:\n%s", ehlo)
	}
	if !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("STARTTLS not offered:\n%s", ehlo)
	}
	if got := c.cmd(plain("jan@firma.cz", testPassword)); !strings.HasPrefix(got, "5") {
		t.Fatalf("AUTH before STARTTLS: %q", got)
	}
	c.starttls()
	ehlo = strings.Join(c.reply0("EHLO client.example"), "\n")
	if !strings.Contains(ehlo, "250-AUTH PLAIN LOGIN") && !strings.Contains(ehlo, "250 AUTH PLAIN LOGIN") {
		t.Fatalf("AUTH PLAIN LOGIN not offered inside TLS:\n%s", ehlo)
	}
	c.expect(plain("jan@firma.cz", testPassword), "235 ")

	// An operator may allow plaintext AUTH on a listener.
	p := e.dial("plain")
	p.last()
	if ehlo := strings.Join(p.reply0("EHLO client.example"), "\n"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("plaintext listener does not offer AUTH:\n%s", ehlo)
	}
	p.expect(plain("jan@firma.cz", testPassword), "235 ")
	// Other mechanisms are not offered or accepted (SPEC R1).
	q := e.open("smtp")
	if got := q.cmd("AUTH CRAM-MD5"); !strings.HasPrefix(got, "504 ") {
		t.Fatalf("AUTH CRAM-MD5: %q", got)
	}
}

func (c *client) reply0(line string) []string {
	c.send(line)
	return c.reply()
}

// TestSenderPolicy covers SPEC R5–R9 at MAIL FROM.
func TestSenderPolicy(t *testing.T) {
	e := newTestEnv(t)
	cases := []struct {
		login, from string
		ok          bool
	}{
		{"jan@firma.cz", "jan@firma.cz", true},
		{"jan@firma.cz", "kdokoli@firma.cz", true},     // any local part (R5)
		{"jan@firma.cz", "JAN@FIRMA.CZ", true},         // case
		{"jan@firma.cz", "info@firma.com", true},       // alias domain
		{"jan@firma.cz", "x@praha.firma.cz", false},    // subdomain (R6)
		{"jan@firma.cz", "eva@jina.cz", false},         // other hosted domain
		{"jan@firma.cz", "jan.novak@seznam.cz", false}, // identity outside webmail (R9)
		{"jan@firma.cz", "someone@gmail.com", false},   // freemail
		{"jan@firma.cz", "jan@firma.cz.evil.com", false},
		{"petr@příklad.cz", "petr@příklad.cz", true},
		{"petr@příklad.cz", "petr@xn--pklad-zsa96e.cz", true},
		{"petr@xn--pklad-zsa96e.cz", "info@PŘÍKLAD.cz", true},
	}
	for _, tc := range cases {
		c := e.login("smtp", tc.login)
		got := c.cmd("MAIL FROM:<" + tc.from + ">")
		if tc.ok {
			if !strings.HasPrefix(got, "250 ") {
				t.Errorf("%s as %s: got %q, want 250", tc.login, tc.from, got)
			}
			continue
		}
		if want := "550 5.1.0 <" + tc.from + "> sender rejected"; got != want {
			t.Errorf("%s as %s: got %q, want %q", tc.login, tc.from, got, want)
		}
	}
}

// sendMessage runs MAIL/RCPT/DATA and returns the reply after the data.
func (c *client) sendMessage(from string, rcpts []string, data string) string {
	c.t.Helper()
	c.expect("MAIL FROM:<"+from+">", "250 ")
	for _, r := range rcpts {
		c.expect("RCPT TO:<"+r+">", "250 ")
	}
	c.expect("DATA", "354 ")
	io.WriteString(c.conn, data)
	io.WriteString(c.conn, ".\r\n")
	return c.last()
}

func msg(headers ...string) string {
	return strings.Join(headers, "\r\n") + "\r\n\r\nHello,\r\n.. a line starting with a dot\r\nbye\r\n"
}

// TestHeaderSenders covers SPEC R7 and R8 at the end of DATA.
func TestHeaderSenders(t *testing.T) {
	e := newTestEnv(t)
	cases := []struct {
		name, from, data, want string
	}{
		{"good", "jan@firma.cz", msg("From: Jan <jan@firma.cz>", "Subject: hi"), "250 2.0.0 SID queued as "},
		{"alias in header", "jan@firma.cz", msg("From: =?utf-8?q?Jan_Nov=C3=A1k?= <jan@firma.com>"), "250 2.0.0 SID queued as "},
		{"foreign header From", "jan@firma.cz", msg("From: jan@gmail.com"), "550 5.1.0 <jan@gmail.com> sender rejected"},
		{"second From address foreign", "jan@firma.cz", msg("From: jan@firma.cz, eva@jina.cz"), "550 5.1.0 <eva@jina.cz> sender rejected"},
		{"Sender foreign", "jan@firma.cz", msg("From: jan@firma.cz", "Sender: boss@gmail.com"), "550 5.1.0 <boss@gmail.com> sender rejected"},
		{"Sender good", "jan@firma.cz", msg("From: jan@firma.cz", "Sender: asistent@firma.com"), "250 2.0.0 SID queued as "},
		{"no From", "jan@firma.cz", msg("Subject: none"), "550 5.6.0 SID message has no From: header"},
		{"two From", "jan@firma.cz", msg("From: jan@firma.cz", "From: jan@firma.cz"), "550 5.6.0 SID message has more than one From: header"},
		{"unparseable From", "jan@firma.cz", msg("From: <<<jan"), "550 5.6.0 SID From: header cannot be parsed: "},
		{"null sender, good From", "", msg("From: jan@firma.cz", "Subject: Read: report"), "250 2.0.0 SID queued as "},
		{"null sender, bad From", "", msg("From: postmaster@seznam.cz"), "550 5.1.0 <postmaster@seznam.cz> sender rejected"},
		{"folded From", "jan@firma.cz", msg("From: Jan Novak", " <jan@firma.cz>"), "250 2.0.0 SID queued as "},
		{"malformed header line", "jan@firma.cz", msg("From: jan@firma.cz", "this is not a header"), "550 5.6.0 SID malformed message header: "},
		// Czech mail clients name the sender in the legacy charsets; the
		// address is what is checked, whatever the charset of the name.
		{"Latin-2 name", "jan@firma.cz", msg("From: =?iso-8859-2?Q?Jan_Nov=E1k?= <jan@firma.cz>"), "250 2.0.0 SID queued as "},
		{"windows-1250 name", "jan@firma.cz", msg("From: =?windows-1250?B?SmFuIE5vduFr?= <jan@firma.cz>"), "250 2.0.0 SID queued as "},
		{"windows-1250 name, foreign address", "jan@firma.cz", msg("From: =?windows-1250?Q?Jan_Nov=E1k?= <ceo@bank.example>"), "550 5.1.0 <ceo@bank.example> sender rejected"},
		{"Latin-2 Sender name, foreign address", "jan@firma.cz", msg("From: jan@firma.cz", "Sender: =?iso-8859-2?Q?=A9ef?= <boss@gmail.com>"), "550 5.1.0 <boss@gmail.com> sender rejected"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.spooled())
			c := e.login("smtp", "jan@firma.cz")
			got := c.sendMessage(tc.from, []string{"eva@example.org"}, tc.data)
			if strings.Contains(tc.want, "SID") {
				if !regexp.MustCompile("^" + strings.Replace(regexp.QuoteMeta(tc.want), "SID", sidRe, 1)).MatchString(got) {
					t.Fatalf("got %q, want %q…", got, tc.want)
				}
			} else if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			after := len(e.spooled())
			if queued := strings.HasPrefix(got, "250 "); queued != (after == before+1) || !queued && after != before {
				t.Fatalf("reply %q but spool went from %d to %d messages", got, before, after)
			}
		})
	}
}

// TestWebmailIdentity: extra identities only from webmail networks (SPEC R9).
func TestWebmailIdentity(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) {
		s.Policy = &policy.Policy{Webmail: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	}))
	c := e.login("smtp", "jan@firma.cz")
	got := c.sendMessage("jan.novak@seznam.cz", []string{"eva@example.org"}, msg("From: jan.novak@seznam.cz"))
	matchSID(t, strings.SplitAfter(got, " queued as ")[0], "250 2.0.0 SID queued as ")
	// Only the account's own identities: another seznam.cz address is refused.
	c2 := e.login("smtp", "jan@firma.cz")
	if got := c2.cmd("MAIL FROM:<petra@seznam.cz>"); got != "550 5.1.0 <petra@seznam.cz> sender rejected" {
		t.Fatalf("foreign address from webmail: %q", got)
	}
	// From elsewhere the identity is refused (TestSenderPolicy runs without
	// webmail networks).
}

// TestQueuedContent checks what is spooled: envelope, Received with the
// session id and RFC 3848 keyword, Message-ID and Date added, body intact.
func TestQueuedContent(t *testing.T) {
	e := newTestEnv(t)
	for _, l := range []string{"smtp", "submissions"} {
		c := e.login(l, "jan@firma.cz")
		body := msg("From: Jan <jan@firma.cz>", "To: eva@example.org", "Subject: test")
		got := c.sendMessage("jan@firma.cz", []string{"eva@example.org", "adam@example.net"}, body)
		m := regexp.MustCompile(`^250 2\.0\.0 ` + sidRe + ` queued as ([0-9a-v]{24})$`).FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("after DATA: %q", got)
		}
		sid, qid := m[1], m[2]
		env, err := e.spool.Envelope(qid)
		if err != nil {
			t.Fatal(err)
		}
		if env.From != "jan@firma.cz" || strings.Join(env.To, ",") != "eva@example.org,adam@example.net" ||
			env.Account != "jan@firma.cz" || env.SessionID != sid || env.ClientIP != "127.0.0.1" {
			t.Fatalf("envelope %+v", env)
		}
		content := e.content(qid)
		wantStart := "Received: from client.example ([127.0.0.1])\r\n\tby mail.test (submitd) with ESMTPSA id " + sid + "\r\n\t(TLS"
		if !strings.HasPrefix(content, wantStart) {
			t.Fatalf("content starts %q, want %q", content[:min(len(content), 200)], wantStart)
		}
		if !regexp.MustCompile(`\r\nMessage-ID: <` + qid + `@mail\.test>\r\n`).MatchString(content) {
			t.Fatalf("no Message-ID added:\n%s", content)
		}
		if !strings.Contains(content, "\r\nDate: ") {
			t.Fatalf("no Date added:\n%s", content)
		}
		// The client's message follows unchanged, dot-unstuffed.
		if !strings.HasSuffix(content, "\r\n"+strings.Replace(body, "\r\n..", "\r\n.", 1)) {
			t.Fatalf("body not intact:\n%q", content)
		}
		c.send("QUIT")
		c.last()
		rec := e.waitRecord(sid)
		if rec.Account != "jan@firma.cz" || len(rec.QueueIDs()) != 1 || rec.QueueIDs()[0] != qid || !strings.HasPrefix(rec.TLS, "TLS") {
			t.Fatalf("session record %+v", rec)
		}
	}
	// A message that has them keeps its own Message-ID and Date.
	c := e.login("smtp", "jan@firma.cz")
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: jan@firma.cz", "Message-ID: <own@firma.cz>", "Date: Mon, 2 Nov 2026 10:00:00 +0100"))
	qid := got[strings.LastIndex(got, " ")+1:]
	content := e.content(qid)
	if strings.Count(content, "Message-ID:") != 1 || strings.Count(content, "Date:") != 1 {
		t.Fatalf("headers duplicated:\n%s", content)
	}
}

// TestSmuggling: every bare CR / bare LF end-of-data lookalike is refused,
// over DATA and BDAT, and nothing is queued (SPEC R16).
func TestSmuggling(t *testing.T) {
	e := newTestEnv(t)
	tricks := []string{"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\n.", "\r\n\n", "bare\nLF", "bare\rCR", "\r"}
	for _, trick := range tricks {
		t.Run(fmt.Sprintf("DATA %q", trick), func(t *testing.T) {
			c := e.login("smtp", "jan@firma.cz")
			data := "From: jan@firma.cz\r\n\r\nfirst" + trick + "MAIL FROM:<jan@firma.cz>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: ceo@bank.example\r\n\r\nsmuggled\r\n"
			got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, data)
			matchSID(t, got, "554 5.6.0 SID message contains a bare CR or LF; lines must end with CRLF")
			// The session goes on normally: nothing smuggled was run.
			c.expect("NOOP", "250 ")
		})
		t.Run(fmt.Sprintf("BDAT %q", trick), func(t *testing.T) {
			c := e.login("smtp", "jan@firma.cz")
			c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
			c.expect("RCPT TO:<eva@example.org>", "250 ")
			data := "From: jan@firma.cz\r\n\r\nfirst" + trick + "second\r\n"
			c.send(fmt.Sprintf("BDAT %d LAST", len(data)))
			io.WriteString(c.conn, data)
			matchSID(t, c.last(), "554 5.6.0 SID message contains a bare CR or LF; lines must end with CRLF")
		})
	}
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
	// Clean BDAT works.
	c := e.login("smtp", "jan@firma.cz")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<eva@example.org>", "250 ")
	d1, d2 := "From: jan@firma.cz\r\n", "\r\nchunked body\r\n"
	c.send(fmt.Sprintf("BDAT %d", len(d1)))
	io.WriteString(c.conn, d1)
	c.last()
	c.send(fmt.Sprintf("BDAT %d LAST", len(d2)))
	io.WriteString(c.conn, d2)
	matchSID(t, strings.SplitAfter(c.last(), "queued as ")[0], "250 2.0.0 SID queued as ")
}

// TestStartTLSInjection: commands pipelined in plaintext after STARTTLS are
// discarded (CVE-2011-0411).
func TestStartTLSInjection(t *testing.T) {
	e := newTestEnv(t)
	c := e.dial("plain")
	c.last()
	c.expect("EHLO client.example", "250 ")
	c.send("STARTTLS\r\n" + plain("jan@firma.cz", testPassword) + "\r\nMAIL FROM:<jan@firma.cz>")
	if got := c.last(); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	// Had the injected AUTH been run, EHLO would be refused or MAIL accepted.
	c.expect("EHLO client.example", "250 ")
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz>"), "550 5.1.0 SID authentication failed")
}

// TestLimits: SPEC R14.
func TestLimits(t *testing.T) {
	e := newTestEnv(t)
	c := e.dial("smtp")
	c.last()
	if ehlo := strings.Join(c.reply0("EHLO x"), "\n"); !strings.Contains(ehlo, "SIZE 65536") {
		t.Fatalf("SIZE not advertised:\n%s", ehlo)
	}

	c = e.login("smtp", "jan@firma.cz")
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz> SIZE=1000000"), "552 5.3.4 SID message is larger than the limit of 65536 bytes")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	for i := 0; i < 5; i++ {
		c.expect(fmt.Sprintf("RCPT TO:<r%d@example.org>", i), "250 ")
	}
	if got := c.cmd("RCPT TO:<r6@example.org>"); !strings.HasPrefix(got, "452 4.5.3 ") {
		t.Fatalf("6th recipient: %q", got)
	}
	c.expect("DATA", "354 ")
	big := "From: jan@firma.cz\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 70)
	io.WriteString(c.conn, big+".\r\n")
	matchSID(t, c.last(), "552 5.3.4 SID message is larger than the limit of 65536 bytes")

	c = e.login("smtp", "jan@firma.cz")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	if got := c.cmd("RCPT TO:<not an address>"); !strings.HasPrefix(got, "5") {
		t.Fatalf("bad recipient: %q", got)
	}
	matchSID(t, c.cmd("NOOP "+strings.Repeat("x", 1200)), "500 5.5.2 SID command line is longer than 1000 bytes")
	// A line longer than the read buffer is dropped whole: its tail is not
	// run as a command.
	matchSID(t, c.cmd("NOOP "+strings.Repeat("x", 10000)+" RSET"), "500 5.5.2 SID command line is longer than 1000 bytes")
	c.expect("NOOP", "250 2.0.0 OK")
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

func TestConnectionsPerIP(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) { s.Limits.MaxConnsPerIP = 2 }))
	a, b := e.dial("smtp"), e.dial("smtp")
	a.last()
	b.last()
	c := e.dial("smtp")
	matchSID(t, c.last(), "421 4.7.0 SID Too many connections from 127.0.0.1, try again later.")
	a.send("QUIT")
	a.last()
	a.conn.Close()
	// The slot is freed when a connection closes.
	for i := 0; ; i++ {
		d := e.dial("smtp")
		if strings.HasPrefix(d.last(), "220 ") {
			break
		}
		if i > 100 {
			t.Fatal("slot not freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConnectionsPerIPv6Prefix: IPv6 clients are limited per /64, since one
// host holds the whole prefix (addresses reported by a trusted proxy).
func TestConnectionsPerIPv6Prefix(t *testing.T) {
	e := newTestEnv(t, withProxy("127.0.0.0/8"), withServer(func(s *Server) { s.Limits.MaxConnsPerIP = 2 }))
	hdr := func(src string) []byte { return []byte("PROXY TCP6 " + src + " 2001:db8:ffff::25 40000 587\r\n") }
	for _, src := range []string{"2001:db8::1", "2001:db8::2"} {
		if g := e.dialFrom("proxied", "", hdr(src)).last(); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("%s: %q", src, g)
		}
	}
	matchSID(t, e.dialFrom("proxied", "", hdr("2001:db8::3")).last(),
		"421 4.7.0 SID Too many connections from 2001:db8::3, try again later.")
	if g := e.dialFrom("proxied", "", hdr("2001:db8:0:1::1")).last(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("another /64: %q", g)
	}
}

func TestIdleTimeout(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) { s.Limits.CommandTimeout = 200 * time.Millisecond }))
	c := e.dial("smtp")
	c.last()
	if got := c.last(); !strings.HasPrefix(got, "421 4.4.2 ") {
		t.Fatalf("idle: %q", got)
	}
}

// TestSessionTimeout: a client that keeps talking is still cut off when the
// whole-session limit runs out (SPEC R14).
func TestSessionTimeout(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) { s.Limits.SessionTimeout = 500 * time.Millisecond }))
	c := e.dial("smtp")
	c.last()
	start := time.Now()
	for {
		c.send("NOOP")
		got := c.last()
		if strings.HasPrefix(got, "421 4.4.2 ") {
			break
		}
		if !strings.HasPrefix(got, "250 ") || time.Since(start) > 10*time.Second {
			t.Fatalf("NOOP after %v: %q", time.Since(start), got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// failingSpool fails at Commit, like a full disk at fsync.
type failingSpool struct{ Spool }

type failingWriter struct{ MessageWriter }

func (f failingSpool) Create(env *spool.Envelope) (MessageWriter, error) {
	w, err := f.Spool.Create(env)
	return failingWriter{w}, err
}

func (f failingWriter) Commit() error {
	f.MessageWriter.Abort()
	return errors.New("fsync: input/output error")
}

// TestSpoolFailure: no 250 unless the message is on disk (SPEC R15).
func TestSpoolFailure(t *testing.T) {
	e := newTestEnv(t)
	e.srv.Spool = failingSpool{e.srv.Spool}
	c := e.login("smtp", "jan@firma.cz")
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: jan@firma.cz"))
	matchSID(t, got, "451 4.3.0 SID message not queued because of a local error, try again later")
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// TestAbandonedAuthCounts: an AUTH exchange cancelled with "*" is a failure.
func TestAbandonedAuthCounts(t *testing.T) {
	g := &countingGuard{}
	e := newTestEnv(t, withServer(func(s *Server) { s.Guard = g }))
	c := e.open("smtp")
	c.expect("AUTH LOGIN", "334 ")
	c.expect("*", "501 ")
	matchSID(t, c.cmd("AUTH PLAIN "+b64("no-nuls-here")), "501 5.5.2 SID malformed AUTH response")
	c.expect("AUTH LOGIN", "334 ")
	c.expect("!!!not-base64", "501 5.5.2 ")
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	if n := g.count(); n != 3 {
		t.Fatalf("guard saw %d failures, want 3", n)
	}
}

type countingGuard struct {
	mu sync.Mutex
	n  int
}

func (g *countingGuard) Blocked(netip.Addr) bool                  { return false }
func (g *countingGuard) Open(netip.Addr) bool                     { return true }
func (g *countingGuard) Begin(netip.Addr, string) (Attempt, bool) { return g, true }
func (g *countingGuard) Succeed()                                 {}
func (g *countingGuard) Fail() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	return false
}
func (g *countingGuard) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestLongHeaderLineEndsNoHeader: a header line as long as a read buffer
// (with the line limit raised) does not end the header section early, which
// would let a From: or Sender: after it past the sender check (SPEC R7).
func TestLongHeaderLineEndsNoHeader(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) {
		s.Limits.MaxHeaderSize = 1 << 20
		s.Limits.MaxMessageSize = 1 << 20
		s.Limits.MaxLineLength = 1 << 20
	}))
	for _, end := range []string{"\r", ""} {
		t.Run(fmt.Sprintf("%q at the buffer end", end), func(t *testing.T) {
			line := "X-Pad: "
			line += strings.Repeat("x", 32<<10-len(line)-len(end)) + end
			for hidden, want := range map[string]string{
				"Sender: ceo@bank.example": "550 5.1.0 <ceo@bank.example> sender rejected",
				"From: ceo@bank.example":   "550 5.6.0 SID message has more than one From: header",
			} {
				c := e.login("smtp", "jan@firma.cz")
				c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
				c.expect("RCPT TO:<eva@example.org>", "250 ")
				data := "From: jan@firma.cz\r\n" + strings.TrimSuffix(line, "\r") + "\r\n" + hidden + "\r\n\r\nbody\r\n"
				c.send(fmt.Sprintf("BDAT %d LAST", len(data)))
				io.WriteString(c.conn, data)
				got := c.last()
				if strings.Contains(want, "SID") {
					matchSID(t, got, want)
				} else if got != want {
					t.Fatalf("%s after a %d-byte line: got %q, want %q", hidden, len(line), got, want)
				}
			}
		})
	}
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// TestSessionRecordBounded: a client repeating refused commands for the whole
// session cannot grow its session record (held in memory until the
// connection closes, then stored) without bound; the messages it queued are
// still all recorded (SPEC R13).
func TestSessionRecordBounded(t *testing.T) {
	e := newTestEnv(t)
	const n = 5000
	c := e.login("smtp", "jan@firma.cz")
	qid := strings.Fields(c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: jan@firma.cz")))[5]
	c.expect("RSET", "250 ")
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "MAIL FROM:<x%d@gmail.com>\r\n", i)
	}
	io.WriteString(c.conn, b.String())
	for i := 0; i < n; i++ {
		c.last()
	}
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: jan@firma.cz"))
	qid2 := strings.Fields(got)[5]
	c.send("QUIT")
	c.last()
	sid := strings.Fields(got)[2]
	rec := e.waitRecord(sid)
	if len(rec.Events) > 1100 {
		t.Fatalf("session record holds %d events after %d commands", len(rec.Events), n)
	}
	if ids := rec.QueueIDs(); len(ids) != 2 || ids[0] != qid || ids[1] != qid2 {
		t.Fatalf("queue ids %q, want %s and %s", ids, qid, qid2)
	}
	if last := rec.Events[len(rec.Events)-1]; last.Kind != "close" {
		t.Fatalf("last event %+v", last)
	}
}

// TestLongLineInData: a message line over the line limit is refused for
// good, saying why (SPEC R14); a temporary error would have the client
// retry the same message forever.
func TestLongLineInData(t *testing.T) {
	e := newTestEnv(t)
	for _, where := range []string{"header", "body"} {
		c := e.login("smtp", "jan@firma.cz")
		long := "X: " + strings.Repeat("x", 1200)
		data := msg("From: jan@firma.cz", long)
		if where == "body" {
			data = msg("From: jan@firma.cz") + long + "\r\n"
		}
		got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, data)
		matchSID(t, got, "554 5.6.0 SID message has a line longer than 1000 bytes")
	}
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// TestBDATReset: RSET (or EHLO) while a BDAT message is still open aborts it
// cleanly: nothing is queued, and the session goes on.
func TestBDATReset(t *testing.T) {
	e := newTestEnv(t)
	for _, cmd := range []string{"RSET", "EHLO client.example"} {
		for i := 0; i < 20; i++ {
			c := e.login("smtp", "jan@firma.cz")
			c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
			c.expect("RCPT TO:<eva@example.org>", "250 ")
			chunk := "From: jan@firma.cz\r\n\r\nbody\r\n"
			io.WriteString(c.conn, fmt.Sprintf("BDAT %d\r\n%s%s\r\n", len(chunk), chunk, cmd))
			c.last()
			c.last()
			c.expect("NOOP", "250 ")
			c.conn.Close()
		}
	}
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// lockedBuffer collects log output written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogLines: every log line of a session carries its session id (SPEC
// R12), and neither a password nor an AUTH payload is ever logged (R13).
func TestLogLines(t *testing.T) {
	logs := &lockedBuffer{}
	e := newTestEnv(t, withServer(func(s *Server) {
		s.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}))
	c := e.open("smtp")
	sid := matchSID(t, c.cmd(plain("jan@firma.cz", "Wrong-Secret-1")), "535 5.1.0 SID authentication failed")
	c.expect("AUTH LOGIN", "334 ")
	c.expect(b64("jan@firma.cz"), "334 ")
	c.expect(b64(testPassword), "235 ")
	c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: jan@firma.cz"))
	c.send("QUIT")
	c.last()
	e.waitRecord(sid)
	out := logs.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 {
		t.Fatalf("only %d log lines:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.Contains(l, "session="+sid) {
			t.Errorf("log line without the session id: %s", l)
		}
	}
	for _, secret := range []string{"Wrong-Secret-1", testPassword, b64(testPassword), b64("\x00jan@firma.cz\x00Wrong-Secret-1")} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
}
