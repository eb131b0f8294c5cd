package contain

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"submitd/internal/ids"
)

// Defaults of WebhookConfig.
const (
	// DefaultWebhookTimeout bounds one POST.
	DefaultWebhookTimeout = 10 * time.Second
	// DefaultWebhookAttempts is how many times an event is tried.
	DefaultWebhookAttempts = 4
	// DefaultWebhookBackoff is the wait after the first failure; it
	// doubles after each further one.
	DefaultWebhookBackoff = 2 * time.Second
	// DefaultWebhookQueue bounds the events waiting to be sent.
	DefaultWebhookQueue = 1000
)

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// URL receives a POST with the event as a JSON body.
	URL string
	// Timeout bounds one POST; 0 means DefaultWebhookTimeout.
	Timeout time.Duration
	// Attempts is how many times an event is tried; 0 means
	// DefaultWebhookAttempts.
	Attempts int
	// Backoff is the wait after the first failure, doubled after each
	// further one; 0 means DefaultWebhookBackoff.
	Backoff time.Duration
	// Queue bounds the events waiting; past it new ones are dropped and
	// logged. 0 means DefaultWebhookQueue.
	Queue int
	// Client sends the requests; nil means a plain one (Timeout bounds
	// each request through its context).
	Client *http.Client
	// Log receives failures.
	Log *slog.Logger
}

// Webhook posts each event to a URL, in order, retrying failures with a
// doubling backoff. Notify never waits: the events wait in a bounded queue
// that Run works off.
type Webhook struct {
	// cfg is the configuration, defaults filled in; its URL, Timeout and
	// Attempts are only read by NewWebhook, which puts them in target.
	cfg WebhookConfig
	// target is where and how events are posted (SetTarget).
	target atomic.Pointer[webhookTarget]
	// queue holds the events not yet sent.
	queue chan Event
	// sent, failed and dropped count events, for tests and metrics.
	sent, failed, dropped atomic.Int64
}

// NewWebhook returns a Webhook; Run must run for it to send.
func NewWebhook(cfg WebhookConfig) *Webhook {
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultWebhookBackoff
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultWebhookQueue
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	w := &Webhook{cfg: cfg, queue: make(chan Event, cfg.Queue)}
	w.SetTarget(cfg.URL, cfg.Timeout, cfg.Attempts)
	return w
}

// webhookTarget is where and how a Webhook posts.
type webhookTarget struct {
	// url, timeout and attempts are those of WebhookConfig.
	url      string
	timeout  time.Duration
	attempts int
}

// SetTarget changes the URL, the timeout of one POST and the attempts per
// event (a reload), zero values meaning the defaults; events already
// queued go to the new URL.
func (w *Webhook) SetTarget(url string, timeout time.Duration, attempts int) {
	if timeout <= 0 {
		timeout = DefaultWebhookTimeout
	}
	if attempts <= 0 {
		attempts = DefaultWebhookAttempts
	}
	w.target.Store(&webhookTarget{url: url, timeout: timeout, attempts: attempts})
}

// Notify implements Notifier.
func (w *Webhook) Notify(e Event) {
	select {
	case w.queue <- e:
	default:
		w.dropped.Add(1)
		w.cfg.Log.Error("contain: webhook queue full; event dropped", "account", e.Account, "signal", e.Signal)
	}
}

// Run sends queued events until ctx ends.
func (w *Webhook) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-w.queue:
			w.deliver(ctx, e)
		}
	}
}

// deliver tries one event up to Attempts times.
func (w *Webhook) deliver(ctx context.Context, e Event) {
	body, err := json.Marshal(e)
	if err != nil {
		w.cfg.Log.Error("contain: webhook event not encoded", "err", err)
		return
	}
	wait := w.cfg.Backoff
	for n := 1; ; n++ {
		err := w.post(ctx, body)
		if err == nil {
			w.sent.Add(1)
			return
		}
		if n >= w.target.Load().attempts || ctx.Err() != nil {
			w.failed.Add(1)
			w.cfg.Log.Error("contain: webhook failed; event given up", "account", e.Account, "signal", e.Signal, "attempts", n, "err", err)
			return
		}
		w.cfg.Log.Warn("contain: webhook failed; retrying", "account", e.Account, "attempt", n, "retry_in", wait.String(), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait *= 2
	}
}

// post sends one request; any answer but 2xx is a failure.
func (w *Webhook) post(ctx context.Context, body []byte) error {
	t := w.target.Load()
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "submitd")
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	// A little of the body is read so the connection can be reused; a
	// receiver cannot make us read more.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Counts returns how many events were sent, given up and dropped.
func (w *Webhook) Counts() (sent, failed, dropped int64) {
	return w.sent.Load(), w.failed.Load(), w.dropped.Load()
}

// Mail sends each event by e-mail to support, through the server's own
// queue (Submit).
type Mail struct {
	// To is the support address.
	To string
	// Hostname names the server in the From address and the Message-ID.
	Hostname string
	// Submit queues a message from the null sender to To; the null sender
	// makes sure a failed notice is never reported back (SPEC R18).
	Submit func(to string, msg []byte) error
	// Log receives failures.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Notify implements Notifier.
func (m *Mail) Notify(e Event) {
	if err := m.Submit(m.To, m.Message(e)); err != nil && m.Log != nil {
		m.Log.Error("contain: support notice not queued", "account", e.Account, "to", m.To, "err", err)
	}
}

// Message is the notice about e.
func (m *Mail) Message(e Event) []byte {
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	verb := "held"
	if e.Action == ActionWarn {
		verb = "looks compromised (warning only)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: submitd <postmaster@%s>\r\n", m.Hostname)
	fmt.Fprintf(&b, "To: <%s>\r\n", m.To)
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", "submitd: account "+e.Account+" "+verb+" ("+e.Signal+")"))
	fmt.Fprintf(&b, "Date: %s\r\n", now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", ids.Session(), m.Hostname)
	b.WriteString("Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	fmt.Fprintf(&b, "Account: %s\r\nSignal: %s\r\nAction: %s\r\nTime: %s\r\n", e.Account, e.Signal, e.Action, e.Time.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "What tripped: %s\r\n", e.Summary)
	keys := make([]string, 0, len(e.Figures))
	for k := range e.Figures {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %g\r\n", k, e.Figures[k])
	}
	if e.Action == ActionHold {
		fmt.Fprintf(&b, "Held messages: %d\r\nClosed sessions: %d\r\n\r\n", e.HeldMessages, e.ClosedSessions)
		fmt.Fprintf(&b, "Review: submitd held show %s\r\nThen: submitd held release %s, or submitd held purge %s\r\n", e.Account, e.Account, e.Account)
	}
	return []byte(b.String())
}
