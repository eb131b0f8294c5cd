package smtpd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"submitd/internal/directory"
	"submitd/internal/sending"
	"submitd/internal/testutil"
)

// limitStart is the clock's start in the limit tests: the middle of a
// minute, so a test sees that the window frees a whole minute's slots at
// the minute's end plus the window.
var limitStart = time.Date(2026, 3, 2, 13, 7, 30, 0, time.UTC)

// limitEnv is a test server with the real limiter: overrides from the
// env's directory, the recipient history in its database, on a clock the
// test moves.
type limitEnv struct {
	*testEnv
	lim   *sending.Limiter
	hist  *sending.SQLiteHistory
	clock *testutil.Clock
	// hits are what OnLimit was told, as "account limit HH:MM:SS".
	mu   sync.Mutex
	hits []string
}

// newLimitEnv starts a server whose accounts have the limits acct and
// domains dom.
func newLimitEnv(t *testing.T, acct, dom sending.Limits) *limitEnv {
	t.Helper()
	le := &limitEnv{clock: testutil.NewClock(limitStart)}
	le.testEnv = newTestEnv(t, func(e *testEnv) {
		h, err := sending.NewSQLiteHistory(context.Background(), e.db)
		if err != nil {
			t.Fatal(err)
		}
		le.hist = h
		le.lim = sending.New(sending.Config{Account: acct, Domain: dom, Overrides: e.dir, History: h, Now: le.clock.Now})
		le.lim.OnLimit(func(account, limit string, at time.Time) {
			le.mu.Lock()
			le.hits = append(le.hits, account+" "+limit+" "+at.Format("15:04:05"))
			le.mu.Unlock()
		})
		e.srv.Limiter = LimiterOf(le.lim)
	})
	ctx := context.Background()
	if err := le.dir.AddAccount(ctx, "marie@firma.cz", testHash); err != nil {
		t.Fatal(err)
	}
	return le
}

// hitsSeen returns what OnLimit was told so far.
func (le *limitEnv) hitsSeen() []string {
	le.mu.Lock()
	defer le.mu.Unlock()
	return append([]string(nil), le.hits...)
}

// data sends a message's content after a 354 and returns the reply.
func (c *client) data(content string) string {
	c.t.Helper()
	c.expect("DATA", "354 ")
	io.WriteString(c.conn, content+".\r\n")
	return c.last()
}

// rcpts returns n recipient addresses that start with prefix.
func rcpts(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d@example.org", prefix, i)
	}
	return out
}

// limitReply is the refusal of SPEC R19 with SID for the session id.
func limitReply(name, limit, until string) string {
	return "451 4.7.1 SID sending limit reached for " + name + ": " + limit + "; try again after " + until
}

// TestSendingLimitMessagesPerHour: N messages are accepted in the hour,
// MAIL of the N+1st gets the reply naming the limit and the minute a slot
// frees, and the rolling window frees it exactly then.
func TestSendingLimitMessagesPerHour(t *testing.T) {
	e := newLimitEnv(t, sending.Limits{sending.MessagesPerHour: 3}, sending.Limits{})
	c := e.login("smtp", "jan@firma.cz")
	from := "jan@firma.cz"
	body := msg("From: jan@firma.cz")
	// Two at 13:07:30, one at 13:40:10.
	c.sendMessage(from, []string{"a@example.org"}, body)
	c.sendMessage(from, []string{"b@example.org"}, body)
	e.clock.Set(time.Date(2026, 3, 2, 13, 40, 10, 0, time.UTC))
	if got := c.sendMessage(from, []string{"c@example.org"}, body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("third message: %q", got)
	}
	want := limitReply("jan@firma.cz", "3 messages per hour", "14:07")
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz>"), want)
	// One second before 14:07 the first minute is still in the window.
	e.clock.Set(time.Date(2026, 3, 2, 14, 6, 59, 0, time.UTC))
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz>"), want)
	// At 14:07 the two messages of 13:07 leave it: two slots, no more.
	e.clock.Set(time.Date(2026, 3, 2, 14, 7, 0, 0, time.UTC))
	for range 2 {
		c.sendMessage(from, []string{"d@example.org"}, body)
	}
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz>"), limitReply("jan@firma.cz", "3 messages per hour", "14:40"))
	if got := len(e.spooled()); got != 5 {
		t.Fatalf("%d messages queued, want 5", got)
	}
	hits := e.hitsSeen()
	if len(hits) != 3 || hits[0] != "jan@firma.cz messages_per_hour 13:40:10" || hits[2] != "jan@firma.cz messages_per_hour 14:07:00" {
		t.Fatalf("OnLimit was told %q", hits)
	}
}

// TestSendingLimitRecipients: recipients count at RCPT, one by one; the
// recipient over the limit is refused while those before it stay, so the
// message goes to them and the rest waits.
func TestSendingLimitRecipients(t *testing.T) {
	for _, tc := range []struct {
		lim    sending.Limit
		phrase string
		window time.Duration
	}{
		{sending.RecipientsPerHour, "7 recipients per hour", time.Hour},
		{sending.RecipientsPerDay, "7 recipients per day", 24 * time.Hour},
	} {
		t.Run(tc.lim.Key(), func(t *testing.T) {
			var l sending.Limits
			l[tc.lim] = 7
			e := newLimitEnv(t, l, sending.Limits{})
			c := e.login("smtp", "jan@firma.cz")
			body := msg("From: jan@firma.cz")
			c.sendMessage("jan@firma.cz", rcpts("x", 5), body)
			e.clock.Advance(10 * time.Minute)
			c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
			c.expect("RCPT TO:<y0@example.org>", "250 ")
			// The same recipient again is the same recipient.
			c.expect("RCPT TO:<y0@example.org>", "250 ")
			c.expect("RCPT TO:<y1@example.org>", "250 ")
			until := limitStart.Add(tc.window).Format("15:04")
			matchSID(t, c.cmd("RCPT TO:<y2@example.org>"), limitReply("jan@firma.cz", tc.phrase, until))
			if got := c.data(body); !strings.HasPrefix(got, "250 ") {
				t.Fatalf("DATA to the recipients within the limit: %q", got)
			}
			envs := e.spooled()
			if len(envs) != 2 {
				t.Fatalf("%d messages queued, want 2", len(envs))
			}
			// The window slides: a minute before it frees the first
			// message's five, still nothing; at that minute, five.
			e.clock.Set(limitStart.Add(tc.window - time.Minute))
			c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
			matchSID(t, c.cmd("RCPT TO:<z0@example.org>"), limitReply("jan@firma.cz", tc.phrase, until))
			e.clock.Set(limitStart.Add(tc.window).Truncate(time.Minute))
			for _, r := range rcpts("z", 5) {
				c.expect("RCPT TO:<"+r+">", "250 ")
			}
			if got := c.data(body); !strings.HasPrefix(got, "250 ") {
				t.Fatalf("DATA after the window slid: %q", got)
			}
			c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
			matchSID(t, c.cmd("RCPT TO:<z9@example.org>"), limitReply("jan@firma.cz", tc.phrase, limitStart.Add(10*time.Minute+tc.window).Format("15:04")))
		})
	}
}

// TestSendingLimitRefusedMessageCountsNothing: a message refused at DATA,
// one reset with RSET and one cut off by a dropped connection give their
// counts back, so the client's retry is counted once.
func TestSendingLimitRefusedMessageCountsNothing(t *testing.T) {
	e := newLimitEnv(t, sending.Limits{sending.MessagesPerHour: 1, sending.RecipientsPerHour: 2}, sending.Limits{})
	c := e.login("smtp", "jan@firma.cz")
	// Refused at the end of DATA: no From: header.
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<a@example.org>", "250 ")
	c.expect("RCPT TO:<b@example.org>", "250 ")
	if got := c.data(msg("Subject: no from")); !strings.HasPrefix(got, "550 ") {
		t.Fatalf("message without From: %q", got)
	}
	// Reset after RCPT.
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<a@example.org>", "250 ")
	c.expect("RSET", "250 ")
	// Cut off in the middle of DATA.
	d := e.login("smtp", "jan@firma.cz")
	d.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	d.expect("RCPT TO:<a@example.org>", "250 ")
	d.expect("DATA", "354 ")
	io.WriteString(d.conn, "From: jan@firma.cz\r\n\r\nhalf a mess")
	d.conn.Close()
	// BDAT, then the session ends without the last chunk.
	f := e.login("smtp", "jan@firma.cz")
	f.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	f.expect("RCPT TO:<a@example.org>", "250 ")
	io.WriteString(f.conn, "BDAT 22\r\nFrom: jan@firma.cz\r\n\r\n")
	if got := f.last(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("BDAT chunk: %q", got)
	}
	f.expect("QUIT", "221 ")

	// The whole budget is there for the retry, once the server has seen
	// the connections go.
	testutil.WaitFor(t, 5*time.Second, "the cut-off messages' counts to be given back", func() bool {
		u, _, err := e.lim.Usage("jan@firma.cz", "firma.cz")
		return err == nil && u.Used == [sending.NumLimits]int64{}
	})
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<a@example.org>", "250 ")
	c.expect("RCPT TO:<b@example.org>", "250 ")
	if got := c.data(msg("From: jan@firma.cz")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("retry: %q", got)
	}
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz>"), limitReply("jan@firma.cz", "1 messages per hour", "14:07"))
}

// TestSendingLimitDomain: a domain's limit sums every account of it and
// every alias they send as; the refusal names the domain, and another
// domain's accounts do not count.
func TestSendingLimitDomain(t *testing.T) {
	e := newLimitEnv(t, sending.Limits{}, sending.Limits{sending.RecipientsPerHour: 6, sending.MessagesPerHour: 3})
	jan := e.login("smtp", "jan@firma.cz")
	marie := e.login("smtp", "marie@firma.cz")
	eva := e.login("smtp", "eva@jina.cz")
	jan.sendMessage("jan@firma.cz", rcpts("j", 2), msg("From: jan@firma.cz"))
	// Sent as the alias domain: still firma.cz's budget.
	jan.sendMessage("jan@firma.com", rcpts("k", 2), msg("From: jan@firma.com"))
	e.clock.Advance(5 * time.Minute)
	marie.expect("MAIL FROM:<marie@firma.cz>", "250 ")
	marie.expect("RCPT TO:<m0@example.org>", "250 ")
	marie.expect("RCPT TO:<m1@example.org>", "250 ")
	matchSID(t, marie.cmd("RCPT TO:<m2@example.org>"), limitReply("firma.cz", "6 recipients per hour", "14:07"))
	if got := marie.data(msg("From: marie@firma.cz")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("marie's message: %q", got)
	}
	// Three messages from firma.cz in the hour: the fourth waits.
	matchSID(t, jan.cmd("MAIL FROM:<jan@firma.cz>"), limitReply("firma.cz", "3 messages per hour", "14:07"))
	eva.sendMessage("eva@jina.cz", rcpts("e", 5), msg("From: eva@jina.cz"))
	hits := e.hitsSeen()
	if len(hits) != 2 || hits[0] != "marie@firma.cz domain.recipients_per_hour 13:12:30" || hits[1] != "jan@firma.cz domain.messages_per_hour 13:12:30" {
		t.Fatalf("OnLimit was told %q", hits)
	}
}

// TestSendingLimitOverrides: an override on an account or a domain replaces
// the configured limit, takes effect when the directory's change log says
// so, and a cleared override gives the configured limit back.
func TestSendingLimitOverrides(t *testing.T) {
	e := newLimitEnv(t, sending.Limits{sending.RecipientsPerHour: 2}, sending.Limits{sending.RecipientsPerHour: 100})
	ctx := context.Background()
	w, err := directory.NewWatcher(ctx, e.dir, directory.WatcherConfig{}, e.srv.Log)
	if err != nil {
		t.Fatal(err)
	}
	w.Subscribe(e.lim.DirectoryChanged)
	apply := func() {
		t.Helper()
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c := e.login("smtp", "jan@firma.cz")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<a0@example.org>", "250 ")
	c.expect("RCPT TO:<a1@example.org>", "250 ")
	matchSID(t, c.cmd("RCPT TO:<a2@example.org>"), limitReply("jan@firma.cz", "2 recipients per hour", "14:07"))

	// Support raises jan's limit.
	if err := e.dir.SetSendingLimits(ctx, "jan@firma.cz", map[string]int64{"recipients_per_hour": 4}); err != nil {
		t.Fatal(err)
	}
	apply()
	c.expect("RCPT TO:<a2@example.org>", "250 ")
	c.expect("RCPT TO:<a3@example.org>", "250 ")
	matchSID(t, c.cmd("RCPT TO:<a4@example.org>"), limitReply("jan@firma.cz", "4 recipients per hour", "14:07"))
	// Marie still has the configured 2.
	m := e.login("smtp", "marie@firma.cz")
	m.expect("MAIL FROM:<marie@firma.cz>", "250 ")
	m.expect("RCPT TO:<b0@example.org>", "250 ")
	m.expect("RCPT TO:<b1@example.org>", "250 ")
	matchSID(t, m.cmd("RCPT TO:<b2@example.org>"), limitReply("marie@firma.cz", "2 recipients per hour", "14:07"))

	// The domain's override lowers firma.cz below what jan and marie hold.
	if err := e.dir.SetSendingLimits(ctx, "firma.cz", map[string]int64{"recipients_per_hour": 6}); err != nil {
		t.Fatal(err)
	}
	// Turning jan's own limit off leaves the domain's.
	if err := e.dir.SetSendingLimits(ctx, "jan@firma.cz", map[string]int64{"recipients_per_hour": 0}); err != nil {
		t.Fatal(err)
	}
	apply()
	matchSID(t, c.cmd("RCPT TO:<a4@example.org>"), limitReply("firma.cz", "6 recipients per hour", "14:07"))

	// Cleared, jan is back to the configured 2 (and over it).
	if err := e.dir.ClearSendingLimits(ctx, "jan@firma.cz", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.dir.ClearSendingLimits(ctx, "firma.cz", []string{"recipients_per_hour"}); err != nil {
		t.Fatal(err)
	}
	apply()
	matchSID(t, c.cmd("RCPT TO:<a4@example.org>"), limitReply("jan@firma.cz", "2 recipients per hour", "14:07"))
}

// TestSendingLimitNewRecipients: recipients the account has not sent to
// in 30 days count against the first-time budget; regular ones do not, a
// restart remembers which are which, and after 30 days a recipient is new
// again.
func TestSendingLimitNewRecipients(t *testing.T) {
	e := newLimitEnv(t, sending.Limits{sending.NewRecipientsPerDay: 3}, sending.Limits{})
	c := e.login("smtp", "jan@firma.cz")
	body := msg("From: jan@firma.cz")
	c.sendMessage("jan@firma.cz", []string{"a@example.org", "b@example.org", "c@example.org"}, body)
	e.clock.Advance(2 * time.Hour)
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	// Known recipients, in another case too, cost nothing.
	c.expect("RCPT TO:<A@example.org>", "250 ")
	c.expect("RCPT TO:<b@example.org>", "250 ")
	matchSID(t, c.cmd("RCPT TO:<d@example.org>"), limitReply("jan@firma.cz", "3 new recipients per day", "13:07"))
	if got := c.data(body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("DATA: %q", got)
	}

	// A restart: the history written out as the node closes, a new
	// limiter on the same database still knows a, b and c (its windows
	// start empty, as they do per node).
	if err := e.hist.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := sending.NewSQLiteHistory(context.Background(), e.db)
	if err != nil {
		t.Fatal(err)
	}
	e.lim = sending.New(sending.Config{Account: sending.Limits{sending.NewRecipientsPerDay: 1}, History: h, Now: e.clock.Now})
	e.srv.Limiter = LimiterOf(e.lim)
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<c@example.org>", "250 ")
	c.expect("RCPT TO:<d@example.org>", "250 ")
	matchSID(t, c.cmd("RCPT TO:<e@example.org>"), limitReply("jan@firma.cz", "1 new recipients per day", "15:07"))
	c.data(body)

	// 30 days after their last message, c and d are new again: d takes
	// the day's one slot, and c is refused as new.
	e.clock.Set(limitStart.Add(2*time.Hour + sending.HistoryWindow + time.Minute))
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<d@example.org>", "250 ")
	matchSID(t, c.cmd("RCPT TO:<c@example.org>"), limitReply("jan@firma.cz", "1 new recipients per day", "15:08"))
}
