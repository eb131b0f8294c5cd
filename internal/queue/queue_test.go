package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/delivery"
	"submitd/internal/spool"
	"submitd/internal/testutil"
)

// world is a queue delivering with the real MX sender, through a DNS server
// and SMTP receivers on loopback that the test starts.
type world struct {
	t     *testing.T
	clk   *testutil.Clock
	sp    *spool.Spool
	q     *Queue
	dns   *testutil.DNSServer
	rcv   map[string]*testutil.Receiver // by domain
	port  int
	cfg   Config
	log   *bytes.Buffer
	logMu *sync.Mutex
}

// domains get receivers on their own loopback address, all on one port,
// since the MX sender has one remote port.
var testDomains = []string{"firma.test", "a.test", "b.test"}

func newWorld(t *testing.T, opts map[string]testutil.ReceiverOptions, tweak func(*Config)) *world {
	t.Helper()
	w := &world{t: t, clk: testutil.NewClock(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)), rcv: map[string]*testutil.Receiver{}}
	w.dns = testutil.NewDNSServer(t)
	ips := make([]string, len(testDomains))
	for i := range testDomains {
		ips[i] = fmt.Sprintf("127.0.0.%d", i+2)
	}
	lns := testutil.ListenSamePort(t, ips...)
	for i, d := range testDomains {
		o := opts[d]
		o.Listener = lns[i]
		w.rcv[d] = testutil.NewReceiver(t, o)
		w.port = w.rcv[d].Port
		w.dns.AddMX(d, 10, "mx."+d)
		w.dns.AddA("mx."+d, ips[i])
	}
	sp, err := spool.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w.sp = sp
	w.cfg = Config{
		Spool: sp,
		Sender: delivery.NewMX(delivery.MXConfig{
			SessionConfig: delivery.SessionConfig{Hostname: "submit.test", ConnectTimeout: 5 * time.Second, Timeout: 30 * time.Second},
			Resolver:      &delivery.Resolver{Addr: w.dns.Addr, Timeout: 5 * time.Second}, Port: w.port,
		}),
		Hostname:  "submit.test",
		RetryMin:  5 * time.Minute,
		RetryMax:  time.Hour,
		MaxAge:    5 * 24 * time.Hour,
		WarnAfter: 0,
		Workers:   4,
		PerDomain: 2,
		Now:       w.clk.Now,
	}
	w.log = &bytes.Buffer{}
	w.logMu = &sync.Mutex{}
	w.cfg.Log = slog.New(slog.NewTextHandler(lockedWriter{w.log, w.logMu}, nil))
	if tweak != nil {
		tweak(&w.cfg)
	}
	w.start()
	return w
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// start makes the queue (again, after stop) over the spool, as a server
// start does: load what is there, then take new messages from OnCommit.
func (w *world) start() {
	w.t.Helper()
	q, err := New(w.cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	envs, err := w.sp.Load()
	if err != nil {
		w.t.Fatal(err)
	}
	q.Load(envs)
	w.sp.OnCommit = q.Add
	w.q = q
	w.t.Cleanup(func() { q.Close() })
}

func (w *world) stop() {
	w.sp.OnCommit = nil
	w.q.Close()
}

// submit spools a message as the SMTP session does.
func (w *world) submit(from string, to ...string) string {
	w.t.Helper()
	env := &spool.Envelope{From: from, To: to, Account: from, SessionID: "sessAAAAAAAAAAAAAAAAAA",
		ClientIP: "192.0.2.7", Received: w.clk.Now()}
	wr, err := w.sp.Create(env)
	if err != nil {
		w.t.Fatal(err)
	}
	fmt.Fprintf(wr, "From: <%s>\r\nTo: <%s>\r\nSubject: quarterly report\r\nMessage-ID: <m1@firma.test>\r\n\r\nHello.\r\n", from, to[0])
	if err := wr.Commit(); err != nil {
		w.t.Fatal(err)
	}
	return env.ID
}

func (w *world) run() { w.q.RunDue(context.Background()) }

// state reads message id's state from the spool.
func (w *world) state(id string) *State {
	w.t.Helper()
	_, st, err := ReadState(w.sp, id)
	if err != nil {
		w.t.Fatalf("state of %s: %v", id, err)
	}
	return st
}

func (w *world) queued() []*spool.Envelope {
	envs, err := w.sp.List()
	if err != nil {
		w.t.Fatal(err)
	}
	return envs
}

// dsn is a parsed delivery report.
type dsn struct {
	from, to, subject string
	human             string
	perMsg            textproto.MIMEHeader
	perRcpt           []textproto.MIMEHeader
	headers           string
}

// parseDSN checks the RFC 3464 structure of a report and returns its parts.
func parseDSN(t *testing.T, data []byte) *dsn {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("report does not parse: %v\n%s", err, data)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("report Content-Type = %q (%v)", m.Header.Get("Content-Type"), err)
	}
	d := &dsn{from: m.Header.Get("From"), to: m.Header.Get("To"), subject: m.Header.Get("Subject")}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("report part: %v", err)
		}
		body, _ := io.ReadAll(p)
		ct := p.Header.Get("Content-Type")
		types = append(types, strings.Split(ct, ";")[0])
		switch {
		case strings.HasPrefix(ct, "text/plain"):
			d.human = string(body)
		case ct == "message/delivery-status":
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			d.perMsg, err = tr.ReadMIMEHeader()
			if err != nil {
				t.Fatalf("per-message fields: %v\n%s", err, body)
			}
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					d.perRcpt = append(d.perRcpt, h)
				}
				if err != nil {
					break
				}
			}
		case ct == "text/rfc822-headers":
			d.headers = string(body)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("report parts = %v", types)
	}
	return d
}

func (d *dsn) rcpt(t *testing.T, addr string) textproto.MIMEHeader {
	t.Helper()
	for _, h := range d.perRcpt {
		if h.Get("Final-Recipient") == "rfc822; "+addr {
			return h
		}
	}
	t.Fatalf("report has no Final-Recipient %s: %v", addr, d.perRcpt)
	return nil
}

func tempFail(after int) func(string, int) *smtp.SMTPError {
	return func(_ string, n int) *smtp.SMTPError {
		if n < after {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}
}

// A 4xx is retried after retry_min and delivered then; nothing is reported.
func TestTemporaryFailureRetried(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, nil)
	id := w.submit("jan@firma.test", "eva@a.test")
	t0 := w.clk.Now()
	w.run()

	if n := len(w.rcv["a.test"].Messages()); n != 0 {
		t.Fatalf("a.test got %d messages after a 451", n)
	}
	st := w.state(id)
	r := st.Rcpts[0]
	if r.Status != Deferred || r.Attempts != 1 || !r.Next.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("after 451: status %s attempts %d next %v", r.Status, r.Attempts, r.Next)
	}
	if !strings.HasPrefix(r.Reply, "451 4.3.0") || r.Host == "" {
		t.Fatalf("recorded reply %q host %q", r.Reply, r.Host)
	}
	if due, ok := w.q.NextDue(); !ok || !due.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("next due %v %v", due, ok)
	}

	// Not due yet: nothing is attempted.
	w.clk.Advance(4 * time.Minute)
	w.run()
	if st := w.state(id); st.Rcpts[0].Attempts != 1 {
		t.Fatalf("attempted before due: %d attempts", st.Rcpts[0].Attempts)
	}

	w.clk.Advance(time.Minute)
	w.run()
	msgs := w.rcv["a.test"].Messages()
	if len(msgs) != 1 || msgs[0].From != "jan@firma.test" || strings.Join(msgs[0].Rcpts, ",") != "eva@a.test" {
		t.Fatalf("a.test got %+v", msgs)
	}
	if !bytes.Contains(msgs[0].Data, []byte("Subject: quarterly report")) {
		t.Fatalf("delivered content:\n%s", msgs[0].Data)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages", len(q))
	}
	if n := len(w.rcv["firma.test"].Messages()); n != 0 {
		t.Fatalf("sender got %d reports for a delivered message", n)
	}
}

// A 5xx for one of two recipients: the other is delivered, the sender gets
// one report naming only the failed one, with the remote reply.
func TestPermanentFailureReportsOnlyThatRecipient(t *testing.T) {
	w := newWorld(t, nil, nil)
	w.rcv["b.test"].SetRcptError("nobody@b.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	id := w.submit("jan@firma.test", "eva@b.test", "nobody@b.test")
	w.run()

	msgs := w.rcv["b.test"].Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].Rcpts, ",") != "eva@b.test" {
		t.Fatalf("b.test got %+v", msgs)
	}
	reports := w.rcv["firma.test"].Messages()
	if len(reports) != 1 {
		t.Fatalf("sender got %d reports, want 1", len(reports))
	}
	rep := reports[0]
	if rep.From != "" || strings.Join(rep.Rcpts, ",") != "jan@firma.test" {
		t.Fatalf("report envelope from %q to %v; want <> to the sender", rep.From, rep.Rcpts)
	}
	d := parseDSN(t, rep.Data)
	if d.from != "Mail Delivery System <MAILER-DAEMON@submit.test>" {
		t.Errorf("From: %q", d.from)
	}
	if len(d.perRcpt) != 1 {
		t.Fatalf("report names %d recipients, want 1: %v", len(d.perRcpt), d.perRcpt)
	}
	h := d.rcpt(t, "nobody@b.test")
	if h.Get("Action") != "failed" || h.Get("Status") != "5.1.1" || !strings.HasPrefix(h.Get("Diagnostic-Code"), "smtp; 550 5.1.1 ") ||
		h.Get("Remote-MTA") != "dns; mx.b.test" {
		t.Errorf("recipient fields: %v", h)
	}
	if d.perMsg.Get("Reporting-MTA") != "dns; submit.test" || d.perMsg.Get("Arrival-Date") == "" {
		t.Errorf("per-message fields: %v", d.perMsg)
	}
	if !strings.Contains(d.human, "<nobody@b.test>: host mx.b.test") || !strings.Contains(d.human, "550 5.1.1 no such user") ||
		strings.Contains(d.human, "eva@b.test") || !strings.Contains(d.human, id) {
		t.Errorf("human part:\n%s", d.human)
	}
	if !strings.Contains(d.headers, "Subject: quarterly report") || strings.Contains(d.headers, "Hello.") {
		t.Errorf("original headers part:\n%s", d.headers)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages", len(q))
	}
	if s := w.q.Stats(); s.Delivered != 2 || s.Failed != 1 || s.Reports != 1 || s.Finished != 2 {
		// The report itself is the second delivered recipient and finished message.
		t.Errorf("stats %+v", s)
	}
}

// A domain that takes no mail (null MX) fails at once, and the report says
// so with the RFC 7505 status rather than a generic one.
func TestNullMXReportStatus(t *testing.T) {
	w := newWorld(t, nil, nil)
	w.dns.AddMX("null.test", 0, ".")
	w.submit("jan@firma.test", "nikdo@null.test")
	w.run()
	reports := w.rcv["firma.test"].Messages()
	if len(reports) != 1 {
		t.Fatalf("sender got %d reports, want 1", len(reports))
	}
	h := parseDSN(t, reports[0].Data).rcpt(t, "nikdo@null.test")
	if h.Get("Action") != "failed" || h.Get("Status") != "5.1.10" {
		t.Errorf("recipient fields: %v", h)
	}
}

// Temporary failures until max_age: the recipient expires, the sender gets a
// report saying so, and retries follow the doubling backoff capped at
// retry_max and at the expiry time.
func TestExpiryReports(t *testing.T) {
	var seen []time.Time
	w := newWorld(t, nil, func(c *Config) {
		c.RetryMin = 5 * time.Minute
		c.RetryMax = 20 * time.Minute
		c.MaxAge = time.Hour
	})
	w.rcv["a.test"].SetRcptError("eva@a.test", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"})
	t0 := w.clk.Now()
	id := w.submit("jan@firma.test", "eva@a.test")
	for i := 0; i < 20; i++ {
		w.run()
		if len(w.queued()) == 0 || w.queued()[0].ID != id {
			break
		}
		st := w.state(id)
		seen = append(seen, st.Rcpts[0].History[len(st.Rcpts[0].History)-1].Time)
		due, ok := w.q.NextDue()
		if !ok {
			t.Fatal("nothing due while the message is queued")
		}
		w.clk.Set(due)
	}
	var offs []string
	for _, s := range seen {
		offs = append(offs, s.Sub(t0).String())
	}
	// 0, +5m, +10m, +20m (cap), +20m, then the cap at max_age (60m).
	if got, want := strings.Join(offs, " "), "0s 5m0s 15m0s 35m0s 55m0s"; got != want {
		t.Errorf("attempt times %s, want %s (then the expiry attempt at 1h0m0s)", got, want)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages after expiry", len(q))
	}
	reports := w.rcv["firma.test"].Messages()
	if len(reports) != 1 {
		t.Fatalf("sender got %d reports, want 1", len(reports))
	}
	d := parseDSN(t, reports[0].Data)
	h := d.rcpt(t, "eva@a.test")
	if h.Get("Action") != "failed" || h.Get("Status") != "4.2.2" || !strings.Contains(h.Get("Diagnostic-Code"), "452 4.2.2 mailbox full") {
		t.Errorf("recipient fields: %v", h)
	}
	if !strings.Contains(d.human, "expired after 1h0m0s; last reply: host mx.a.test") {
		t.Errorf("human part:\n%s", d.human)
	}
	if !w.clk.Now().Equal(t0.Add(time.Hour)) {
		t.Errorf("expired at +%s, want +1h", w.clk.Now().Sub(t0))
	}
}

// A message from <> (and a report) that fails gets no report, ever.
func TestNoReportForNullSender(t *testing.T) {
	w := newWorld(t, nil, func(c *Config) { c.WarnAfter = time.Minute })
	w.rcv["a.test"].SetRcptError("gone@a.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	w.rcv["a.test"].SetRcptError("later@a.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"})
	w.submit("", "gone@a.test", "later@a.test")
	// A report whose delivery fails is not reported either.
	env := &spool.Envelope{From: "", To: []string{"gone@a.test"}, Received: w.clk.Now(), Kind: KindDSN}
	wr, _ := w.sp.Create(env)
	io.WriteString(wr, "From: MAILER-DAEMON@submit.test\r\n\r\nreport\r\n")
	if err := wr.Commit(); err != nil {
		t.Fatal(err)
	}
	w.run()
	w.clk.Advance(6 * 24 * time.Hour)
	w.run()
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages", len(q))
	}
	for d, r := range w.rcv {
		if n := len(r.Messages()); n != 0 {
			t.Errorf("%s got %d messages", d, n)
		}
	}
	if s := w.q.Stats(); s.Reports != 0 || s.Failed != 3 {
		t.Errorf("stats %+v", s)
	}
}

// One delay warning after warn_after, none when warn_after is 0.
func TestDelayWarning(t *testing.T) {
	for _, warn := range []time.Duration{30 * time.Minute, 0} {
		t.Run(fmt.Sprint(warn), func(t *testing.T) {
			w := newWorld(t, nil, func(c *Config) { c.WarnAfter = warn; c.RetryMax = 10 * time.Minute })
			w.rcv["a.test"].SetRcptError("eva@a.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"})
			w.submit("jan@firma.test", "eva@a.test", "petr@b.test")
			for i := 0; i < 12; i++ { // two hours of retries
				w.run()
				due, _ := w.q.NextDue()
				w.clk.Set(due)
			}
			reports := w.rcv["firma.test"].Messages()
			if warn == 0 {
				if len(reports) != 0 {
					t.Fatalf("warn_after 0 sent %d reports", len(reports))
				}
				return
			}
			if len(reports) != 1 {
				t.Fatalf("sender got %d reports, want 1 warning", len(reports))
			}
			d := parseDSN(t, reports[0].Data)
			if len(d.perRcpt) != 1 {
				t.Fatalf("warning names %v", d.perRcpt)
			}
			h := d.rcpt(t, "eva@a.test")
			if h.Get("Action") != "delayed" || h.Get("Status") != "4.3.0" || h.Get("Will-Retry-Until") == "" {
				t.Errorf("recipient fields: %v", h)
			}
			if !strings.HasPrefix(d.subject, "Delayed Mail") {
				t.Errorf("subject %q", d.subject)
			}
		})
	}
}

// signer is a stand-in DKIM signer that counts its calls; the header it
// returns lets the test see which signature each copy carried.
type signer struct {
	mu sync.Mutex
	n  int
}

func (s *signer) Sign(_ context.Context, msg io.Reader) (string, error) {
	b, _ := io.ReadAll(msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return fmt.Sprintf("DKIM-Signature: v=1; call=%d; len=%d\r\n", s.n, len(b)), nil
}

// The signature is computed once, before the first attempt, and the same
// header goes out on the retry, also after a restart.
func TestSignedOnceReusedOnRetry(t *testing.T) {
	sg := &signer{}
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, func(c *Config) { c.Signer = sg })
	id := w.submit("jan@firma.test", "eva@a.test")
	w.run()
	if st := w.state(id); !st.Signed || !strings.HasPrefix(st.DKIM, "DKIM-Signature: v=1; call=1;") {
		t.Fatalf("state after first attempt: signed %v dkim %q", st.Signed, st.DKIM)
	}
	w.stop()
	w.start()
	w.clk.Advance(5 * time.Minute)
	w.run()
	msgs := w.rcv["a.test"].Messages()
	if len(msgs) != 1 || !bytes.HasPrefix(msgs[0].Data, []byte("DKIM-Signature: v=1; call=1;")) {
		t.Fatalf("delivered: %d messages; first line %q", len(msgs), strings.SplitN(string(msgs[0].Data), "\r\n", 2)[0])
	}
	if sg.n != 1 {
		t.Errorf("signed %d times", sg.n)
	}
}

// After a restart, recipients delivered before it are not tried again.
func TestRestartRetriesOnlyOpenRecipients(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"b.test": {RcptHook: tempFail(1)}}, nil)
	id := w.submit("jan@firma.test", "eva@a.test", "petr@b.test")
	w.run()
	st := w.state(id)
	if st.Rcpts[0].Status != Delivered || st.Rcpts[1].Status != Deferred {
		t.Fatalf("after first attempt: %s %s", st.Rcpts[0].Status, st.Rcpts[1].Status)
	}
	w.stop()
	w.start()
	w.clk.Advance(5 * time.Minute)
	w.run()
	if a, b := len(w.rcv["a.test"].Messages()), len(w.rcv["b.test"].Messages()); a != 1 || b != 1 {
		t.Fatalf("a.test got %d, b.test %d; want 1 each", a, b)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages", len(q))
	}
}

// A message that vanishes from the spool (deleted by hand) is dropped from
// the schedule without harm.
func TestVanishedMessage(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, nil)
	id := w.submit("jan@firma.test", "eva@a.test")
	w.run()
	if err := w.sp.Remove(id); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(time.Hour)
	w.run()
	if w.q.Len() != 0 {
		t.Fatalf("queue still schedules %d messages", w.q.Len())
	}
	if _, err := os.Stat(w.sp.Dir() + "/" + id + ".state"); !os.IsNotExist(err) {
		t.Fatalf("state file left behind: %v", err)
	}
}

// A message whose file cannot be read for a while (here: replaced by a
// directory, as an I/O error or a lack of file descriptors would make it)
// stays queued and is delivered once it can be read again (SPEC R15); it
// was dropped from the schedule until the next restart.
func TestUnreadableMessageRetried(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, nil)
	id := w.submit("jan@firma.test", "eva@a.test", "petr@a.test")
	w.run()
	msg := filepath.Join(w.sp.Dir(), id+".msg")
	aside := msg + ".aside"
	if err := os.Rename(msg, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(msg, 0o700); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(5 * time.Minute)
	w.run()
	if w.q.Len() != 1 {
		t.Fatalf("queue schedules %d messages after a read error, want 1", w.q.Len())
	}
	os.Remove(msg)
	if err := os.Rename(aside, msg); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(5 * time.Minute)
	w.run()
	if n := len(w.rcv["a.test"].Messages()); n != 1 {
		t.Fatalf("a.test got %d messages, want 1", n)
	}
	if q := w.queued(); len(q) != 0 {
		t.Fatalf("spool still holds %d messages", len(q))
	}
}

// gate is a receiving MX whose sessions hold at the end of DATA until the
// test lets one go, counting how many are held at once per domain.
type gate struct {
	mu      sync.Mutex
	active  map[string]int // by recipient domain
	total   int
	maxDom  map[string]int
	maxTot  int
	entered chan string
	release map[string]chan struct{} // lets one session of a domain go
	any     chan struct{}            // lets any one session go
}

func newGate(t *testing.T, ln net.Listener, domains ...string) *gate {
	g := &gate{active: map[string]int{}, maxDom: map[string]int{}, entered: make(chan string, 100),
		release: map[string]chan struct{}{}, any: make(chan struct{})}
	for _, d := range domains {
		g.release[d] = make(chan struct{})
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &gateSession{g: g}, nil }))
	srv.Domain = "mx.test"
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return g
}

type gateSession struct {
	g   *gate
	dom string
}

func (s *gateSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *gateSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.dom = to[strings.LastIndexByte(to, '@')+1:]
	return nil
}
func (s *gateSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	g := s.g
	g.mu.Lock()
	g.active[s.dom]++
	g.total++
	g.maxDom[s.dom] = max(g.maxDom[s.dom], g.active[s.dom])
	g.maxTot = max(g.maxTot, g.total)
	g.mu.Unlock()
	g.entered <- s.dom
	select {
	case <-g.release[s.dom]:
	case <-g.any:
	}
	g.mu.Lock()
	g.active[s.dom]--
	g.total--
	g.mu.Unlock()
	return nil
}
func (s *gateSession) Reset()        {}
func (s *gateSession) Logout() error { return nil }

// At most queue.workers deliveries run at once, and at most per_domain to
// one destination domain.
func TestConcurrencyLimits(t *testing.T) {
	type setup struct {
		w    *world
		g    *gate
		seen map[string]int
		done chan struct{}
	}
	// start queues x messages to x.test and y to y.test, all served by one
	// gate, and starts delivering them.
	start := func(t *testing.T, workers, perDomain, x, y int) *setup {
		w := newWorld(t, nil, func(c *Config) { c.Workers = workers; c.PerDomain = perDomain })
		lns := testutil.ListenSamePort(t, "127.0.0.9")
		g := newGate(t, lns[0], "x.test", "y.test")
		w.dns.AddMX("x.test", 10, "mx.gate.test")
		w.dns.AddMX("y.test", 10, "mx.gate.test")
		w.dns.AddA("mx.gate.test", "127.0.0.9")
		w.cfg.Sender = delivery.NewMX(delivery.MXConfig{
			SessionConfig: delivery.SessionConfig{Hostname: "submit.test"},
			Resolver:      &delivery.Resolver{Addr: w.dns.Addr}, Port: lns[0].Addr().(*net.TCPAddr).Port,
		})
		w.stop()
		w.start()
		for i := 0; i < max(x, y); i++ {
			if i < x {
				w.submit("jan@firma.test", fmt.Sprintf("r%d@x.test", i))
			}
			if i < y {
				w.submit("jan@firma.test", fmt.Sprintf("r%d@y.test", i))
			}
		}
		s := &setup{w: w, g: g, seen: map[string]int{}, done: make(chan struct{})}
		go func() {
			w.run()
			close(s.done)
		}()
		return s
	}
	// enter waits for n more sessions to reach the end of DATA.
	enter := func(t *testing.T, s *setup, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case d := <-s.g.entered:
				s.seen[d]++
			case <-time.After(20 * time.Second):
				t.Fatalf("no further delivery started; seen %v", s.seen)
			}
		}
	}
	// running checks the jobs the queue has started and not finished, in
	// all and to x.test: those it started with the first sessions were all
	// started at once, so a limit that failed would show here even if the
	// extra session had not reached the gate yet.
	running := func(t *testing.T, s *setup, tot, x int) {
		t.Helper()
		s.w.q.mu.Lock()
		defer s.w.q.mu.Unlock()
		if s.w.q.running != tot || s.w.q.inflight["x.test"] != x {
			t.Errorf("queue runs %d jobs, %d to x.test; want %d, %d", s.w.q.running, s.w.q.inflight["x.test"], tot, x)
		}
	}
	finish := func(t *testing.T, s *setup, maxTot, maxX, maxY int) {
		t.Helper()
		<-s.done
		g := s.g
		// -1: which sessions the test lets go decides it; not checked.
		if g.maxTot != maxTot || maxX >= 0 && g.maxDom["x.test"] != maxX || maxY >= 0 && g.maxDom["y.test"] != maxY {
			t.Errorf("most at once: %d in all, x.test %d, y.test %d; want %d, %d, %d",
				g.maxTot, g.maxDom["x.test"], g.maxDom["y.test"], maxTot, maxX, maxY)
		}
		if n := len(s.w.queued()); n != 0 {
			t.Errorf("%d messages left queued", n)
		}
	}

	t.Run("per domain", func(t *testing.T) {
		s := start(t, 4, 2, 5, 1)
		// Two to x.test and the one to y.test start; a free worker does not
		// let a third x.test delivery start.
		enter(t, s, 3)
		running(t, s, 3, 2)
		s.g.release["y.test"] <- struct{}{}
		for i := 0; i < 3; i++ {
			s.g.release["x.test"] <- struct{}{}
			enter(t, s, 1)
		}
		s.g.release["x.test"] <- struct{}{}
		s.g.release["x.test"] <- struct{}{}
		finish(t, s, 3, 2, 1)
	})
	t.Run("global", func(t *testing.T) {
		s := start(t, 3, 5, 4, 4)
		// Three start; each one let go makes room for exactly one more.
		enter(t, s, 3)
		running(t, s, 3, 2)
		for i := 3; i < 8; i++ {
			s.g.any <- struct{}{}
			enter(t, s, 1)
		}
		for i := 0; i < 3; i++ {
			s.g.any <- struct{}{}
		}
		finish(t, s, 3, -1, -1)
	})
}

// flakySigner fails its first fail calls, as a key store that is briefly
// unavailable does, then signs like signer.
type flakySigner struct {
	signer
	fail int
}

func (s *flakySigner) Sign(ctx context.Context, msg io.Reader) (string, error) {
	s.mu.Lock()
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		return "", errors.New("dkim key of firma.test: database is locked")
	}
	s.mu.Unlock()
	return s.signer.Sign(ctx, msg)
}

// A signing failure leaves that attempt unsigned but not the message: the
// next attempt signs again, so a passing key store fault does not send every
// retry unsigned for the message's remaining days.
func TestSigningFailureRetried(t *testing.T) {
	sg := &flakySigner{fail: 1}
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, func(c *Config) { c.Signer = sg })
	id := w.submit("jan@firma.test", "eva@a.test")
	w.run()
	if st := w.state(id); st.Rcpts[0].Status != Deferred {
		t.Fatalf("after first attempt: %s", st.Rcpts[0].Status)
	}
	w.clk.Advance(5 * time.Minute)
	w.run()
	msgs := w.rcv["a.test"].Messages()
	if len(msgs) != 1 || !bytes.HasPrefix(msgs[0].Data, []byte("DKIM-Signature: ")) {
		t.Fatalf("delivered %d messages; want 1 signed on the retry", len(msgs))
	}
}
