// Package scan is submitd's content scanner: a client of rspamd's HTTP
// protocol (POST /checkv2, as rspamd 3.4 serves it) that asks for a
// verdict on each submitted message before its 250 (SPEC R22).
//
// Its cost is bounded: a message larger than MaxSize is not sent, at most
// MaxConcurrent scans run at once, a scan (its wait for a slot included)
// takes at most Timeout, and rspamd's reply is read up to maxReplySize.
// The message is streamed from where its caller keeps it (the spool
// writer's copy), not copied into memory for the scan.
// After several failures in a row a circuit breaker stops waiting on rspamd
// for a backoff period, then lets one scan probe it again.
package scan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Reasons a message went out unscanned, as Result.Unscanned and the
// metrics name them.
const (
	// ReasonTooLarge: the message is larger than MaxSize.
	ReasonTooLarge = "too_large"
	// ReasonTimeout: rspamd did not answer within Timeout.
	ReasonTimeout = "timeout"
	// ReasonBusy: MaxConcurrent scans were in flight for all of Timeout.
	ReasonBusy = "busy"
	// ReasonError: rspamd could not be reached or gave no usable answer.
	ReasonError = "error"
	// ReasonBreaker: the circuit breaker is open after failures in a row.
	ReasonBreaker = "breaker_open"
)

// Reasons lists every reason, for metrics that show them all from the start.
var Reasons = []string{ReasonTooLarge, ReasonTimeout, ReasonBusy, ReasonError, ReasonBreaker}

// Defaults of [scan], and of the circuit breaker.
const (
	// DefaultTimeout bounds a scan when Config.Timeout is 0.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxSize is the largest message scanned when Config.MaxSize
	// is 0.
	DefaultMaxSize = 4 << 20
	// DefaultMaxConcurrent is how many scans run at once when
	// Config.MaxConcurrent is 0.
	DefaultMaxConcurrent = 32
	// DefaultFailures is how many failures in a row open the breaker.
	DefaultFailures = 5
	// DefaultBackoff is how long it stays open before a probe.
	DefaultBackoff = 30 * time.Second
)

// maxReplySize bounds the reply read from rspamd. A reply lists every
// symbol that matched with its description, some tens of kilobytes at most.
const maxReplySize = 1 << 20

// Config configures a Client; [scan] in the config file.
type Config struct {
	// URL is rspamd's normal worker, e.g. "http://127.0.0.1:11333".
	URL string
	// Timeout bounds one scan, its wait for a slot included; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxSize is the largest message scanned; larger ones pass unscanned.
	// 0 means DefaultMaxSize.
	MaxSize int64
	// MaxConcurrent is how many scans may be in flight at once; 0 means
	// DefaultMaxConcurrent.
	MaxConcurrent int
	// Tempfail makes an unavailable scanner refuse the message for now
	// (on_error = "tempfail") instead of letting it pass unscanned.
	Tempfail bool
	// SettingsID is sent as Settings-ID when not "".
	SettingsID string
	// Password is sent as Password when not "".
	Password string
	// Failures in a row open the breaker; 0 means DefaultFailures.
	Failures int
	// Backoff is how long the breaker stays open; 0 means DefaultBackoff.
	Backoff time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Transport makes the HTTP requests; nil means a transport of its own
	// that keeps up to MaxConcurrent idle connections.
	Transport http.RoundTripper
	// Observer hears of every scan; nil: nobody.
	Observer Observer
}

// Observer is told the outcome of each scan; the metrics implement it.
type Observer interface {
	// Scanned is a verdict, how long the scan took in all, and how long
	// rspamd says it took itself (Verdict.TimeReal; 0 when its reply
	// did not say).
	Scanned(action string, took, inRspamd time.Duration)
	// Unscanned is a message that passed (or was deferred) unscanned.
	Unscanned(reason string)
}

// Message is what a scan sends: the message as it will be queued and its
// envelope.
type Message struct {
	// Content reads the whole message, header and body, with CRLF line
	// ends: Size bytes from offset 0. Scan reads it only while it runs,
	// from the start again if the request must be sent again, and not at
	// all for a message over MaxSize.
	Content io.ReaderAt
	// Size is the message's length in bytes.
	Size int64
	// User is the authenticated account: rspamd then treats the message
	// as outbound, sent by a local user.
	User string
	// IP is the submitting client's address; Helo its EHLO name.
	IP, Helo string
	// From is the envelope sender, "" for the null sender.
	From string
	// Rcpts are the envelope recipients.
	Rcpts []string
	// QueueID names the message in rspamd's log.
	QueueID string
}

// Result is the outcome of a scan.
type Result struct {
	// Verdict is rspamd's answer; nil when the message was not scanned.
	Verdict *Verdict
	// Unscanned is the reason the message was not scanned, "" when it was.
	Unscanned string
	// Tempfail is set when the message was not scanned because the
	// scanner was unavailable and on_error is "tempfail": it must be
	// refused for now.
	Tempfail bool
	// Err says what failed, for the log; nil when scanned.
	Err error
	// Took is how long the scan took, the wait for a slot included.
	Took time.Duration
}

// Client scans messages with rspamd. It is safe for concurrent use.
type Client struct {
	// cfg is the configuration, with defaults filled in; endpoint the
	// URL of /checkv2.
	cfg      Config
	endpoint string
	// http makes the requests.
	http *http.Client
	// slots holds a token per scan in flight (MaxConcurrent).
	slots chan struct{}

	// mu guards the breaker below.
	mu sync.Mutex
	// failures counts failures in a row; openUntil is when an open
	// breaker lets a probe through (zero while closed); probing is set
	// while that probe runs.
	failures  int
	openUntil time.Time
	probing   bool
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("scan: rspamd URL %q must be http://host:port", cfg.URL)
	}
	if cfg.Timeout < 0 || cfg.MaxSize < 0 || cfg.MaxConcurrent < 0 {
		return nil, errors.New("scan: timeout, max size and max concurrent must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.Failures <= 0 {
		cfg.Failures = DefaultFailures
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
			MaxIdleConnsPerHost: cfg.MaxConcurrent,
			MaxConnsPerHost:     cfg.MaxConcurrent,
			IdleConnTimeout:     time.Minute,
		}
	}
	return &Client{
		cfg:      cfg,
		endpoint: strings.TrimSuffix(u.String(), "/") + "/checkv2",
		http:     &http.Client{Transport: cfg.Transport},
		slots:    make(chan struct{}, cfg.MaxConcurrent),
	}, nil
}

// MaxSize is the largest message Scan sends to rspamd.
func (c *Client) MaxSize() int64 { return c.cfg.MaxSize }

// BreakerOpen reports whether the breaker is open now, scans passing
// without waiting on rspamd.
func (c *Client) BreakerOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.openUntil.IsZero()
}

// Scan asks rspamd for a verdict on m, within the client's Timeout. A
// message over MaxSize and a scanner that cannot answer give a Result with
// Unscanned set (and Tempfail under on_error = "tempfail", except for the
// size, which is a choice, not a failure).
func (c *Client) Scan(ctx context.Context, m *Message) Result {
	start := time.Now()
	r := c.scan(ctx, m)
	r.Took = time.Since(start)
	if o := c.cfg.Observer; o != nil {
		if r.Verdict != nil {
			o.Scanned(r.Verdict.Action, r.Took, r.Verdict.TimeReal)
		} else {
			o.Unscanned(r.Unscanned)
		}
	}
	return r
}

func (c *Client) scan(ctx context.Context, m *Message) Result {
	if m.Size > c.cfg.MaxSize {
		return Result{Unscanned: ReasonTooLarge}
	}
	ok, probe := c.admit()
	if !ok {
		return c.unavailable(ReasonBreaker, errors.New("scan: rspamd failed repeatedly; not waiting on it until the backoff ends"))
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		// Local congestion says nothing of rspamd's health, but the
		// probe the breaker let through must be settled.
		c.settle(probe, false, true)
		return c.unavailable(ReasonBusy, fmt.Errorf("scan: no free slot of %d within %s", c.cfg.MaxConcurrent, c.cfg.Timeout))
	}
	v, err := c.check(ctx, m)
	<-c.slots
	// A message that could not be read says nothing of rspamd's health.
	var re *readError
	c.settle(probe, err == nil, errors.As(err, &re))
	if err != nil {
		reason := ReasonError
		if errors.Is(err, context.DeadlineExceeded) {
			reason = ReasonTimeout
		}
		return c.unavailable(reason, err)
	}
	return Result{Verdict: v}
}

// unavailable is the Result of a scan that could not be made.
func (c *Client) unavailable(reason string, err error) Result {
	return Result{Unscanned: reason, Tempfail: c.cfg.Tempfail, Err: err}
}

// admit reports whether a scan may go to rspamd: always while the breaker
// is closed; while it is open, one probe at a time once the backoff has
// passed (probe is then set).
func (c *Client) admit() (ok, probe bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.openUntil.IsZero():
		return true, false
	case c.probing || c.cfg.Now().Before(c.openUntil):
		return false, false
	}
	c.probing = true
	return true, true
}

// settle records a scan's outcome with the breaker: probe says it was the
// breaker's probe, neutral that it never reached rspamd and so says
// nothing of its health.
func (c *Client) settle(probe, ok, neutral bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if probe {
		c.probing = false
	}
	switch {
	case neutral:
	case ok:
		c.failures, c.openUntil = 0, time.Time{}
	default:
		c.failures++
		if probe || c.failures >= c.cfg.Failures {
			c.openUntil = c.cfg.Now().Add(c.cfg.Backoff)
		}
	}
}

// check makes the request and reads the verdict.
func (c *Client) check(ctx context.Context, m *Message) (*Verdict, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	if m.Size > 0 {
		b := &body{content: m.Content, size: m.Size}
		defer b.end()
		req.Body, req.GetBody, req.ContentLength = b.reader(), b.getBody, m.Size
	}
	// rspamd's header names are matched without regard to case, but they
	// are set as its documentation spells them, not as Go canonicalizes
	// them ("Ip", "Settings-Id").
	h := req.Header
	set := func(k, v string) { h[k] = append(h[k], headerValue(v)) }
	set("User", m.User)
	set("IP", m.IP)
	set("Helo", m.Helo)
	set("From", m.From)
	for _, r := range m.Rcpts {
		set("Rcpt", r)
	}
	if m.QueueID != "" {
		set("Queue-Id", m.QueueID)
	}
	if c.cfg.SettingsID != "" {
		set("Settings-ID", c.cfg.SettingsID)
	}
	if c.cfg.Password != "" {
		set("Password", c.cfg.Password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("scan: rspamd at %s: %w", c.cfg.URL, ctx.Err())
		}
		return nil, fmt.Errorf("scan: rspamd at %s: %w", c.cfg.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplySize+1))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("scan: reading rspamd's reply: %w", err)
	}
	if len(body) > maxReplySize {
		return nil, fmt.Errorf("scan: rspamd's reply is larger than %d bytes", maxReplySize)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scan: rspamd answered %s: %s", resp.Status, clean(string(body)))
	}
	v, err := ParseReply(body)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	return v, nil
}

// body is a message sent as a request body, read from the caller's
// Content. Once check returns it reads nothing more, because the transport
// may go on reading a body after Do has returned (see http.RoundTripper)
// while the caller may then commit or drop the message, closing what
// Content reads from.
type body struct {
	// content and size are the message.
	content io.ReaderAt
	size    int64
	// mu is held by each read and by end; ended is set by end.
	mu    sync.Mutex
	ended bool
}

// errEnded is what a body read after the scan returns.
var errEnded = errors.New("scan: the message is no longer read once the scan is over")

// reader returns a reader of the message from its start.
func (b *body) reader() io.ReadCloser {
	return io.NopCloser(io.NewSectionReader(readerAt{b}, 0, b.size))
}

// getBody is the request's GetBody: the transport sends the message again
// on a new connection when a reused one turned out closed.
func (b *body) getBody() (io.ReadCloser, error) { return b.reader(), nil }

// end stops every reader of b, waiting for a read under way.
func (b *body) end() {
	b.mu.Lock()
	b.ended = true
	b.mu.Unlock()
}

// readerAt reads b's content until b ends.
type readerAt struct{ b *body }

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if r.b.ended {
		return 0, errEnded
	}
	n, err := r.b.content.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}

// readError is a failure to read the message, not rspamd's.
type readError struct{ err error }

func (e *readError) Error() string { return "reading the message: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// headerValue keeps a value the client chose (the EHLO name, addresses)
// to what an HTTP header may hold: control characters become '?'.
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
