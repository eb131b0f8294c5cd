package smtpd

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"submitd/internal/scan"
	"submitd/internal/sessionlog"
	"submitd/internal/testutil"
)

// spamLog records what OnSpam hears.
type spamLog struct {
	mu      sync.Mutex
	actions []string
}

func (l *spamLog) add(account, action string, _ time.Time) {
	l.mu.Lock()
	l.actions = append(l.actions, account+" "+action)
	l.mu.Unlock()
}

func (l *spamLog) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.actions, "; ")
}

// withScanner scans with cfg and records OnSpam in spam.
func withScanner(cfg scan.Config, spam *spamLog) envOption {
	return func(e *testEnv) {
		e.t.Helper()
		c, err := scan.New(cfg)
		if err != nil {
			e.t.Fatal(err)
		}
		e.srv.Scanner = c
		if spam != nil {
			e.srv.OnSpam = spam.add
		}
	}
}

// spamMsg is a message from jan@firma.cz with body.
func spamMsg(body string) string {
	return "From: Jan <jan@firma.cz>\r\nTo: eva@example.org\r\nSubject: offer\r\n\r\n" + body + "\r\n"
}

// scanEvents returns the details of the record's scan events.
func scanEvents(r *sessionlog.Record) []string {
	var out []string
	for _, ev := range r.Events {
		if ev.Kind == "scan" {
			out = append(out, ev.Detail)
		}
	}
	return out
}

// endSession quits and returns the session's record.
func (e *testEnv) endSession(c *client, sid string) *sessionlog.Record {
	e.t.Helper()
	c.send("QUIT")
	c.last()
	return e.waitRecord(sid)
}

// TestScanVerdicts pins SPEC R22 with a real rspamd: GTUBE is refused with
// 550 5.7.1 and rspamd's explanation, over DATA and BDAT, and nothing is
// queued; "add header" is accepted unchanged and flagged; an ordinary
// message is accepted. The verdicts are in the session record, and the
// refused and flagged ones reach OnSpam.
func TestScanVerdicts(t *testing.T) {
	rs := testutil.StartRspamd(t)
	spam := &spamLog{}
	e := newTestEnv(t, withScanner(scan.Config{URL: rs.URL}, spam))
	c := e.login("smtp", "jan@firma.cz")

	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, spamMsg(testutil.GTUBE))
	sid := matchSID(t, got, "550 5.7.1 SID message refused as spam: Gtube pattern")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	c.expect("RCPT TO:<eva@example.org>", "250 ")
	data := spamMsg(testutil.GTUBE)
	c.send(fmt.Sprintf("BDAT %d LAST", len(data)))
	io.WriteString(c.conn, data)
	matchSID(t, c.last(), "550 5.7.1 SID message refused as spam: Gtube pattern")
	if envs := e.spooled(); len(envs) != 0 {
		t.Fatalf("refused messages were queued: %+v", envs)
	}

	body := spamMsg(testutil.GTUBEAddHeader)
	got = c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, body)
	flagged := regexp.MustCompile(`^250 2\.0\.0 ` + sid + ` queued as (\S+)$`).FindStringSubmatch(got)
	if flagged == nil {
		t.Fatalf("flagged message: %q", got)
	}
	content := e.content(flagged[1])
	if !strings.HasSuffix(content, "\r\n"+body) || strings.Contains(content, "X-Spam") {
		t.Errorf("a flagged message was changed:\n%s", content)
	}
	got = c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, msg("From: Jan <jan@firma.cz>", "To: eva@example.org", "Subject: lunch"))
	matchSID(t, got, "250 2.0.0 SID queued as "+got[strings.LastIndex(got, " ")+1:])

	rec := e.endSession(c, sid)
	ev := scanEvents(rec)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^\S+: reject score 15\.00/15\.00: GTUBE 0\.00 \(Gtube pattern\)$`),
		regexp.MustCompile(`^\S+: reject score 15\.00/15\.00: GTUBE 0\.00 \(Gtube pattern\)$`),
		regexp.MustCompile(`^` + flagged[1] + `: add header score 6\.00/15\.00: GTUBE 0\.00 \(Gtube pattern\)$`),
		regexp.MustCompile(`^\S+: no action score -?[0-9.]+/15\.00: \w+`),
	}
	if len(ev) != len(want) {
		t.Fatalf("scan events %q", ev)
	}
	for i, re := range want {
		if !re.MatchString(ev[i]) {
			t.Errorf("scan event %d: %q, want %s", i, ev[i], re)
		}
	}
	if s := spam.get(); s != "jan@firma.cz reject; jan@firma.cz reject; jan@firma.cz add header" {
		t.Errorf("OnSpam heard %q", s)
	}
}

// TestScanSoftReject: rspamd's soft reject (here from the settings profile
// the test's rspamd has for it, asked for with settings_id) is a temporary
// 451 4.7.1 with rspamd's text, and nothing is queued (SPEC R22).
func TestScanSoftReject(t *testing.T) {
	rs := testutil.StartRspamd(t)
	spam := &spamLog{}
	e := newTestEnv(t, withScanner(scan.Config{URL: rs.URL, SettingsID: testutil.RspamdSoftReject}, spam))
	c := e.login("smtp", "jan@firma.cz")
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, spamMsg("Hello Eva."))
	sid := matchSID(t, got, "451 4.7.1 SID message deferred by the spam filter, try again later: "+testutil.RspamdSoftRejectText)
	if envs := e.spooled(); len(envs) != 0 {
		t.Fatalf("a deferred message was queued: %+v", envs)
	}
	rec := e.endSession(c, sid)
	if ev := scanEvents(rec); len(ev) != 1 || !strings.Contains(ev[0], ": soft reject score ") {
		t.Errorf("scan events %q", ev)
	}
	if s := spam.get(); s != "" {
		t.Errorf("a soft reject counted as spam: %q", s)
	}
}

// TestScanUnavailable: with rspamd stopped, on_error = "accept" queues the
// message unscanned and "tempfail" refuses it with 451 4.3.0, queueing
// nothing (SPEC R22).
func TestScanUnavailable(t *testing.T) {
	rs := testutil.StartRspamd(t)
	rs.Stop()
	for _, tempfail := range []bool{false, true} {
		e := newTestEnv(t, withScanner(scan.Config{URL: rs.URL, Tempfail: tempfail}, nil))
		c := e.login("smtp", "jan@firma.cz")
		got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, spamMsg(testutil.GTUBE))
		var sid string
		if tempfail {
			sid = matchSID(t, got, "451 4.3.0 SID message could not be checked for spam, try again later")
			if envs := e.spooled(); len(envs) != 0 {
				t.Fatalf("tempfail queued %+v", envs)
			}
		} else {
			sid = matchSID(t, got, "250 2.0.0 SID queued as "+got[strings.LastIndex(got, " ")+1:])
		}
		rec := e.endSession(c, sid)
		if ev := scanEvents(rec); len(ev) != 1 || !strings.HasSuffix(ev[0], ": unscanned (error)") {
			t.Errorf("tempfail %v: scan events %q", tempfail, ev)
		}
	}
}

// TestScanTimeoutThenBreaker: a scanner that never answers delays each
// message by the timeout, which then goes out unscanned (on_error =
// "accept"); after the failures in a row the breaker opens and messages
// are accepted at once.
func TestScanTimeoutThenBreaker(t *testing.T) {
	done := make(chan struct{})
	var mu sync.Mutex
	requests := 0
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(func() { close(done); hang.Close() })
	const timeout = 300 * time.Millisecond
	e := newTestEnv(t, withScanner(scan.Config{URL: hang.URL, Timeout: timeout, Failures: 2, Backoff: time.Hour}, nil))
	c := e.login("smtp", "jan@firma.cz")
	var sid string
	for i := range 3 {
		start := time.Now()
		got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, spamMsg("hello"))
		took := time.Since(start)
		sid = matchSID(t, got, "250 2.0.0 SID queued as "+got[strings.LastIndex(got, " ")+1:])
		if i < 2 && took < timeout {
			t.Errorf("message %d answered after %s, before the scan's timeout", i, took)
		}
	}
	rec := e.endSession(c, sid)
	ev := scanEvents(rec)
	if len(ev) != 3 || !strings.HasSuffix(ev[0], "(timeout)") || !strings.HasSuffix(ev[1], "(timeout)") || !strings.HasSuffix(ev[2], "(breaker_open)") {
		t.Errorf("scan events %q", ev)
	}
	mu.Lock()
	defer mu.Unlock()
	if requests != 2 {
		t.Errorf("the scanner got %d requests, want 2 (none with the breaker open)", requests)
	}
}

// TestScanMaxSize: a message over max_size is accepted unscanned, even
// GTUBE.
func TestScanMaxSize(t *testing.T) {
	rs := testutil.StartRspamd(t)
	e := newTestEnv(t, withScanner(scan.Config{URL: rs.URL, MaxSize: 2048}, nil))
	c := e.login("smtp", "jan@firma.cz")
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, spamMsg(testutil.GTUBE+"\r\n"+strings.Repeat("padding line\r\n", 200)))
	sid := matchSID(t, got, "250 2.0.0 SID queued as "+got[strings.LastIndex(got, " ")+1:])
	rec := e.endSession(c, sid)
	if ev := scanEvents(rec); len(ev) != 1 || !strings.HasSuffix(ev[0], ": unscanned (too_large)") {
		t.Errorf("scan events %q", ev)
	}
}

// TestScanRepliesFollowSettings: the scan's replies come from the reply
// table in force for the session, so a reload that rewords them reaches
// the next connection like every other reply.
func TestScanRepliesFollowSettings(t *testing.T) {
	// Nothing listens on the port: the scanner is unreachable.
	url := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	e := newTestEnv(t, withScanner(scan.Config{URL: url, Tempfail: true}, nil))
	st := *e.srv.CurrentSettings()
	replies, err := NewReplies(map[string]string{ReplyScanUnavailable: "{sid} spam filter away, retry soon"}, false)
	if err != nil {
		t.Fatal(err)
	}
	st.Replies = replies
	e.srv.SetSettings(st)
	c := e.login("smtp", "jan@firma.cz")
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, spamMsg("hello"))
	matchSID(t, got, "451 4.3.0 SID spam filter away, retry soon")
}

// TestScanRejectPlainReply: a reject whose smtp_message only says what the
// reply says anyway, as rspamd's default "spam message rejected" does, is
// refused with SPEC R22's reply as it stands, nothing appended.
func TestScanRejectPlainReply(t *testing.T) {
	rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"score":16.2,"required_score":15.0,"action":"reject","symbols":{"BAYES_SPAM":{"score":5.1}},"messages":{"smtp_message":"spam message rejected"},"time_real":0.01}`)
	}))
	t.Cleanup(rs.Close)
	e := newTestEnv(t, withScanner(scan.Config{URL: rs.URL}, nil))
	c := e.login("smtp", "jan@firma.cz")
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, spamMsg("Buy now."))
	matchSID(t, got, "550 5.7.1 SID message refused as spam")
	if envs := e.spooled(); len(envs) != 0 {
		t.Fatalf("a refused message was queued: %+v", envs)
	}
}
