package smtpd

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/guard"
	"submitd/internal/loginwatch"
	"submitd/internal/password"
)

// withLoginWatch gives the server a loginwatch.Watch with cfg on the env's
// database, on the guard's clock when withGuard came first, and counts the
// password checks the server makes in *checks when checks is not nil.
func withLoginWatch(cfg loginwatch.Config, w **loginwatch.Watch, checks *atomic.Int64) envOption {
	return func(e *testEnv) {
		e.t.Helper()
		st, err := loginwatch.NewSQLite(context.Background(), e.db)
		if err != nil {
			e.t.Fatal(err)
		}
		if e.clock != nil {
			cfg.Now = e.clock.Now
		}
		*w = loginwatch.New(cfg, st)
		e.srv.Logins = *w
		if checks != nil {
			e.srv.Verify = func(hash, pw string) (bool, error) {
				checks.Add(1)
				return password.Verify(hash, pw)
			}
		}
	}
}

// BenchmarkAcceptLoginWatchPaired runs whole sessions (BenchmarkAccept's)
// on a server without the login watch and on one with it in turn, swapping
// which goes first, and reports each one's time per session and their
// ratio (with / without): what counting per login costs the accept path.
//
//	go test -run '^$' -bench AcceptLoginWatchPaired ./internal/smtpd/
func BenchmarkAcceptLoginWatchPaired(b *testing.B) {
	var w *loginwatch.Watch
	envs := [2]*testEnv{newTestEnv(b), newTestEnv(b, withLoginWatch(loginwatch.Config{}, &w, nil))}
	var took [2]time.Duration
	i := 0
	for b.Loop() {
		for k := range 2 {
			j := (i + k) % 2
			start := time.Now()
			acceptOne(b, envs[j])
			took[j] += time.Since(start)
		}
		i++
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(i), "ns/session-off")
	b.ReportMetric(float64(took[1].Nanoseconds())/float64(i), "ns/session-on")
	b.ReportMetric(float64(took[1])/float64(took[0]), "ratio")
}

// sessionFrom connects to the "plain" listener from the loopback address
// local, checks the greeting and says EHLO.
func (e *testEnv) sessionFrom(local string) *client {
	e.t.Helper()
	c := e.dialFrom("plain", local, nil)
	if g := c.last(); !strings.HasPrefix(g, "220 ") {
		e.t.Fatalf("greeting from %s: %q", local, g)
	}
	c.expect("EHLO client.example", "250 ")
	return c
}

// TestLoginUnderAttack is the distributed-guessing case of SPEC R21 over
// real SMTP: wrong passwords for one login from 50 networks (127.1.N.1,
// each its own /24) put it under attack at the 50th; the owner still logs
// in from the network of an earlier success, while a new network is refused
// with a wrong password's exact reply and no password check, and the
// session record says why; the refusals count with the guard per IP (SPEC
// R11); when the attack state has run out, the new network logs in.
func TestLoginUnderAttack(t *testing.T) {
	var w *loginwatch.Watch
	var checks atomic.Int64
	e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 10, Window: time.Hour, BlockFor: time.Hour}),
		withLoginWatch(loginwatch.Config{MaxFailures: 50, Window: time.Hour, AttackFor: time.Hour}, &w, &checks))

	// The owner logged in from the office network before the attack.
	c := e.sessionFrom("127.0.0.1")
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	c.expect("QUIT", "221 ")

	for n := 1; n <= 50; n++ {
		if n == 50 {
			if l, _ := w.Get("jan@firma.cz"); l.UnderAttack {
				t.Fatalf("under attack after 49 failures: %+v", l)
			}
		}
		c := e.sessionFrom(fmt.Sprintf("127.1.%d.1", n))
		matchSID(t, c.cmd(plain("Jan@FIRMA.cz", fmt.Sprintf("guess-%d", n))), "535 5.1.0 SID authentication failed")
		c.expect("QUIT", "221 ")
		e.clock.Advance(time.Second)
	}
	l, _ := w.Get("jan@firma.cz")
	if !l.UnderAttack || l.IPs != 50 || l.Failures != 50 {
		t.Fatalf("after 50 failures from 50 networks: %+v", l)
	}

	// Another address in the office's /24, with the right password.
	c = e.sessionFrom("127.0.0.2")
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	c.expect("QUIT", "221 ")

	// A new network: refused whatever the password, and none is checked.
	before := checks.Load()
	c = e.sessionFrom("127.1.51.1")
	sid := matchSID(t, c.cmd(plain("jan@firma.cz", testPassword)), "535 5.1.0 SID authentication failed")
	matchSID(t, c.cmd(plain("jan@firma.cz", "guess-51")), "535 5.1.0 SID authentication failed")
	c.expect("QUIT", "221 ")
	if n := checks.Load() - before; n != 0 {
		t.Fatalf("%d password checks for a refused network", n)
	}
	rec := e.waitRecord(sid)
	var why string
	for _, ev := range rec.Events {
		if ev.Kind == loginwatch.EventKind {
			why = ev.Detail
		}
	}
	want := "login jan@firma.cz under attack from 51 IPs since 2025-06-01 08:00 UTC; this network 127.1.51.0/24 has no earlier success"
	if why != want {
		t.Fatalf("record says %q, want %q (events %+v)", why, want, rec.Events)
	}
	// Another login is not affected.
	c = e.sessionFrom("127.1.51.1")
	c.expect(plain("eva@jina.cz", testPassword), "235 ")
	c.expect("QUIT", "221 ")

	// Each refusal is a failure of its IP: ten of them block it.
	c = e.sessionFrom("127.1.52.1")
	for range 9 {
		matchSID(t, c.cmd(plain("jan@firma.cz", "x")), "535 5.1.0 SID authentication failed")
	}
	matchSID(t, c.cmd(plain("jan@firma.cz", "x")), "535 5.1.0 SID authentication failed")
	expectClosed(t, c)
	c = e.dialFrom("plain", "127.1.52.1", nil)
	matchSID(t, c.last(), blockedLine("127.1.52.1"))

	// The owner's office is never refused, even while its IP has failures
	// of its own with the guard.
	c = e.sessionFrom("127.0.0.3")
	for range 9 {
		matchSID(t, c.cmd(plain("jan@firma.cz", "typo")), "535 5.1.0 SID authentication failed")
	}
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	c.expect("QUIT", "221 ")

	// The attack stops; an hour after its last refusal the state is over.
	l, _ = w.Get("jan@firma.cz")
	e.clock.Set(l.Until)
	c = e.sessionFrom("127.1.51.1")
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	c.expect("QUIT", "221 ")
	if got := w.List(false); len(got) != 0 {
		t.Fatalf("still under attack: %+v", got)
	}
}

// TestLoginWatchCountsOnlyAccounts: made-up logins and a disabled account
// leave nothing in the login watch, so a botnet spraying random logins
// makes it hold nothing; a wrong password of a real account counts.
func TestLoginWatchCountsOnlyAccounts(t *testing.T) {
	var w *loginwatch.Watch
	e := newTestEnv(t, withLoginWatch(loginwatch.Config{}, &w, nil))
	c := e.sessionFrom("127.1.1.1")
	for i := range 5 {
		matchSID(t, c.cmd(plain(fmt.Sprintf("nikdo%d@firma.cz", i), "x")), "535 5.1.0 SID authentication rejected")
	}
	matchSID(t, c.cmd(plain("zakazany@firma.cz", "x")), "535 5.1.0 SID authentication rejected access disabled")
	if got := w.List(true); len(got) != 0 {
		t.Fatalf("unknown or disabled logins held: %+v", got)
	}
	matchSID(t, c.cmd(plain("eva@jina.cz", "x")), "535 5.1.0 SID authentication failed")
	if got := w.List(true); len(got) != 1 || got[0].Login != "eva@jina.cz" || got[0].Failures != 1 {
		t.Fatalf("after a wrong password: %+v", got)
	}
}
