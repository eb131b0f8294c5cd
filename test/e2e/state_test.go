package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/pgdb/pgtest"
	"submitd/internal/redisconn"
	"submitd/internal/testutil"
)

// The tests in this file kill "submitd serve" with SIGKILL, as a crash or a
// power cut would, and start it again on what it left (issue 19): a sending
// window, the containment volume count and an R21 under-attack state are
// all still there, seen through SMTP replies and the CLI; on PostgreSQL and
// Redis a second node, with a data_dir of its own, sees them as well.

// stateConfig has no limit of the messages an hour, so that the volume
// signal trips at 3 messages in an hour even without a history (jan gets 3
// recipients an hour from an override, newStateServer); 5 wrong passwords
// from new networks put a login under attack.
const stateConfig = noSendingLimits + `[contain]
action = "hold"
rise_floor = 3
limit_hits = 0
bounce_share = 0.0
networks = 0
[login_guard]
max_failures = 5
`

// fillState, on a running server: jan spends his 3 recipients of the hour
// in one message, petr sends 2 messages (one below the volume trip), and
// 5 wrong passwords for jan from 5 new networks put his login under attack.
// None of it trips anything yet.
func fillState(t *testing.T, s *server) {
	t.Helper()
	c := openRaw(t, s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	for _, to := range []string{"a", "b", "c"} {
		c.expect("RCPT TO:<"+to+"@example.org>", "250 ")
	}
	c.expect("DATA", "354 ")
	c.write("From: jan@firma.cz\r\nSubject: three\r\n\r\nHello.\r\n.\r\n")
	c.expect("", "250 ")
	c.expect("QUIT", "221 ")

	p := openRaw(t, s.subs, nil, true)
	p.expect(authPlain("petr@firma.cz", e2ePassword), "235 ")
	for i := 1; i <= 2; i++ {
		if got := p.send("petr@firma.cz", fmt.Sprintf("lead%d@example.org", i), fmt.Sprintf("From: petr@firma.cz\r\nSubject: %d\r\n\r\nHi.\r\n", i)); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("petr's message %d: %q", i, got)
		}
	}
	p.expect("QUIT", "221 ")

	for n := 1; n <= 5; n++ {
		g := dialRaw(t, s.subs, fmt.Sprintf("127.1.%d.1", n), nil, true)
		g.expect("", "220 ")
		g.expect("EHLO bot.example", "250 ")
		matchReply(t, g.cmd(authPlain("jan@firma.cz", fmt.Sprintf("guess-%d", n))), "535 5.1.0 SID authentication failed")
		g.nc.Close()
	}
	if out := s.mustCLI("", "logins", "under-attack"); !strings.HasPrefix(out, "jan@firma.cz\t5\t5\t") {
		t.Fatalf("submitd logins under-attack before the kill: %q", out)
	}
}

// checkState, on a server started after the kill: jan's window is still
// full, his login still under attack for new networks, petr's third
// message trips the volume signal and he is held.
func checkState(t *testing.T, s *server) {
	t.Helper()
	c := openRaw(t, s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	if got := c.cmd("RCPT TO:<d@example.org>"); !windowFullRe.MatchString(got) {
		t.Fatalf("jan's fourth recipient of the hour: %q", got)
	}
	c.expect("QUIT", "221 ")

	g := dialRaw(t, s.subs, "127.1.9.1", nil, true)
	g.expect("", "220 ")
	g.expect("EHLO owner.example", "250 ")
	matchReply(t, g.cmd(authPlain("jan@firma.cz", e2ePassword)), "535 5.1.0 SID authentication failed")
	g.nc.Close()
	if out := s.mustCLI("", "logins", "under-attack"); !strings.HasPrefix(out, "jan@firma.cz\t6\t6\t") {
		t.Fatalf("submitd logins under-attack after the restart: %q", out)
	}

	p := openRaw(t, s.subs, nil, true)
	p.expect(authPlain("petr@firma.cz", e2ePassword), "235 ")
	p.expect("MAIL FROM:<petr@firma.cz>", "250 ")
	p.expect("RCPT TO:<lead3@example.org>", "250 ")
	p.expect("DATA", "354 ")
	// The message that trips the signal; its 250 and the close of the
	// session race.
	p.write("From: petr@firma.cz\r\nSubject: 3\r\n\r\nHi.\r\n.\r\n")
	testutil.WaitFor(t, 30*time.Second, "petr held", func() bool {
		out, _, code := s.cli("", "held", "show", "petr@firma.cz")
		return code == 0 && strings.Contains(out, "Signal:         volume")
	})
	if out := s.mustCLI("", "held", "show", "petr@firma.cz"); !strings.Contains(out, "3 messages in the last hour") {
		t.Fatalf("held show after the restart:\n%s", out)
	}
}

// noSendingLimits turns off the limits of messages and recipients an hour
// and a day, for accounts and domains, which would otherwise stop an
// account below the volume signal's trip on a fresh data_dir.
const noSendingLimits = `[sending]
messages_per_hour = 0
recipients_per_hour = 0
recipients_per_day = 0
[sending.domain]
messages_per_hour = 0
recipients_per_hour = 0
recipients_per_day = 0
`

// windowFullRe is the refusal of SPEC R19 of jan's fourth recipient.
var windowFullRe = regexp.MustCompile(`^451 4\.7\.1 [A-Za-z0-9]{22} sending limit reached for jan@firma\.cz: 3 recipients per hour; try again after \d\d:\d\d$`)

// newStateServer is a server on stateConfig and extra; with setup, the
// directory gets firma.cz's accounts, petr@firma.cz, and jan's limit of 3
// recipients an hour.
func newStateServer(t *testing.T, extra string, setup bool) *server {
	t.Helper()
	s := newServer(t, stateConfig+extra)
	if setup {
		s.setupFirma()
		s.mustCLI(e2ePassword+"\n", "account", "add", "petr@firma.cz")
		s.mustCLI("", "sending", "set", "jan@firma.cz", "recipients_per_hour=3")
	}
	return s
}

// TestStateSurvivesKill: on one node with SQLite, what was counted before
// a SIGKILL is there after the restart, once saved (within 2s).
func TestStateSurvivesKill(t *testing.T) {
	s := newStateServer(t, "", true)
	s.start()
	fillState(t, s)

	db := testutil.OpenDBIn(t, filepath.Join(s.dir, "data"))
	count := func(q string) (n int) {
		if err := db.QueryRow(q).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	testutil.WaitFor(t, 20*time.Second, "the state saved", func() bool {
		return count(`SELECT COALESCE(SUM(n), 0) FROM sending_windows WHERE key = 'recipients_per_hour:a:jan@firma.cz'`) == 3 &&
			count(`SELECT COALESCE(SUM(n), 0) FROM contain_counts WHERE account = 'petr@firma.cz' AND kind = 's'`) == 2 &&
			count(`SELECT COUNT(*) FROM login_failures WHERE login = 'jan@firma.cz' AND json_extract(state, '$.total') = 5`) == 1
	})
	s.kill()
	s.start()
	checkState(t, s)
}

// TestStateSharedByNodes: with [store] driver = "postgres" and [guard]
// store = "redis", node a counts, is killed, and node b, started on its own
// empty data_dir, carries on with the same figures.
func TestStateSharedByNodes(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	rs := testutil.StartRedis(t)
	extra := fmt.Sprintf("[store]\ndriver = \"postgres\"\ndsn = %q\n[guard]\nstore = \"redis\"\nredis_url = %q\n", dsn, rs.URL())
	a := newStateServer(t, extra, true)
	a.start()
	fillState(t, a)

	pool := pgtest.PoolOn(t, dsn)
	rc, err := redisconn.Open(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx := context.Background()
	testutil.WaitFor(t, 20*time.Second, "the state saved", func() bool {
		var n int
		if err := pool.QueryRow(ctx, `SELECT COALESCE(SUM(n), 0) FROM contain_counts WHERE account = 'petr@firma.cz' AND kind = 's'`).Scan(&n); err != nil || n != 2 {
			return false
		}
		raw, err := rc.HGet(ctx, "{loginwatch}:logins", "jan@firma.cz").Result()
		var saved struct{ Total int }
		return err == nil && json.Unmarshal([]byte(raw), &saved) == nil && saved.Total == 5
	})
	a.kill()

	b := newStateServer(t, extra, false)
	b.start()
	checkState(t, b)
}
