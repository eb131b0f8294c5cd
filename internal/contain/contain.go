// Package contain finds accounts whose sending looks compromised and
// contains them (SPEC R20): a Detector watches each account's signals in
// rolling windows (sending limits hit again and again, refused recipients,
// logins from many networks, a sudden rise in volume), and when one trips a
// Containment holds the account: SMTP access off in the directory, its
// open sessions closed and cached credentials dropped, its queued mail held
// in the queue, an audit entry, a metric and a notification (webhook,
// e-mail to support). Support reviews the hold and releases the account,
// which delivers the held mail, or purges that mail without reports.
//
// Per account or hosted domain the action can be "warn" instead of "hold":
// everything happens but the switching off and the holding.
package contain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/address"
	"submitd/internal/directory"
)

// The actions a trip takes.
const (
	// ActionHold holds the account and its mail.
	ActionHold = "hold"
	// ActionWarn only records and notifies.
	ActionWarn = "warn"
)

// Directory is what a Containment needs of the directory.
type Directory interface {
	// Account returns one account.
	Account(ctx context.Context, address string) (*directory.Account, error)
	// SetHeld holds or releases an account.
	SetHeld(ctx context.Context, address string, held bool, reason string) error
	// HeldAccounts lists the held accounts.
	HeldAccounts(ctx context.Context) ([]directory.Account, error)
}

// Sessions ends a held account's SMTP sessions; smtpd.Server is one.
type Sessions interface {
	// CloseAccount ends account's sessions and refuses its next AUTH.
	CloseAccount(account string) int
	// ReopenAccount lets account log in again.
	ReopenAccount(account string)
}

// Credentials drops what is cached of an account, its credentials and its
// directory entry, when it is held or released.
type Credentials interface {
	// Forget drops account's cached answers.
	Forget(account string) int
}

// Queue holds, releases and purges an account's mail; queue.Queue is one.
type Queue interface {
	// Hold holds account's undelivered mail and returns how many messages.
	Hold(account, reason string) (int, error)
	// Release lets account's held mail go and returns how many messages.
	Release(account string) (int, error)
	// Purge deletes account's held mail without reports.
	Purge(account string) (int, error)
	// HeldMessages lists the queue ids of account's held mail.
	HeldMessages(account string) []string
}

// Notifier is told of every trip and its outcome; Webhook and Mail are.
type Notifier interface {
	// Notify hands an event on without waiting for its delivery.
	Notify(e Event)
}

// Event is what a trip did, as notifications carry it.
type Event struct {
	// Trip is the signal and its figures.
	Trip
	// Action is ActionHold or ActionWarn, what was done.
	Action string `json:"action"`
	// HeldMessages is how many queued messages were held (0 for a warning).
	HeldMessages int `json:"held_messages"`
	// ClosedSessions is how many open sessions were closed.
	ClosedSessions int `json:"closed_sessions"`
}

// Config is what a Containment works with.
type Config struct {
	// Directory holds the held flags.
	Directory Directory
	// Store keeps the trips and the per-account and per-domain actions.
	Store Store
	// Sessions closes sessions; Credentials drops cached credentials; Queue
	// holds mail. Any may be nil in a process that has none (the CLI).
	Sessions    Sessions
	Credentials Credentials
	Queue       Queue
	// Action is the action of a trip unless an override says otherwise.
	Action string
	// Notifiers are told of every trip.
	Notifiers []Notifier
	// Audit records a trip in the admin audit log (action, target and the
	// state after); nil records nothing.
	Audit func(ctx context.Context, action, target string, after any) error
	// Audited reports whether the audit log has an entry of action on
	// target made at since or later; Restore asks it of every hold. nil:
	// Restore records no hold.
	Audited func(ctx context.Context, action, target string, since time.Time) (bool, error)
	// Count is told of every trip by signal and action, for metrics; nil
	// counts nothing.
	Count func(signal, action string)
	// Log receives what happens.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Containment acts on trips and carries out releases and purges.
type Containment struct {
	// cfg is the configuration, defaults filled in.
	cfg Config
	// detector is forgotten on release, when set (SetDetector).
	detector *Detector
	// action is the action of a trip without an override (SetAction);
	// cfg.Action is only read by New.
	action atomic.Pointer[string]
	// notifiers are told of every trip (SetNotifiers); cfg.Notifiers is
	// only read by New.
	notifiers atomic.Pointer[[]Notifier]

	// mu guards pending; wake nudges the worker.
	mu      sync.Mutex
	pending map[string]Trip
	wake    chan struct{}
	// act makes a hold, a release and a purge of one process take turns.
	act sync.Mutex
	// warned is when each account and signal last warned (under act), so
	// a warn-only account that keeps tripping is reported once per
	// warnEvery, not at every trip.
	warned map[string]time.Time
}

// actTimeout bounds one trip's work once it has begun. The work runs under
// a context of its own, not ended by Run's: a trip under way when the
// server stops still writes its record and audit entry after the hold.
const actTimeout = time.Minute

// warnEvery is the least time between two warnings of one account and
// signal.
const warnEvery = time.Hour

// maxWarned bounds warned; past it the expired entries are dropped.
const maxWarned = 10000

// New returns a Containment; Run must run for trips to be acted on.
func New(cfg Config) *Containment {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Action == "" {
		cfg.Action = ActionHold
	}
	c := &Containment{cfg: cfg, pending: map[string]Trip{}, wake: make(chan struct{}, 1), warned: map[string]time.Time{}}
	c.action.Store(&cfg.Action)
	c.SetNotifiers(cfg.Notifiers)
	return c
}

// SetNotifiers makes ns the notifiers told of the trips from now on (a
// reload).
func (c *Containment) SetNotifiers(ns []Notifier) {
	ns = slices.Clone(ns)
	c.notifiers.Store(&ns)
}

// SetAction makes action ("hold" or "warn") what a trip does without an
// account or domain override, from the next trip on (a reload).
func (c *Containment) SetAction(action string) {
	if action == "" {
		action = ActionHold
	}
	c.action.Store(&action)
}

// SetDetector names the detector whose state of an account a release
// clears.
func (c *Containment) SetDetector(d *Detector) { c.detector = d }

// Trip takes a trip from the detector. It does no I/O and never waits, since
// it runs in the SMTP and delivery paths: the trip is left for Run, one per
// account (a later trip of an account not yet acted on replaces it), so
// what waits is bounded by the accounts the detector tracks.
func (c *Containment) Trip(t Trip) {
	c.mu.Lock()
	if _, ok := c.pending[t.Account]; !ok {
		c.pending[t.Account] = t
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run acts on trips until ctx ends. A trip taken is carried out whole,
// hold, record and audit entry, under a context of its own bounded by
// actTimeout: a hold the audit log does not show must not be left behind
// by a shutdown. When ctx ends, the trips left are acted on before Run
// returns, so a caller that waits for Run waits for them too.
func (c *Containment) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			c.actPending(ctx)
			return
		case <-c.wake:
			c.actPending(ctx)
		}
	}
}

// actPending acts on the pending trips until there are none.
func (c *Containment) actPending(ctx context.Context) {
	for {
		c.mu.Lock()
		var t Trip
		found := false
		for _, p := range c.pending {
			t, found = p, true
			break
		}
		delete(c.pending, t.Account)
		c.mu.Unlock()
		if !found {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), actTimeout)
		if _, err := c.Act(actx, t); err != nil {
			c.cfg.Log.Error("contain: acting on a trip failed", "account", t.Account, "signal", t.Signal, "err", err)
		}
		cancel()
	}
}

// ActionFor is the action a trip of account takes: the account's override,
// else its domain's, else the configured one.
func (c *Containment) ActionFor(ctx context.Context, account string) (string, error) {
	if c.cfg.Store == nil {
		return *c.action.Load(), nil
	}
	if a, err := c.cfg.Store.Override(ctx, account); err != nil || a != "" {
		return a, err
	}
	_, domain, _ := strings.Cut(account, "@")
	if a, err := c.cfg.Store.Override(ctx, domain); err != nil || a != "" {
		return a, err
	}
	return *c.action.Load(), nil
}

// Act carries out a trip: with ActionHold the account is held (SPEC R20);
// either way the trip is recorded, audited, counted and notified. A trip of
// an account held already does nothing.
func (c *Containment) Act(ctx context.Context, t Trip) (Event, error) {
	c.act.Lock()
	defer c.act.Unlock()
	acct, err := c.cfg.Directory.Account(ctx, t.Account)
	if err != nil {
		return Event{}, err
	}
	if acct.Held {
		return Event{}, nil
	}
	action, err := c.ActionFor(ctx, acct.Address)
	if err != nil {
		// Unknown, so the safe side: the configured action.
		c.cfg.Log.Error("contain: cannot read the account's action; taking the configured one", "account", acct.Address, "err", err)
		action = *c.action.Load()
	}
	ev := Event{Trip: t, Action: action}
	if action == ActionWarn && !c.mayWarn(acct.Address+" "+t.Signal) {
		return ev, nil
	}
	var errs []error
	if action == ActionHold {
		// The order matters: the directory first, so that no new AUTH is
		// accepted, then the cache and the sessions, then the mail.
		if err := c.cfg.Directory.SetHeld(ctx, acct.Address, true, t.Signal+": "+t.Summary); err != nil {
			return Event{}, fmt.Errorf("contain: hold %s: %w", acct.Address, err)
		}
		if c.cfg.Credentials != nil {
			c.cfg.Credentials.Forget(acct.Address)
		}
		if c.cfg.Sessions != nil {
			ev.ClosedSessions = c.cfg.Sessions.CloseAccount(acct.Address)
		}
		if c.cfg.Queue != nil {
			n, err := c.cfg.Queue.Hold(acct.Address, t.Signal)
			ev.HeldMessages = n
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, c.record(ctx, ev, acct.Address)...)
	if c.cfg.Count != nil {
		c.cfg.Count(t.Signal, action)
	}
	c.cfg.Log.Warn("contain: signal tripped", "account", acct.Address, "signal", t.Signal, "action", action,
		"summary", t.Summary, "held_messages", ev.HeldMessages, "closed_sessions", ev.ClosedSessions)
	c.notify(ev)
	return ev, errors.Join(errs...)
}

// record keeps ev, the event of account, in the store and the audit log.
func (c *Containment) record(ctx context.Context, ev Event, account string) []error {
	var errs []error
	if c.cfg.Store != nil {
		if err := c.cfg.Store.AddTrip(ctx, ev); err != nil {
			errs = append(errs, err)
		}
	}
	if c.cfg.Audit != nil {
		if err := c.cfg.Audit(ctx, "contain."+ev.Action, "account:"+account, ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// notify tells the notifiers in force of ev.
func (c *Containment) notify(ev Event) {
	for _, n := range *c.notifiers.Load() {
		n.Notify(ev)
	}
}

// mayWarn reports whether key (account and signal) may warn now, and if
// so notes it; c.act is held.
func (c *Containment) mayWarn(key string) bool {
	now := c.cfg.Now()
	if last, ok := c.warned[key]; ok && now.Sub(last) < warnEvery {
		return false
	}
	if len(c.warned) >= maxWarned {
		for k, t := range c.warned {
			if now.Sub(t) >= warnEvery {
				delete(c.warned, k)
			}
		}
		if len(c.warned) >= maxWarned {
			// All recent: forgetting one only allows one more warning.
			for k := range c.warned {
				delete(c.warned, k)
				break
			}
		}
	}
	c.warned[key] = now
	return true
}

// ErrNotHeld means the account is not held.
var ErrNotHeld = errors.New("account is not held")

// Release re-enables a held account's SMTP access and lets its held mail
// go; it returns how many messages were released.
func (c *Containment) Release(ctx context.Context, account string) (int, error) {
	c.act.Lock()
	defer c.act.Unlock()
	acct, err := c.held(ctx, account)
	if err != nil {
		return 0, err
	}
	if err := c.cfg.Directory.SetHeld(ctx, acct.Address, false, ""); err != nil {
		return 0, err
	}
	if c.cfg.Credentials != nil {
		// What was cached of the account says it is held.
		c.cfg.Credentials.Forget(acct.Address)
	}
	if c.detector != nil {
		c.detector.Forget(acct.Address)
	}
	if c.cfg.Sessions != nil {
		c.cfg.Sessions.ReopenAccount(acct.Address)
	}
	if c.cfg.Queue == nil {
		return 0, nil
	}
	return c.cfg.Queue.Release(acct.Address)
}

// Purge deletes a held account's held mail without reports; the account
// stays held. It returns how many messages were deleted.
func (c *Containment) Purge(ctx context.Context, account string) (int, error) {
	c.act.Lock()
	defer c.act.Unlock()
	acct, err := c.held(ctx, account)
	if err != nil {
		return 0, err
	}
	if c.cfg.Queue == nil {
		return 0, errors.New("contain: no queue in this process")
	}
	return c.cfg.Queue.Purge(acct.Address)
}

// held returns account, which must be held.
func (c *Containment) held(ctx context.Context, account string) (*directory.Account, error) {
	a, err := address.Parse(account)
	if err != nil {
		return nil, err
	}
	acct, err := c.cfg.Directory.Account(ctx, a.String())
	if err != nil {
		return nil, err
	}
	if !acct.Held {
		return nil, fmt.Errorf("%s: %w", acct.Address, ErrNotHeld)
	}
	return acct, nil
}

// Restore holds again, at start-up, the mail of every account the
// directory says is held: the queue's own record of a hold may have been
// lost with a message's state written before the hold. A hold the audit
// log does not show (the process died between the hold and its entry) is
// recorded, audited and notified now, from what the directory says of it,
// so that support sees every hold (SPEC R20).
func (c *Containment) Restore(ctx context.Context) error {
	held, err := c.cfg.Directory.HeldAccounts(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range held {
		signal, summary, _ := strings.Cut(a.HeldReason, ":")
		n := 0
		if c.cfg.Queue != nil {
			if n, err = c.cfg.Queue.Hold(a.Address, signal); err != nil {
				errs = append(errs, err)
			}
		}
		if err := c.recordHold(ctx, a, signal, strings.TrimSpace(summary), n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recordHold records, audits and notifies the hold of account a as a trip
// of signal, unless the audit log shows it already; n is how many messages
// it holds. The audit log is where support looks, and it is shared by the
// nodes of a cluster, so a hold one node made is not recorded again by
// another.
func (c *Containment) recordHold(ctx context.Context, a directory.Account, signal, summary string, n int) error {
	if c.cfg.Audited == nil {
		return nil
	}
	// A hold's entry is written after the directory's hold time, by the
	// same node's clock; an older entry is of an earlier hold.
	target := "account:" + a.Address
	if ok, err := c.cfg.Audited(ctx, "contain."+ActionHold, target, a.HeldSince); err != nil || ok {
		return err
	}
	ev := Event{Trip: Trip{Account: a.Address, Signal: signal, Summary: summary, Time: a.HeldSince}, Action: ActionHold, HeldMessages: n}
	c.cfg.Log.Warn("contain: a hold made before the last stop has no audit entry; recording it now", "account", a.Address,
		"signal", signal, "held_since", a.HeldSince.UTC().Format(time.RFC3339))
	errs := c.record(ctx, ev, a.Address)
	c.notify(ev)
	return errors.Join(errs...)
}

// Held lists the held accounts.
func (c *Containment) Held(ctx context.Context) ([]directory.Account, error) {
	return c.cfg.Directory.HeldAccounts(ctx)
}

// HeldMessages lists the queue ids of account's held mail, nil without a
// queue.
func (c *Containment) HeldMessages(account string) []string {
	if c.cfg.Queue == nil {
		return nil
	}
	return c.cfg.Queue.HeldMessages(account)
}

// LastTrip returns account's latest trip, nil when none is recorded.
func (c *Containment) LastTrip(ctx context.Context, account string) (*Event, error) {
	if c.cfg.Store == nil {
		return nil, nil
	}
	return c.cfg.Store.LastTrip(ctx, account)
}

// SetOverride sets the action of an account or a hosted domain ("" removes
// the override, so the configured action applies).
func (c *Containment) SetOverride(ctx context.Context, target, action string) error {
	if c.cfg.Store == nil {
		return errors.New("contain: no store")
	}
	switch action {
	case "", ActionHold, ActionWarn:
	default:
		return fmt.Errorf("action %q: must be %q, %q or empty", action, ActionHold, ActionWarn)
	}
	t, err := NormalizeTarget(target)
	if err != nil {
		return err
	}
	return c.cfg.Store.SetOverride(ctx, t, action)
}

// NormalizeTarget returns an override's target, an account address or a
// domain, in the directory's form.
func NormalizeTarget(target string) (string, error) {
	if strings.Contains(target, "@") {
		a, err := address.Parse(target)
		if err != nil {
			return "", fmt.Errorf("account %q: %w", target, err)
		}
		return a.String(), nil
	}
	d, err := address.Domain(target)
	if err != nil {
		return "", fmt.Errorf("domain %q: %w", target, err)
	}
	return d, nil
}

// Overrides lists the overrides by target.
func (c *Containment) Overrides(ctx context.Context) (map[string]string, error) {
	if c.cfg.Store == nil {
		return map[string]string{}, nil
	}
	return c.cfg.Store.Overrides(ctx)
}
