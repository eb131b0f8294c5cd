package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// The test in this file drives the support pages of the built binary in
// real headless Chromium, as support staff would use them.

// screenshotsEnv names the directory the browser test writes screenshots of
// every page to; unset, it writes none.
const screenshotsEnv = "SUBMITD_SCREENSHOTS"

// The widths screenshots are taken at: a desktop browser and a phone.
var screenWidths = []struct {
	name          string
	width, height int64
	mobile        bool
}{{"desktop", 1280, 800, false}, {"phone", 390, 844, true}}

// browser runs one headless Chromium for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := testutil.NeedTool(t, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// sessionReply matches a reply carrying a session id (SPEC R12).
var sessionReply = regexp.MustCompile(`^535 5\.1\.0 ([A-Za-z0-9]{22}) authentication (.*)$`)

// authFrom logs in from the loopback address ip over implicit TLS and
// returns the reply to AUTH.
func authFrom(t *testing.T, s *server, ip, login, pw string) string {
	t.Helper()
	c := dialRaw(t, s.subs, ip, nil, true)
	c.expect("", "220 ")
	c.expect("EHLO browser.test", "250 ")
	l := c.cmd(authPlain(login, pw))
	// The session ends here, so its record is written (SPEC R13); after
	// the failure that blocks the IP the server has closed it already.
	io.WriteString(c.nc, "QUIT\r\n")
	c.nc.Close()
	return l
}

// TestBrowserSupport: support logs in, pastes the Outlook line of a real
// failed AUTH into Find and lands on the session, which names the cause;
// unblocks the IP from Blocked IPs, after which a client from it logs in;
// switches an account's SMTP access off, after which its AUTH is rejected
// with the seed's words; and retries a deferred message from its page,
// which the receiver then gets. Every step goes through the pages' forms
// and confirmation steps in Chromium, against the built binary.
func TestBrowserSupport(t *testing.T) {
	ctx := browser(t)
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	const eva = "eva@example.org"
	rcv.SetRcptError(eva, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"})
	dns := testutil.NewDNSServer(t)
	s := newServer(t, fmt.Sprintf(`[guard]
max_failures = 3
[delivery]
smarthost = %q
smarthost_tls = "none"
resolver = %q
`, rcv.Addr, dns.Addr))
	s.setupFirma()
	s.mustCLI("Podpora-heslo 7\n", "staff", "add", "petra", "-role", "support")
	// The domain's DKIM record is published as generated; the alias's is
	// an old one, so the domain page shows both a match and a difference.
	publish := func(record string) {
		name, _, _ := strings.Cut(record, " ")
		var parts []string
		for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(record, -1) {
			parts = append(parts, m[1])
		}
		dns.AddTXT(name, parts...)
	}
	publish(strings.TrimSpace(s.mustCLI("", "dkim", "generate", "firma.cz")))
	rec := strings.TrimSpace(s.mustCLI("", "dkim", "generate", "firma.com"))
	s.mustCLI("", "dkim", "generate", "-force", "firma.com")
	publish(rec)
	s.start()
	admin := "http://" + s.admin
	const jan, badIP = "jan@firma.cz", "127.0.1.5"

	// A message that the receiver defers, so it waits in the queue.
	c := dialRaw(t, s.subs, "127.0.0.1", nil, true)
	c.expect("", "220 ")
	c.expect("EHLO browser.test", "250 ")
	c.expect(authPlain(jan, e2ePassword), "235 ")
	qid := qQueueID(t, c.send(jan, eva, "From: jan@firma.cz\r\nTo: eva@example.org\r\nSubject: faktura\r\nMessage-ID: <faktura.7@firma.cz>\r\n\r\nDobry den.\r\n"))
	c.cmd("QUIT")
	testutil.WaitFor(t, 30*time.Second, "the message deferred", func() bool {
		return strings.Contains(qListLine(s, qid), "deferred")
	})

	// Three wrong passwords from one IP block it ([guard] max_failures).
	var sid string
	for i := 0; i < 3; i++ {
		l := authFrom(t, s, badIP, jan, "spatne heslo")
		m := sessionReply.FindStringSubmatch(l)
		if m == nil || m[2] != "failed" {
			t.Fatalf("wrong password: %q", l)
		}
		sid = m[1]
	}
	refused := dialRaw(t, s.subs, badIP, nil, true).line()
	if !strings.Contains(refused, "Connection refused from "+badIP) {
		t.Fatalf("blocked IP greeted with %q", refused)
	}
	// The refused connection's record, which Find looks up below, is
	// written after the connection closed.
	refusedSID := strings.Fields(refused)[2]
	sessionRecord(t, s, refusedSID)

	shots := newShooter(t, ctx)
	// failed stops the test with the page and the server's log.
	failed := func(what string, err error) {
		t.Helper()
		body, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("%s: %v\npage:\n%s\nserver log:\n%s", what, err, body, s.log)
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(tctx, steps...); err != nil {
			failed(what, err)
		}
	}
	read := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		v, err := chromedp.Run(tctx, a)
		if err != nil {
			failed(what, err)
		}
		return v
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// Log in as support.
	run("open the login page", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(css("#password")))
	shots.take("login")
	run("log in", chromedp.SendKeys(css("#name"), "petra"), chromedp.SendKeys(css("#password"), "Podpora-heslo 7"),
		chromedp.Click(css(`button[type="submit"]`)), chromedp.WaitVisible(css("#find-q")))
	shots.take("find")

	// The Outlook line of the failed AUTH, pasted into Find, lands on the
	// session, which names the cause.
	outlook := "The message could not be sent. Server response: 535 5.1.0 " + sid + " authentication failed"
	run("find the Outlook line", chromedp.SetValue(css("#find-q"), outlook), chromedp.Click(css("form.find button")),
		chromedp.WaitVisible(css(".cause")))
	if loc := read("location", chromedp.Location()); !strings.HasSuffix(loc, "/sessions/"+sid) {
		t.Fatalf("Find landed on %s, want the session %s", loc, sid)
	}
	text := read("the cause", chromedp.Text(css(".cause")))
	for _, want := range []string{"wrong password for " + jan, "3rd failure from " + badIP, "which blocked this IP for an hour"} {
		if !strings.Contains(text, want) {
			t.Errorf("session page's cause %q lacks %q", text, want)
		}
	}
	shots.take("session")
	run("find an IP", chromedp.SetValue(css("#find-q"), "Connection refused from "+badIP+". Too many authorization failures from this IP, try again later."),
		chromedp.Click(css("form.find button")), chromedp.WaitVisible(`//h2[text()="Sessions"]`))
	shots.take("find-results")

	// The refusal line the blocked client got, pasted whole: its session
	// id, one of a refused connection, leads to the block, with Unblock
	// on the same page (SPEC R13a).
	run("find the refusal line", chromedp.SetValue(css("#find-q"), "Server response: "+strings.TrimSpace(refused)), chromedp.Click(css("form.find button")),
		chromedp.WaitVisible(css("#fix-unblock")))
	if loc := read("location", chromedp.Location()); !strings.HasSuffix(loc, "/sessions/"+refusedSID) {
		t.Errorf("the refusal line landed on %s, want the session %s", loc, refusedSID)
	}
	text = read("the refusal's cause", chromedp.Text(css(".cause")))
	for _, want := range []string{"refused: IP " + badIP + " blocked at", "connection(s) refused from", refusedSID + " Connection refused from " + badIP} {
		if !strings.Contains(text, want) {
			t.Errorf("refusal page's cause %q lacks %q", text, want)
		}
	}
	if b := read("the Unblock button", chromedp.Text(css("#fix-unblock"))); b != "Unblock "+badIP {
		t.Errorf("the refusal page's button says %q", b)
	}
	shots.take("refusal")

	// Where did the message to eva go: the trace lists it deferred, with
	// the receiver's reply, and its page has Retry now.
	run("trace the recipient", chromedp.Navigate(admin+"/trace?q="+eva), chromedp.WaitVisible(css(`a[href="/trace/`+qid+`"]`)))
	if text = read("the trace", chromedp.Text(css("main table"))); !strings.Contains(text, "deferred") || !strings.Contains(text, "451 4.3.0 try again later") {
		t.Errorf("the trace of %s: %q", eva, text)
	}
	shots.take("trace")
	run("open the message", chromedp.Click(css(`a[href="/trace/`+qid+`"]`)), chromedp.WaitVisible(css("#fix-retry")))
	shots.take("message")

	// Logins under attack, with every login that has failures: the three
	// wrong passwords for jan@firma.cz from a network it never logged in
	// from, counted until it next logs in (SPEC R21).
	run("open Logins under attack", chromedp.Navigate(admin+"/logins?all=true"), chromedp.WaitVisible(css(`form[action="/logins/`+jan+`/clear"]`)))
	shots.take("logins")

	// Blocked IPs: Unblock, confirmed; then the IP logs in again.
	run("open Blocked IPs", chromedp.Click(css(`nav a[href="/blocked"]`)), chromedp.WaitVisible(`//td[text()="`+badIP+`"]`))
	shots.take("blocked")
	run("press Unblock", chromedp.Click(`//tr[td[text()="`+badIP+`"]]//button`), chromedp.WaitVisible(css("#confirm")))
	shots.take("confirm")
	run("confirm", chromedp.Click(css("#confirm")), chromedp.WaitVisible(css(".flash")))
	if text = read("the outcome", chromedp.Text(css(".flash"))); text != "unblocked "+badIP {
		t.Fatalf("after Unblock the page says %q", text)
	}
	if l := authFrom(t, s, badIP, jan, e2ePassword); !strings.HasPrefix(l, "235 ") {
		t.Fatalf("AUTH from %s after Unblock: %q, want 235", badIP, l)
	}

	// The account page: SMTP access off, confirmed; the next AUTH is
	// rejected with the seed's words (SPEC R4).
	run("open Accounts", chromedp.Click(css(`nav a[href="/accounts"]`)), chromedp.WaitVisible(css(`a[href="/accounts/`+jan+`"]`)))
	shots.take("accounts")
	run("open the account", chromedp.Click(css(`a[href="/accounts/`+jan+`"]`)), chromedp.WaitVisible(css("#smtp-off")))
	// Its sending limits count the message sent above over SMTP, against
	// the configured 200 an hour (SPEC R19).
	if text = read("messages per hour", chromedp.Text(css("#used-messages_per_hour"))); !strings.HasPrefix(text, "1 of 200 (config)") {
		t.Errorf("the account's messages per hour: %q, want 1 of 200 (config)", text)
	}
	// An override of one message an hour, set on the page and confirmed:
	// the window is full, and the page says until when.
	run("set an override", chromedp.SetValue(css("#set-messages_per_hour"), "1"),
		chromedp.Click(`//form[.//input[@id="set-messages_per_hour"]]//button`), chromedp.WaitVisible(css("#confirm")),
		chromedp.Click(css("#confirm")), chromedp.WaitVisible(css("#clear-messages_per_hour")))
	if text = read("the outcome", chromedp.Text(css(".flash"))); text != "set messages_per_hour=1 of "+jan {
		t.Fatalf("after setting the override the page says %q", text)
	}
	if text = read("messages per hour", chromedp.Text(css("#used-messages_per_hour"))); !strings.HasPrefix(text, "1 of 1 (override)") || !strings.Contains(text, "Full until") {
		t.Errorf("the account's messages per hour after the override: %q, want 1 of 1 (override), full", text)
	}
	run("scroll to the sending limits", chromedp.Evaluate[chromedp.Void](`document.getElementById("sending-limits").scrollIntoView()`))
	shots.take("account")
	run("scroll back", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	run("switch SMTP access off", chromedp.Click(css("#smtp-off")), chromedp.WaitVisible(css("#confirm")), chromedp.Click(css("#confirm")),
		chromedp.WaitVisible(css("#smtp-on")))
	if text = read("the outcome", chromedp.Text(css(".flash"))); text != "disabled SMTP access of "+jan {
		t.Fatalf("after switching SMTP access off the page says %q", text)
	}
	l := authFrom(t, s, badIP, jan, e2ePassword)
	if m := sessionReply.FindStringSubmatch(l); m == nil || m[2] != "rejected access disabled" {
		t.Fatalf("AUTH after SMTP access off: %q, want 535 5.1.0 SID authentication rejected access disabled", l)
	}

	// Domains: the DKIM record in DNS matches the domain's key and differs
	// from the alias's.
	run("open Domains", chromedp.Click(css(`nav a[href="/domains"]`)), chromedp.WaitVisible(css(`a[href="/domains/firma.cz"]`)))
	shots.take("domains")
	run("open the domain", chromedp.Click(css(`a[href="/domains/firma.cz"]`)), chromedp.WaitVisible(css(`[id="dkim-dns-firma.cz"]`)))
	cz := read("firma.cz in DNS", chromedp.Text(css(`[id="dkim-dns-firma.cz"]`)))
	com := read("firma.com in DNS", chromedp.Text(css(`[id="dkim-dns-firma.com"]`)))
	if !strings.HasPrefix(cz, "matches") || !strings.HasPrefix(com, "differs") {
		t.Errorf("DKIM in DNS: firma.cz %q, firma.com %q; want matches and differs", cz, com)
	}
	run("scroll to the sending limits", chromedp.Evaluate[chromedp.Void](`document.getElementById("sending-limits").scrollIntoView()`))
	shots.take("domain")

	// Queue: retry the deferred message from its page; the receiver, now
	// accepting, gets it.
	rcv.SetRcptError(eva, nil)
	run("open Queue", chromedp.Click(css(`nav a[href="/queue"]`)), chromedp.WaitVisible(css(`a[href="/queue/`+qid+`"]`)))
	shots.take("queue")
	run("open the message", chromedp.Click(css(`a[href="/queue/`+qid+`"]`)), chromedp.WaitVisible(css("#retry")))
	shots.take("queued")
	run("retry", chromedp.Click(css("#retry")), chromedp.WaitVisible(css("#confirm")), chromedp.Click(css("#confirm")),
		chromedp.WaitVisible(css(".flash")))
	if text = read("the outcome", chromedp.Text(css(".flash"))); !strings.Contains(text, qid) || strings.Contains(read("flash class", chromedp.OuterHTML(css(".flash"))), "error") {
		t.Fatalf("after Retry the page says %q", text)
	}
	testutil.WaitFor(t, 30*time.Second, "the receiver to get the retried message", func() bool {
		for _, m := range rcv.Messages() {
			if strings.Contains(string(m.Data), "<faktura.7@firma.cz>") {
				return true
			}
		}
		return false
	})

	// The audit log shows the changes, by petra.
	run("open the audit log", chromedp.Click(css(`nav a[href="/audit"]`)), chromedp.WaitVisible(css("table")))
	text = read("the audit log", chromedp.Text(css("table")))
	for _, want := range []string{"guard.unblock", "account.disable", "queue.retry", "petra"} {
		if !strings.Contains(text, want) {
			t.Errorf("audit log lacks %q:\n%s", want, text)
		}
	}
	shots.take("audit")
}

// shooter takes screenshots of the page shown, at each of screenWidths,
// when screenshotsEnv names a directory.
type shooter struct {
	t   *testing.T
	ctx context.Context
	dir string
}

func newShooter(t *testing.T, ctx context.Context) *shooter {
	dir := os.Getenv(screenshotsEnv)
	if dir != "" && !filepath.IsAbs(dir) {
		// Relative to the repository, not to test/e2e where go test runs.
		dir = filepath.Join("..", "..", dir)
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &shooter{t: t, ctx: ctx, dir: dir}
}

// take writes NAME-desktop.png and NAME-phone.png, then goes back to the
// desktop width.
func (s *shooter) take(name string) {
	s.t.Helper()
	if s.dir == "" {
		return
	}
	for _, w := range screenWidths {
		opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
		if w.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		if err := chromedp.Do(s.ctx, chromedp.EmulateViewport(w.width, w.height, opts...)); err != nil {
			s.t.Fatalf("screenshot %s: %v", name, err)
		}
		png, err := chromedp.Run(s.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			s.t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(s.dir, name+"-"+w.name+".png"), png, 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := chromedp.Do(s.ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		s.t.Fatal(err)
	}
}
