package scan_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/scan"
	"submitd/internal/testutil"
)

// message builds a small message with body.
func message(body string) []byte {
	return []byte("From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: lunch\r\n" +
		"Message-ID: <1@example.com>\r\nDate: Sun, 06 Dec 2026 21:00:00 +0000\r\n\r\n" + body + "\r\n")
}

func newClient(t *testing.T, cfg scan.Config) *scan.Client {
	t.Helper()
	c, err := scan.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func envelope(content []byte) *scan.Message {
	return &scan.Message{Content: bytes.NewReader(content), Size: int64(len(content)), User: "alice@example.com", IP: "192.0.2.7", Helo: "laptop",
		From: "alice@example.com", Rcpts: []string{"bob@example.org"}, QueueID: "Q1"}
}

// TestRspamdVerdicts scans with a real rspamd: GTUBE is rejected with its
// smtp_message, the pattern for "add header" is flagged, and an ordinary
// message gets no action.
func TestRspamdVerdicts(t *testing.T) {
	rs := testutil.StartRspamd(t)
	c := newClient(t, scan.Config{URL: rs.URL})
	cases := []struct {
		body             string
		action           string
		refused, flagged bool
		explanation      string
	}{
		{"Hi Bob, see you at noon.", scan.ActionNoAction, false, false, ""},
		{testutil.GTUBE, scan.ActionReject, true, false, "Gtube pattern"},
		{testutil.GTUBEAddHeader, scan.ActionAddHeader, false, true, "Gtube pattern"},
	}
	for _, tc := range cases {
		r := c.Scan(context.Background(), envelope(message(tc.body)))
		if r.Verdict == nil {
			t.Fatalf("%q: unscanned (%s): %v\n%s", tc.body, r.Unscanned, r.Err, rs.Log())
		}
		v := r.Verdict
		if v.Action != tc.action || v.Refused() != tc.refused || v.Flagged() != tc.flagged || v.Explanation() != tc.explanation {
			t.Errorf("%q: verdict %+v, want action %q refused %v flagged %v explanation %q", tc.body, v, tc.action, tc.refused, tc.flagged, tc.explanation)
		}
		if v.Required <= 0 || v.TimeReal <= 0 || len(v.Symbols) == 0 {
			t.Errorf("%q: verdict lacks required score, time or symbols: %+v", tc.body, v)
		}
	}
}

// TestRspamdStopped: a stopped rspamd is an error that follows on_error.
func TestRspamdStopped(t *testing.T) {
	rs := testutil.StartRspamd(t)
	rs.Stop()
	for _, tempfail := range []bool{false, true} {
		c := newClient(t, scan.Config{URL: rs.URL, Tempfail: tempfail})
		r := c.Scan(context.Background(), envelope(message("hello")))
		if r.Verdict != nil || r.Unscanned != scan.ReasonError || r.Tempfail != tempfail || r.Err == nil {
			t.Errorf("tempfail %v: result %+v, want unscanned %q", tempfail, r, scan.ReasonError)
		}
	}
}

// TestRequest checks the envelope headers rspamd reads (its protocol's
// User, IP, Helo, From, Rcpt, Queue-Id, Settings-ID, Password) and the body.
func TestRequest(t *testing.T) {
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		body = make([]byte, r.ContentLength)
		r.Body.Read(body)
		fmt.Fprint(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	defer srv.Close()
	c := newClient(t, scan.Config{URL: srv.URL + "/", SettingsID: "outbound", Password: "s3cret"})
	content := message("hello")
	m := envelope(content)
	m.Rcpts = []string{"bob@example.org", "carol@example.net"}
	m.Helo = "bad\x01helo"
	if r := c.Scan(context.Background(), m); r.Verdict == nil || r.Verdict.Action != scan.ActionNoAction {
		t.Fatalf("result %+v", r)
	}
	if got.Method != http.MethodPost || got.URL.Path != "/checkv2" {
		t.Errorf("request %s %s, want POST /checkv2", got.Method, got.URL.Path)
	}
	want := map[string][]string{"User": {"alice@example.com"}, "Ip": {"192.0.2.7"}, "Helo": {"bad?helo"},
		"From": {"alice@example.com"}, "Rcpt": {"bob@example.org", "carol@example.net"}, "Queue-Id": {"Q1"},
		"Settings-Id": {"outbound"}, "Password": {"s3cret"}}
	for k, v := range want {
		if g := got.Header.Values(k); strings.Join(g, ",") != strings.Join(v, ",") {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
	if string(body) != string(content) {
		t.Errorf("body %q, want the message", body)
	}
}

// hangingScanner is a scanner that takes requests and never answers them,
// until the test ends; it counts the requests.
func hangingScanner(t *testing.T) (*httptest.Server, *atomic.Int32, func(reply string)) {
	var n atomic.Int32
	var mu sync.Mutex
	reply := ""
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		mu.Lock()
		rep := reply
		mu.Unlock()
		if rep != "" {
			fmt.Fprint(w, rep)
			return
		}
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv, &n, func(r string) { mu.Lock(); reply = r; mu.Unlock() }
}

// TestTimeoutThenBreaker: a scanner that never answers costs each scan the
// timeout; after Failures of them the breaker answers at once without a
// request, and after the backoff one probe goes; a probe that gets an
// answer closes the breaker.
func TestTimeoutThenBreaker(t *testing.T) {
	srv, requests, answer := hangingScanner(t)
	clock := testutil.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	const timeout = 200 * time.Millisecond
	c := newClient(t, scan.Config{URL: srv.URL, Timeout: timeout, Failures: 3, Backoff: time.Minute, Now: clock.Now})
	m := envelope(message("hello"))
	for i := range 3 {
		r := c.Scan(context.Background(), m)
		if r.Unscanned != scan.ReasonTimeout || r.Took < timeout || !errors.Is(r.Err, context.DeadlineExceeded) {
			t.Fatalf("scan %d: %+v, want a timeout after %s", i, r, timeout)
		}
	}
	if !c.BreakerOpen() {
		t.Fatal("breaker closed after 3 timeouts")
	}
	r := c.Scan(context.Background(), m)
	if r.Unscanned != scan.ReasonBreaker || r.Took >= timeout || requests.Load() != 3 {
		t.Fatalf("with the breaker open: %+v after %d requests, want %q at once without a request", r, requests.Load(), scan.ReasonBreaker)
	}
	clock.Advance(time.Minute)
	if r := c.Scan(context.Background(), m); r.Unscanned != scan.ReasonTimeout || requests.Load() != 4 {
		t.Fatalf("probe: %+v after %d requests, want one more request timing out", r, requests.Load())
	}
	if r := c.Scan(context.Background(), m); r.Unscanned != scan.ReasonBreaker || requests.Load() != 4 {
		t.Fatalf("after a failed probe: %+v, want the breaker open again", r)
	}
	answer(`{"action":"no action","score":1,"required_score":15}`)
	clock.Advance(time.Minute)
	if r := c.Scan(context.Background(), m); r.Verdict == nil {
		t.Fatalf("probe to a scanner that answers: %+v", r)
	}
	if c.BreakerOpen() {
		t.Fatal("breaker still open after a successful probe")
	}
}

// TestMaxConcurrent: with every slot taken by a scan that hangs, another
// waits for one no longer than its deadline and passes as busy.
func TestMaxConcurrent(t *testing.T) {
	srv, requests, _ := hangingScanner(t)
	c := newClient(t, scan.Config{URL: srv.URL, Timeout: 3 * time.Second, MaxConcurrent: 1, Failures: 100})
	m := envelope(message("hello"))
	first := make(chan scan.Result)
	go func() { first <- c.Scan(context.Background(), m) }()
	testutil.WaitFor(t, 10*time.Second, "the first scan's request", func() bool { return requests.Load() == 1 })
	// The caller's deadline, shorter than the first scan's, bounds the
	// wait as the timeout does.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := c.Scan(ctx, m)
	if r.Unscanned != scan.ReasonBusy || requests.Load() != 1 {
		t.Errorf("second scan: %+v after %d requests, want %q", r, requests.Load(), scan.ReasonBusy)
	}
	if r := <-first; r.Unscanned != scan.ReasonTimeout {
		t.Errorf("first scan: %+v, want a timeout", r)
	}
}

// TestMaxSize: a message over max_size passes unscanned without a request,
// and that is no failure whatever on_error says.
func TestMaxSize(t *testing.T) {
	srv, requests, _ := hangingScanner(t)
	c := newClient(t, scan.Config{URL: srv.URL, MaxSize: 100, Tempfail: true})
	r := c.Scan(context.Background(), envelope(message(strings.Repeat("x", 100))))
	if r.Unscanned != scan.ReasonTooLarge || r.Tempfail || requests.Load() != 0 {
		t.Errorf("result %+v after %d requests, want %q without a request", r, requests.Load(), scan.ReasonTooLarge)
	}
}

// TestReplyBounded: a reply larger than the bound, or not 200, is an
// error, not a verdict.
func TestReplyBounded(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"huge": func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"action":"no action","score":0,"required_score":15,"x":"`)
			w.Write([]byte(strings.Repeat("a", 2<<20)))
			fmt.Fprint(w, `"}`)
		},
		"status": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		},
	} {
		srv := httptest.NewServer(h)
		c := newClient(t, scan.Config{URL: srv.URL})
		if r := c.Scan(context.Background(), envelope(message("hi"))); r.Verdict != nil || r.Unscanned != scan.ReasonError {
			t.Errorf("%s: %+v, want an error", name, r)
		}
		srv.Close()
	}
}

// observer records what a client reports.
type observer struct {
	mu        sync.Mutex
	scanned   []string
	inRspamd  []time.Duration
	unscanned []string
}

func (o *observer) Scanned(action string, _, inRspamd time.Duration) {
	o.mu.Lock()
	o.scanned = append(o.scanned, action)
	o.inRspamd = append(o.inRspamd, inRspamd)
	o.mu.Unlock()
}

func (o *observer) Unscanned(reason string) {
	o.mu.Lock()
	o.unscanned = append(o.unscanned, reason)
	o.mu.Unlock()
}

func TestObserver(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"action":"add header","score":7,"required_score":15,"time_real":0.0125}`)
	}))
	defer srv.Close()
	o := &observer{}
	c := newClient(t, scan.Config{URL: srv.URL, MaxSize: 200, Observer: o})
	c.Scan(context.Background(), envelope(message("hi")))
	c.Scan(context.Background(), envelope(message(strings.Repeat("x", 300))))
	if fmt.Sprint(o.scanned, o.inRspamd, o.unscanned) != "[add header] [12.5ms] [too_large]" {
		t.Errorf("observed %v %v %v", o.scanned, o.inRspamd, o.unscanned)
	}
}

// bigMessage is a message of about size bytes.
func bigMessage(size int) []byte {
	line := "lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n"
	return message(strings.Repeat(line, size/len(line)))
}

// TestStreamedBody: a message of megabytes goes to the scanner whole,
// byte for byte, with its length as Content-Length.
func TestStreamedBody(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	var length int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, length = b, r.ContentLength
		mu.Unlock()
		fmt.Fprint(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	defer srv.Close()
	c := newClient(t, scan.Config{URL: srv.URL})
	content := bigMessage(3 << 20)
	if r := c.Scan(context.Background(), envelope(content)); r.Verdict == nil {
		t.Fatalf("result %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, content) || length != int64(len(content)) {
		t.Errorf("the scanner got %d bytes (Content-Length %d), want the %d of the message", len(got), length, len(content))
	}
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestBodyRereadAndEnded: the request body can be had again from its start
// (GetBody, which the transport uses to send a request again on a new
// connection), and once Scan has returned, a transport still reading the
// body (as http.RoundTripper allows) gets nothing more of the message: its
// caller may then close what Content reads from.
func TestBodyRereadAndEnded(t *testing.T) {
	content := bigMessage(1 << 20)
	var again []byte
	over := make(chan struct{})
	late := make(chan error, 1)
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		io.ReadFull(r.Body, make([]byte, 100))
		b, err := r.GetBody()
		if err != nil {
			return nil, err
		}
		again, _ = io.ReadAll(b)
		go func() {
			<-over
			n, err := r.Body.Read(make([]byte, 100))
			if n != 0 || err == nil {
				err = fmt.Errorf("read %d bytes, err %v", n, err)
			} else {
				err = nil
			}
			late <- err
		}()
		return nil, errors.New("connection reset by peer")
	})
	c := newClient(t, scan.Config{URL: "http://127.0.0.1:1", Transport: rt})
	if r := c.Scan(context.Background(), envelope(content)); r.Unscanned != scan.ReasonError {
		t.Fatalf("result %+v, want an error", r)
	}
	close(over)
	if !bytes.Equal(again, content) {
		t.Errorf("GetBody gave %d bytes, want the %d of the message", len(again), len(content))
	}
	if err := <-late; err != nil {
		t.Errorf("the body read after Scan returned: %v", err)
	}
}

// TestUploadTimeout: a scanner that takes no part of a message of
// megabytes times the scan out, the upload included.
func TestUploadTimeout(t *testing.T) {
	srv, _, _ := hangingScanner(t)
	const timeout = 300 * time.Millisecond
	c := newClient(t, scan.Config{URL: srv.URL, Timeout: timeout})
	r := c.Scan(context.Background(), envelope(bigMessage(3<<20)))
	if r.Unscanned != scan.ReasonTimeout || !errors.Is(r.Err, context.DeadlineExceeded) || r.Took < timeout {
		t.Fatalf("result %+v, want a timeout after %s", r, timeout)
	}
}

// failingContent is a message whose reads fail, as a failing disk makes
// them fail.
type failingContent struct{}

func (failingContent) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("read: input/output error")
}

// TestUnreadableMessage: a message that cannot be read is not scanned
// (an error, following on_error), but it is not rspamd's failure: the
// breaker stays closed however many there are.
func TestUnreadableMessage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	defer srv.Close()
	c := newClient(t, scan.Config{URL: srv.URL, Failures: 2, Tempfail: true})
	for i := range 4 {
		m := envelope(message("hello"))
		m.Content = failingContent{}
		r := c.Scan(context.Background(), m)
		if r.Unscanned != scan.ReasonError || !r.Tempfail || r.Err == nil || !strings.Contains(r.Err.Error(), "input/output error") {
			t.Fatalf("scan %d: %+v, want an error reading the message", i, r)
		}
	}
	if c.BreakerOpen() {
		t.Error("unreadable messages opened the breaker")
	}
	if r := c.Scan(context.Background(), envelope(message("hello"))); r.Verdict == nil {
		t.Errorf("a readable message: %+v", r)
	}
}
