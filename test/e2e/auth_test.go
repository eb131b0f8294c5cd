package e2e

import (
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// authReply logs in over implicit TLS and returns the reply to AUTH.
func authReply(t *testing.T, s *server, login, pw string) string {
	t.Helper()
	c := openRaw(t, s.subs, nil, true)
	l := c.cmd(authPlain(login, pw))
	c.cmd("QUIT")
	return l
}

// TestAuthCacheFollowsCLI: a repeated login is answered from the credential
// cache (no hash), and a password change, a hash change (the same password
// set again, hashed with a new salt) and a disable made with the CLI while
// the server runs drop the account's cached answers at once: the old
// password stops working, and after "account enable" the password is
// hashed again rather than answered from the cache. The account's hash is
// argon2id, the default scheme, whose cost the cache saves.
func TestAuthCacheFollowsCLI(t *testing.T) {
	s := newServer(t, "")
	s.setupFirma()
	s.start()
	const jan = "jan@firma.cz"
	const ok, wrong = "235 ", "535 5.1.0 "

	// logs waits for the server's log to hold n lines with text.
	logs := func(text string, n int) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, "log lines "+text, func() bool {
			return strings.Count(s.log.String(), text) >= n
		})
		if got := strings.Count(s.log.String(), text); got != n {
			t.Fatalf("%d log lines %s, want %d:\n%s", got, text, n, s.log)
		}
	}
	login := func(pw, want, checked string, n int) {
		t.Helper()
		if got := authReply(t, s, jan, pw); !strings.HasPrefix(got, want) {
			t.Fatalf("AUTH %s with %q: %q, want %q…", jan, pw, got, want)
		}
		if checked != "" {
			logs(`checked="`+checked+`"`, n)
		}
	}
	dropped := func(change string, n int) {
		t.Helper()
		logs(`msg="auth: cached credentials dropped" account=jan@firma.cz change=`+change, n)
	}

	login(e2ePassword, ok, "password hash", 1)
	login(e2ePassword, ok, "credential cache", 1)
	login(e2ePassword, ok, "credential cache", 2)

	// A password change.
	s.mustCLI("Nove-heslo 43\n", "account", "passwd", jan)
	dropped("password", 1)
	login(e2ePassword, wrong, "", 0)
	login("Nove-heslo 43", ok, "password hash", 2)
	login("Nove-heslo 43", ok, "credential cache", 3)

	// A hash change: the same password again, with a new salt.
	s.mustCLI("Nove-heslo 43\n", "account", "passwd", jan)
	dropped("password", 2)
	login("Nove-heslo 43", ok, "password hash", 3)
	login("Nove-heslo 43", ok, "credential cache", 4)

	// A disable, then an enable: the cached answer is gone, so the
	// password is checked again.
	s.mustCLI("", "account", "disable", jan)
	dropped("access", 1)
	if got := authReply(t, s, jan, "Nove-heslo 43"); !strings.HasPrefix(got, wrong) || !strings.HasSuffix(got, "authentication rejected access disabled") {
		t.Fatalf("AUTH of a disabled account: %q", got)
	}
	s.mustCLI("", "account", "enable", jan)
	login("Nove-heslo 43", ok, "password hash", 4)
	login("Nove-heslo 43", ok, "credential cache", 5)
}
