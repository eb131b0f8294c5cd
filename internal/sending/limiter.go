package sending

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/directory"
)

// opTimeout bounds one check against the counter and the history, so a
// slow Redis or a locked database delays a command by at most this much.
const opTimeout = 2 * time.Second

// pruneEvery is how often the recipient history is pruned.
const pruneEvery = time.Hour

// Overrides finds the limits support set for one account or hosted domain
// (the directory's SendingLimits).
type Overrides interface {
	// SendingLimits returns name's overrides by key; none is an empty map.
	SendingLimits(ctx context.Context, name string) (map[string]int64, error)
}

// Config configures a Limiter.
type Config struct {
	// Account are the limits of every account ([sending]).
	Account Limits
	// Domain are the limits of every hosted domain, its aliases and all
	// its accounts together ([sending.domain]).
	Domain Limits
	// Overrides holds per-account and per-domain limits; nil has none.
	Overrides Overrides
	// Counter counts the windows; nil counts in this process's memory.
	Counter Counter
	// History tells first-time recipients; nil leaves the first-time
	// budget unchecked.
	History History
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives counter and history failures.
	Log *slog.Logger
}

// Limiter applies the limits. It is safe for concurrent use; each message's
// checks go through one Tx.
type Limiter struct {
	// cfg is the configuration, defaults filled in.
	cfg Config
	// fallback counts while the configured Counter fails, so an outage of
	// Redis leaves the limits counting per node rather than off.
	fallback *Memory
	// failing is set while the Counter fails, so the outage is logged once.
	failing atomic.Bool
	// failedAt is when the Counter last failed (time.Now, Unix
	// nanoseconds); for retryShared after it the fallback counts without
	// trying it, so an outage does not make every command wait for a dial.
	failedAt atomic.Int64
	// retryShared is that pause.
	retryShared time.Duration
	// overridesFailing is set while Overrides fails, so that outage is
	// logged once too, not at every command.
	overridesFailing atomic.Bool
	// limits are the configured limits in force (SetLimits), account and
	// domain; cfg.Account and cfg.Domain are only read by New.
	limits atomic.Pointer[[2]Limits]

	// mu guards cache, hooks and pruned.
	mu sync.Mutex
	// cache holds the overrides read from Overrides, by name; the
	// directory's change log clears an entry when support changes it.
	cache map[string]Override
	// hooks are told of every limit hit.
	hooks []func(account, limit string, at time.Time)
	// pruned is when the history was last pruned.
	pruned time.Time
}

// New returns a Limiter.
func New(cfg Config) *Limiter {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{cfg: cfg, fallback: NewMemory(), cache: map[string]Override{}, retryShared: 5 * time.Second}
	if cfg.Counter == nil {
		l.cfg.Counter = l.fallback
	}
	l.SetLimits(cfg.Account, cfg.Domain)
	return l
}

// SetLimits puts new configured limits of every account and every hosted
// domain in force (a reload): the next check uses them. The windows keep
// their counts, so a lowered limit refuses at once what is over it.
func (l *Limiter) SetLimits(account, domain Limits) {
	l.limits.Store(&[2]Limits{account, domain})
}

// configured returns the configured limits of an account and of a domain.
func (l *Limiter) configured() (account, domain Limits) {
	p := l.limits.Load()
	return p[0], p[1]
}

// OnLimit registers f to be told whenever account hits a limit: limit is
// its key ("recipients_per_hour"), prefixed "domain." for a domain's limit.
// f runs on the session's goroutine and must not block.
func (l *Limiter) OnLimit(f func(account, limit string, at time.Time)) {
	l.mu.Lock()
	l.hooks = append(l.hooks, f)
	l.mu.Unlock()
}

// DirectoryChanged follows the directory's change log: a changed override
// is read again on next use.
func (l *Limiter) DirectoryChanged(ch directory.Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch ch.Kind {
	case directory.ChangesLost:
		clear(l.cache)
	case directory.ChangeSendingLimits, directory.ChangeAccountRemoved, directory.ChangeDomainRemoved:
		delete(l.cache, ch.Name)
	}
}

// override returns name's override, from the cache or the store.
func (l *Limiter) override(ctx context.Context, name string) Override {
	if l.cfg.Overrides == nil {
		return nil
	}
	l.mu.Lock()
	o, ok := l.cache[name]
	l.mu.Unlock()
	if ok {
		return o
	}
	return l.readOverride(ctx, name)
}

// readOverride reads name's override from the store into the cache.
func (l *Limiter) readOverride(ctx context.Context, name string) Override {
	if l.cfg.Overrides == nil {
		return nil
	}
	m, err := l.cfg.Overrides.SendingLimits(ctx, name)
	if errors.Is(err, directory.ErrNotFound) {
		// Removed since it logged in: the configured limits apply.
		m, err = Override{}, nil
	}
	if err != nil {
		// The configured limits apply until the store answers again.
		if !l.overridesFailing.Swap(true) {
			l.cfg.Log.Error("sending limits: overrides unreadable; the configured limits apply until they can be read", "name", name, "err", err)
		}
		return nil
	}
	if l.overridesFailing.Swap(false) {
		l.cfg.Log.Info("sending limits: overrides readable again")
	}
	l.mu.Lock()
	l.cache[name] = m
	l.mu.Unlock()
	return m
}

// Effective returns the limits that apply to account and to its hosted
// domain: the configuration with their overrides.
func (l *Limiter) Effective(ctx context.Context, account, domain string) (acct, dom Limits) {
	ca, cd := l.configured()
	return l.override(ctx, account).Apply(ca), l.override(ctx, domain).Apply(cd)
}

// Usage is the count in each limit's window and the limit in effect, of
// one account or domain.
type Usage struct {
	// Used is the count in each limit's window now.
	Used [NumLimits]int64
	// Limits are the limits in effect; 0 is none.
	Limits Limits
	// Frees is, for each limit that is full, the minute its rolling window
	// frees a slot again (the time a refusal names); zero otherwise.
	Frees [NumLimits]time.Time
}

// Usage returns the current counts of account and of its hosted domain
// against their limits, for support. Windows of a limit that is off are
// not counted and read 0.
func (l *Limiter) Usage(account, domain string) (acct, dom Usage, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// Read from the store, not the cache: support looking right after a
	// change sees the limit it set, before the change feed reaches the
	// cache.
	ca, cd := l.configured()
	acct.Limits = l.readOverride(ctx, account).Apply(ca)
	dom.Limits = l.readOverride(ctx, domain).Apply(cd)
	now := l.cfg.Now()
	for lim := range NumLimits {
		if acct.Used[lim], err = l.cfg.Counter.Count(ctx, now, windowKey(lim, false, account), lim.Window()); err != nil {
			return acct, dom, err
		}
		if dom.Used[lim], err = l.cfg.Counter.Count(ctx, now, windowKey(lim, true, domain), lim.Window()); err != nil {
			return acct, dom, err
		}
		if acct.Frees[lim], err = l.frees(ctx, now, lim, windowKey(lim, false, account), acct.Used[lim], acct.Limits[lim]); err != nil {
			return acct, dom, err
		}
		if dom.Frees[lim], err = l.frees(ctx, now, lim, windowKey(lim, true, domain), dom.Used[lim], dom.Limits[lim]); err != nil {
			return acct, dom, err
		}
	}
	return acct, dom, nil
}

// frees returns when the full window under key frees a slot, or the zero
// time when it is not full. It asks the Counter for one more event: a full
// window refuses it and names the minute, as it would for a client. Should a
// slot have freed since used was read, the event is taken and given back at
// once, so reading the usage never counts against the customer.
func (l *Limiter) frees(ctx context.Context, now time.Time, lim Limit, key string, used, max int64) (time.Time, error) {
	if max == 0 || used < max {
		return time.Time{}, nil
	}
	taken, refused, until, err := l.cfg.Counter.Take(ctx, now, []Request{{Key: key, Window: lim.Window(), Max: max, N: 1}})
	if err != nil {
		return time.Time{}, err
	}
	if refused < 0 {
		return time.Time{}, l.cfg.Counter.Give(ctx, now, taken)
	}
	return until, nil
}

// Hit is a refusal: which limit of whom, and when it frees a slot.
type Hit struct {
	// Name is whose limit: the account's address, or the hosted domain.
	Name string
	// Account is the account that hit it.
	Account string
	// Domain is set when the limit is the domain's.
	Domain bool
	// Limit is which limit; Max its value.
	Limit Limit
	Max   int64
	// Until is when the rolling window frees a slot, in UTC.
	Until time.Time
}

// Text names the limit as the reply does: "500 recipients per hour".
func (h *Hit) Text() string { return strconv.FormatInt(h.Max, 10) + " " + h.Limit.Phrase() }

// Key is the limit as OnLimit names it.
func (h *Hit) Key() string {
	if h.Domain {
		return "domain." + h.Limit.Key()
	}
	return h.Limit.Key()
}

// Tx is one message's checks: what they took from the windows is kept
// until the message is accepted, and given back if it is not, so a message
// refused at DATA, reset or cut off costs its sender nothing.
type Tx struct {
	// l is the limiter; account and domain whose message it is.
	l       *Limiter
	account string
	domain  string
	// acct and dom are the limits in effect for this message.
	acct, dom Limits
	// taken is what was added, by the counter that added it.
	taken []takenBy
	// rcpts are the accepted recipients, for the history.
	rcpts []string
	// done is set once the message is accepted or abandoned.
	done bool
}

// takenBy is what one counter added.
type takenBy struct {
	// c is the counter; t what it added.
	c Counter
	t []Taken
}

// windowKey names one counted window.
func windowKey(lim Limit, domain bool, name string) string {
	if domain {
		return lim.Key() + ":d:" + name
	}
	return lim.Key() + ":a:" + name
}

// Begin starts a message from account of hosted domain domain at MAIL
// FROM: it counts the message against both messages-per-hour limits, or
// returns the limit that is reached.
func (l *Limiter) Begin(account, domain string) (*Tx, *Hit) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t := &Tx{l: l, account: account, domain: domain}
	t.acct, t.dom = l.Effective(ctx, account, domain)
	if hit := t.take(ctx, MessagesPerHour); hit != nil {
		t.done = true
		return nil, hit
	}
	return t, nil
}

// Recipient counts rcpt at RCPT TO against the recipient limits, and
// against the first-time budgets if the account has not sent to it in
// HistoryWindow, or returns the limit that is reached. The caller asks
// once per distinct recipient of the message.
func (t *Tx) Recipient(rcpt string) *Hit {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// An override support changes in the middle of a message applies to
	// its next recipient.
	t.acct, t.dom = t.l.Effective(ctx, t.account, t.domain)
	lims := []Limit{RecipientsPerHour, RecipientsPerDay}
	if t.newBudget() && !t.known(ctx, rcpt) {
		lims = append(lims, NewRecipientsPerDay)
	}
	if hit := t.take(ctx, lims...); hit != nil {
		return hit
	}
	t.rcpts = append(t.rcpts, rcpt)
	return nil
}

// newBudget reports whether a first-time budget applies.
func (t *Tx) newBudget() bool {
	return t.l.cfg.History != nil && (t.acct[NewRecipientsPerDay] > 0 || t.dom[NewRecipientsPerDay] > 0)
}

// known asks the history about rcpt. When it cannot answer, rcpt counts as
// known: a broken database must not stop a customer's mail.
func (t *Tx) known(ctx context.Context, rcpt string) bool {
	ok, err := t.l.cfg.History.Known(ctx, t.account, rcpt, t.l.cfg.Now().Add(-HistoryWindow))
	if err != nil {
		t.l.cfg.Log.Error("sending limits: recipient history unreadable", "account", t.account, "err", err)
		return true
	}
	return ok
}

// take adds one event to the account's and the domain's windows of each
// limit in lims, all or nothing, and reports the first that is full.
func (t *Tx) take(ctx context.Context, lims ...Limit) *Hit {
	var reqs [2 * NumLimits]Request
	var hits [2 * NumLimits]Hit
	n := 0
	for _, dom := range []bool{false, true} {
		for _, lim := range lims {
			max, name := t.acct[lim], t.account
			if dom {
				max, name = t.dom[lim], t.domain
			}
			if max == 0 {
				continue
			}
			reqs[n] = Request{Key: windowKey(lim, dom, name), Window: lim.Window(), Max: max, N: 1}
			hits[n] = Hit{Name: name, Account: t.account, Domain: dom, Limit: lim, Max: max}
			n++
		}
	}
	if n == 0 {
		return nil
	}
	l := t.l
	now := l.cfg.Now()
	c := l.cfg.Counter
	if c != l.fallback && l.failing.Load() && time.Since(time.Unix(0, l.failedAt.Load())) < l.retryShared {
		c = l.fallback
	}
	taken, refused, until, err := c.Take(ctx, now, reqs[:n])
	if err != nil {
		l.failedAt.Store(time.Now().UnixNano())
		if !l.failing.Swap(true) {
			l.cfg.Log.Error("sending limits: shared counter failed; counting on this node until it answers", "err", err)
		}
		c = l.fallback
		taken, refused, until, _ = c.Take(ctx, now, reqs[:n])
	} else if c != l.fallback && l.failing.Swap(false) {
		l.cfg.Log.Info("sending limits: shared counter answers again")
	}
	if refused >= 0 {
		h := hits[refused]
		h.Until = until
		l.hit(&h, now)
		return &h
	}
	t.taken = append(t.taken, takenBy{c, taken})
	return nil
}

// hit tells the hooks.
func (l *Limiter) hit(h *Hit, now time.Time) {
	l.mu.Lock()
	hooks := l.hooks
	l.mu.Unlock()
	for _, f := range hooks {
		f(h.Account, h.Key(), now)
	}
}

// Accepted ends the message as accepted: what it took stays counted, and
// its recipients go into the history.
func (t *Tx) Accepted() {
	if t == nil || t.done {
		return
	}
	t.done = true
	l := t.l
	if !t.newBudget() || len(t.rcpts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	now := l.cfg.Now()
	if err := l.cfg.History.Record(ctx, t.account, t.rcpts, now); err != nil {
		l.cfg.Log.Error("sending limits: recipient history not written", "account", t.account, "err", err)
	}
	l.mu.Lock()
	prune := now.Sub(l.pruned) >= pruneEvery || now.Before(l.pruned)
	if prune {
		l.pruned = now
	}
	l.mu.Unlock()
	if prune {
		go l.Prune(now)
	}
}

// Prune forgets the history older than HistoryWindow before now.
func (l *Limiter) Prune(now time.Time) {
	if l.cfg.History == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := l.cfg.History.Prune(ctx, now.Add(-HistoryWindow)); err != nil {
		l.cfg.Log.Error("sending limits: recipient history not pruned", "err", err)
	}
}

// Abandon ends a message that was not accepted: what it took is given
// back. After Accepted it does nothing.
func (t *Tx) Abandon() {
	if t == nil || t.done {
		return
	}
	t.done = true
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	now := t.l.cfg.Now()
	for _, tb := range t.taken {
		if err := tb.c.Give(ctx, now, tb.t); err != nil {
			t.l.cfg.Log.Error("sending limits: counts not given back", "account", t.account, "err", err)
		}
	}
	t.taken = nil
}
