// Package loginwatch counts failed AUTHs per login across all client IPs
// and puts a login guessed from many of them "under attack" (SPEC R21).
//
// The brute-force guard (SPEC R11) counts per client IP, so a botnet that
// tries one mailbox from a thousand addresses, a few times each, never trips
// it. Watch counts wrong passwords per login instead. Past a threshold in a
// rolling window the login is under attack: from then on only clients from
// networks (IPv4 /24, IPv6 /48) where the login authenticated successfully
// in the last 30 days may still try it. Everyone else is refused without a
// password check, with the reply of a wrong password, so an attacker learns
// nothing, while the owner keeps working from the networks they use.
//
// What a hostile client can make Watch hold is bounded. Failures are
// counted in memory only for logins that exist (a wrong password needs an
// account), at most Config.MaxLogins of them, each with at most
// Config.MaxFailures failure times and MaxIPs address hashes; when the table
// is full, the least threatening login (not under attack, fewest failures in
// the window) makes room. Successes write to the store, at most
// Config.MaxNetworks networks per login, each once per refresh interval, and
// entries older than Config.TrustFor are pruned. The failures and attack
// states are saved in batches (Flush) to a StateStore and loaded at start
// (Restore), so a restart neither lifts an attack nor forgets its count;
// a failure itself never waits for a write.
package loginwatch

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the zero Config fields.
const (
	// DefaultMaxFailures is how many wrong passwords in Window, from
	// networks without an earlier success, put a login under attack. One IP
	// makes at most 10 an hour before the guard blocks it (SPEC R11), so
	// 20 take at least two.
	DefaultMaxFailures = 20
	// DefaultWindow is the rolling window failures are counted in.
	DefaultWindow = time.Hour
	// DefaultAttackFor is how long a login stays under attack after the
	// last failure that kept it there.
	DefaultAttackFor = time.Hour
	// DefaultTrustFor is how long a success makes its network trusted.
	DefaultTrustFor = 30 * 24 * time.Hour
	// DefaultMaxNetworks bounds the networks remembered per login.
	DefaultMaxNetworks = 20
	// DefaultMaxLogins bounds the logins with failures held in memory.
	DefaultMaxLogins = 20000
	// DefaultIPv4Prefix and DefaultIPv6Prefix are the network sizes a
	// success trusts: a home or office line keeps its /24 or /48 when its
	// address changes.
	DefaultIPv4Prefix = 24
	DefaultIPv6Prefix = 48
)

// EventKind is the kind of the session record event that tells why an
// AUTH was refused unchecked; its detail is Decision.Reason (SPEC R13).
const EventKind = "under_attack"

// MaxIPs is the most distinct client IPs counted per login; past it the
// count says "at least".
const MaxIPs = 256

// refreshEvery is how often a success from a network already remembered is
// written again: a client that connects for every message costs one write
// an hour, not one per message.
const refreshEvery = time.Hour

// maxRecent bounds the table of successes written lately; when it is full
// it starts over, which costs only a few extra writes.
const maxRecent = 10000

// evictSample is how many logins are looked at to find one to forget when
// the table is full.
const evictSample = 8

// Config configures a Watch.
type Config struct {
	// MaxFailures wrong passwords in Window, from networks without an
	// earlier success, put a login under attack; 0 means
	// DefaultMaxFailures.
	MaxFailures int
	// Window is the rolling window failures are counted in; 0 means
	// DefaultWindow.
	Window time.Duration
	// AttackFor is how long the state lasts after the last failure that
	// kept the count at MaxFailures; 0 means DefaultAttackFor.
	AttackFor time.Duration
	// TrustFor is how long a success keeps its network trusted; 0 means
	// DefaultTrustFor.
	TrustFor time.Duration
	// MaxNetworks bounds the networks remembered per login (the oldest
	// success goes first); 0 means DefaultMaxNetworks.
	MaxNetworks int
	// MaxLogins bounds the logins with failures in memory; 0 means
	// DefaultMaxLogins.
	MaxLogins int
	// IPv4Prefix and IPv6Prefix are the network sizes a success trusts; 0
	// means DefaultIPv4Prefix and DefaultIPv6Prefix.
	IPv4Prefix, IPv6Prefix int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives the start and end of attacks and store errors; nil
	// discards them.
	Log *slog.Logger
}

// Store keeps the networks each login authenticated from, across restarts.
// SQLite is one.
type Store interface {
	// Trusted reports whether login authenticated from network at or after
	// since.
	Trusted(ctx context.Context, login string, network netip.Prefix, since time.Time) (bool, error)
	// Record notes that login authenticated from network at t, keeps at
	// most max networks for login (the newest), and forgets its successes
	// before expired.
	Record(ctx context.Context, login string, network netip.Prefix, t time.Time, max int, expired time.Time) error
	// Networks returns login's networks with a success at or after since,
	// the latest success first.
	Networks(ctx context.Context, login string, since time.Time) ([]Network, error)
	// Prune forgets every success before expired and returns how many.
	Prune(ctx context.Context, expired time.Time) (int64, error)
}

// Network is one network a login authenticated from.
type Network struct {
	// Prefix is the network (IPv4 /24, IPv6 /48 by default).
	Prefix netip.Prefix `json:"network"`
	// First and Last are the first and the latest success from it.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// Login is what Watch holds of one login with failures.
type Login struct {
	// Login is the normalized address.
	Login string `json:"login"`
	// Failures are the wrong passwords and refused attempts since First.
	Failures int `json:"failures"`
	// IPs is how many distinct client IPs failed since First, at most
	// MaxIPs.
	IPs int `json:"ips"`
	// First is the first failure counted since the login was last quiet.
	First time.Time `json:"first"`
	// Last is the latest failure.
	Last time.Time `json:"last"`
	// UnderAttack is set while only trusted networks may try the login.
	UnderAttack bool `json:"under_attack"`
	// Since and Until are when the attack state began and when it ends
	// unless more failures come; zero when not under attack.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// Refused counts the attempts refused unchecked during the attack.
	Refused int `json:"refused"`
}

// Stats are counts for metrics.
type Stats struct {
	// Failures counts wrong passwords from untrusted networks; Trusted
	// those from trusted networks, which do not count towards an attack.
	Failures, TrustedFailures uint64
	// Attacks counts logins put under attack; Refused the attempts
	// refused unchecked because of one; Cleared the states support
	// cleared.
	Attacks, Refused, Cleared uint64
	// Evicted counts logins forgotten because MaxLogins was reached;
	// Dropped failures not counted because every login held was under
	// attack.
	Evicted, Dropped uint64
	// StoreErrors counts history reads and writes that failed.
	StoreErrors uint64
	// Tracked is how many logins have failures in memory; UnderAttack how
	// many of them are under attack now.
	Tracked, UnderAttack int
}

// Decision is the answer of Check.
type Decision struct {
	// Refuse is set when the attempt must be refused without a password
	// check.
	Refuse bool
	// Reason says why, in plain words, for the session record and support
	// (SPEC R13): "login jan@firma.cz under attack from 50 IPs since 08:00
	// UTC; this network 192.0.2.0/24 has no earlier success".
	Reason string
}

// entry is one login's failures.
type entry struct {
	// times holds the latest failure times, a ring of MaxFailures; next is
	// where the next one goes and n how many it holds.
	times []time.Time
	next  int
	n     int
	// total counts the failures since first.
	total int
	// ips are hashes of the distinct client IPs since first.
	ips []uint32
	// first and last are the first and the latest failure.
	first, last time.Time
	// since and until bound the attack state; until is zero outside one.
	since, until time.Time
	// refused counts attempts refused during the attack.
	refused int
}

// Watch counts failures per login and decides who may try a login under
// attack. It is safe for concurrent use.
type Watch struct {
	// cfg is the configuration with defaults filled in; SetConfig
	// replaces it, under mu.
	cfg atomic.Pointer[Config]
	// store keeps the successes.
	store Store

	// mu guards everything below.
	mu sync.Mutex
	// logins are the logins with failures, by normalized address.
	logins map[string]*entry
	// recent maps login and network to the last success written.
	recent map[recentKey]time.Time
	// stats are the counters.
	stats Stats
	// pruned is when makeRoom last looked for quiet logins.
	pruned time.Time
	// states keeps the logins across restarts (Restore); nil keeps
	// nothing. dirty are the logins to save or forget at the next Flush.
	states StateStore
	dirty  map[string]struct{}
}

// recentKey is a login and a network in the table of recent writes.
type recentKey struct {
	login   string
	network netip.Prefix
}

// New returns a Watch over store.
func New(cfg Config, store Store) *Watch {
	w := &Watch{store: store,
		logins: map[string]*entry{}, recent: map[recentKey]time.Time{}}
	w.cfg.Store(new(cfg.withDefaults()))
	return w
}

// withDefaults fills in the zero fields.
func (cfg Config) withDefaults() Config {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.AttackFor <= 0 {
		cfg.AttackFor = DefaultAttackFor
	}
	if cfg.TrustFor <= 0 {
		cfg.TrustFor = DefaultTrustFor
	}
	if cfg.MaxNetworks <= 0 {
		cfg.MaxNetworks = DefaultMaxNetworks
	}
	if cfg.MaxLogins <= 0 {
		cfg.MaxLogins = DefaultMaxLogins
	}
	if cfg.IPv4Prefix <= 0 {
		cfg.IPv4Prefix = DefaultIPv4Prefix
	}
	if cfg.IPv6Prefix <= 0 {
		cfg.IPv6Prefix = DefaultIPv6Prefix
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Config returns the configuration, defaults filled in.
func (w *Watch) Config() Config { return *w.conf() }

// conf returns the configuration in force.
func (w *Watch) conf() *Config { return w.cfg.Load() }

// SetConfig puts new limits in force while the watch runs (a reload):
// MaxFailures, Window, AttackFor, TrustFor, MaxNetworks and MaxLogins. The
// network sizes, which the stored successes are keyed by, the clock and
// the log stay as the watch was made with. The failures counted go on: a
// login's recent failures are kept up to the new MaxFailures, and a login
// under attack stays so until the end it was given.
func (w *Watch) SetConfig(c Config) {
	old := w.conf()
	c.IPv4Prefix, c.IPv6Prefix, c.Now, c.Log = old.IPv4Prefix, old.IPv6Prefix, old.Now, old.Log
	c = c.withDefaults()
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.MaxFailures != old.MaxFailures {
		for _, e := range w.logins {
			e.resize(c.MaxFailures)
		}
	}
	w.cfg.Store(&c)
}

// resize gives e's ring of failure times room for n, keeping the newest.
func (e *entry) resize(n int) {
	times := make([]time.Time, n)
	keep := min(e.n, n)
	for i := range keep {
		// The newest is just before next; walk back from it.
		j := (e.next - 1 - i + 2*len(e.times)) % len(e.times)
		times[keep-1-i] = e.times[j]
	}
	e.times, e.n, e.next = times, keep, keep%n
}

// NetworkOf is the network a success from ip trusts: its IPv4 /24 or IPv6
// /48 (by default). An IPv4-mapped IPv6 address counts as IPv4.
func (w *Watch) NetworkOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := w.conf().IPv6Prefix
	if ip.Is4() {
		bits = w.conf().IPv4Prefix
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// Check decides whether an attempt at login from ip may go on to the
// password check. Only a login under attack is refused, and only from a
// network without a success in TrustFor; the refusal counts as a failure,
// so an attack that goes on keeps the state. When the history cannot be
// read the attempt goes on: the owner's password from a network they used
// is never refused (SPEC R21), and the guard still bounds each IP (SPEC
// R11).
func (w *Watch) Check(ctx context.Context, login string, ip netip.Addr) Decision {
	now := w.conf().Now()
	w.mu.Lock()
	e := w.logins[login]
	attacked := e != nil && now.Before(e.until)
	w.mu.Unlock()
	if !attacked {
		return Decision{}
	}
	network := w.NetworkOf(ip)
	trusted, err := w.trusted(ctx, login, network, now)
	if err != nil || trusted {
		return Decision{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	e = w.logins[login]
	if e == nil || !now.Before(e.until) {
		// Cleared or over in the meantime.
		return Decision{}
	}
	w.count(login, e, ip, now)
	e.refused++
	w.stats.Refused++
	return Decision{Refuse: true, Reason: reason(login, e, network)}
}

// reason tells a refusal in plain words.
func reason(login string, e *entry, network netip.Prefix) string {
	return fmt.Sprintf("login %s under attack from %s since %s; this network %s has no earlier success",
		login, ipCount(len(e.ips)), e.since.UTC().Format("2006-01-02 15:04 UTC"), network)
}

// ipCount says "1 IP", "50 IPs", "at least 256 IPs".
func ipCount(n int) string {
	switch {
	case n == 1:
		return "1 IP"
	case n >= MaxIPs:
		return fmt.Sprintf("at least %d IPs", n)
	}
	return fmt.Sprintf("%d IPs", n)
}

// trusted reports whether login succeeded from network within TrustFor.
func (w *Watch) trusted(ctx context.Context, login string, network netip.Prefix, now time.Time) (bool, error) {
	w.mu.Lock()
	t, ok := w.recent[recentKey{login, network}]
	w.mu.Unlock()
	if ok && now.Sub(t) < w.conf().TrustFor {
		return true, nil
	}
	ok, err := w.store.Trusted(ctx, login, network, now.Add(-w.conf().TrustFor))
	if err != nil {
		w.mu.Lock()
		w.stats.StoreErrors++
		w.mu.Unlock()
		w.conf().Log.Error("login history unreadable; the attempt goes on to the password check", "login", login, "err", err)
	}
	return ok, err
}

// Failed counts a wrong password for login, an existing account, from ip.
// A failure from a network the login succeeded from does not count towards
// an attack: it is the owner's typo or an old password in one of their
// devices, and the guard counts it per IP anyway (SPEC R11).
func (w *Watch) Failed(ctx context.Context, login string, ip netip.Addr) {
	now := w.conf().Now()
	if ok, err := w.trusted(ctx, login, w.NetworkOf(ip), now); err == nil && ok {
		w.mu.Lock()
		w.stats.TrustedFailures++
		w.mu.Unlock()
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.logins[login]
	if e == nil {
		if !w.makeRoom(now) {
			w.stats.Dropped++
			return
		}
		e = &entry{times: make([]time.Time, w.conf().MaxFailures)}
		w.logins[login] = e
	}
	w.count(login, e, ip, now)
}

// count adds a failure at now from ip to e and starts or extends the
// attack state when the window holds MaxFailures of them.
func (w *Watch) count(login string, e *entry, ip netip.Addr, now time.Time) {
	w.stats.Failures++
	w.markDirty(login)
	if e.n == 0 || !now.Before(e.last.Add(w.conf().Window)) && !now.Before(e.until) {
		// The login was quiet for a window: a new episode.
		*e = entry{times: e.times}
		e.first = now
	}
	e.times[e.next] = now
	e.next = (e.next + 1) % len(e.times)
	e.n = min(e.n+1, len(e.times))
	e.last = now
	e.total++
	if len(e.ips) < MaxIPs {
		h := ipHash(ip)
		if !slices.Contains(e.ips, h) {
			e.ips = append(e.ips, h)
		}
	}
	if w.inWindow(e, now) < w.conf().MaxFailures {
		return
	}
	if !now.Before(e.until) {
		e.since, e.refused = now, 0
		w.stats.Attacks++
		w.conf().Log.Warn("login under attack: only networks with an earlier success may try it",
			"login", login, "failures", w.conf().MaxFailures, "window", w.conf().Window, "ips", len(e.ips))
	}
	e.until = now.Add(w.conf().AttackFor)
}

// inWindow is how many of e's failures are inside the window before now.
func (w *Watch) inWindow(e *entry, now time.Time) int {
	from := now.Add(-w.conf().Window)
	n := 0
	for i := range e.n {
		if e.times[i].After(from) {
			n++
		}
	}
	return n
}

// ipHash is the hash by which the distinct client IPs of a login are
// counted. It is the same in every process, so the IPs counted before a
// restart are still told from new ones after it.
func ipHash(ip netip.Addr) uint32 {
	h := fnv.New32a()
	b := ip.Unmap().As16()
	h.Write(b[:])
	return h.Sum32()
}

// quiet reports whether e can be forgotten: no failure in the window and
// no attack.
func (w *Watch) quiet(e *entry, now time.Time) bool {
	return !now.Before(e.until) && !now.Before(e.last.Add(w.conf().Window))
}

// makeRoom makes room for one more login when the table is full: first by
// forgetting quiet logins, then the least threatening of a sample (fewest
// failures in the window, not under attack). It reports false when the
// sample held only logins under attack, which are never forgotten.
func (w *Watch) makeRoom(now time.Time) bool {
	if len(w.logins) < w.conf().MaxLogins {
		return true
	}
	// A full sweep at most once a minute: a flood of new logins must not
	// make every failure walk the whole table.
	if now.Sub(w.pruned) >= time.Minute || now.Before(w.pruned) {
		w.pruned = now
		w.prune(now)
		if len(w.logins) < w.conf().MaxLogins {
			return true
		}
	}
	victim, fewest, seen := "", 0, 0
	for login, e := range w.logins {
		if seen++; seen > evictSample {
			break
		}
		if now.Before(e.until) {
			continue
		}
		if n := w.inWindow(e, now); victim == "" || n < fewest {
			victim, fewest = login, n
		}
	}
	if victim == "" {
		return false
	}
	delete(w.logins, victim)
	w.markDirty(victim)
	w.stats.Evicted++
	return true
}

// prune forgets quiet logins and says when an attack ended.
func (w *Watch) prune(now time.Time) {
	for login, e := range w.logins {
		if w.quiet(e, now) {
			if !e.since.IsZero() {
				w.conf().Log.Info("login no longer under attack", "login", login, "since", e.since, "refused", e.refused)
			}
			delete(w.logins, login)
			w.markDirty(login)
		}
	}
}

// Succeeded records that login authenticated from ip, so that its network
// may try the login during an attack for TrustFor. It does not reset the
// failure count: the attackers go on whether or not the owner logs in.
func (w *Watch) Succeeded(ctx context.Context, login string, ip netip.Addr) {
	now := w.conf().Now()
	network := w.NetworkOf(ip)
	k := recentKey{login, network}
	w.mu.Lock()
	if t, ok := w.recent[k]; ok && now.Sub(t) < refreshEvery && !now.Before(t) {
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	if err := w.store.Record(ctx, login, network, now, w.conf().MaxNetworks, now.Add(-w.conf().TrustFor)); err != nil {
		w.mu.Lock()
		w.stats.StoreErrors++
		w.mu.Unlock()
		w.conf().Log.Error("login history not written", "login", login, "network", network, "err", err)
		return
	}
	w.mu.Lock()
	if len(w.recent) >= maxRecent {
		clear(w.recent)
	}
	w.recent[k] = now
	w.mu.Unlock()
}

// List returns the logins under attack now, or, with all, every login with
// failures in memory, the latest failure first.
func (w *Watch) List(all bool) []Login {
	now := w.conf().Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.prune(now)
	out := []Login{}
	for login, e := range w.logins {
		if l := w.view(login, e, now); all || l.UnderAttack {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b Login) int {
		if c := b.Last.Compare(a.Last); c != 0 {
			return c
		}
		return strings.Compare(a.Login, b.Login)
	})
	return out
}

// Get returns what Watch holds of login, if anything.
func (w *Watch) Get(login string) (Login, bool) {
	now := w.conf().Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.logins[login]
	if e == nil || w.quiet(e, now) {
		return Login{}, false
	}
	return w.view(login, e, now), true
}

// view is e as Login.
func (w *Watch) view(login string, e *entry, now time.Time) Login {
	l := Login{Login: login, Failures: e.total, IPs: len(e.ips), First: e.first, Last: e.last, Refused: e.refused}
	if now.Before(e.until) {
		l.UnderAttack, l.Since, l.Until = true, e.since, e.until
	}
	return l
}

// Clear ends login's attack state and forgets its failures (support's
// "clear", audited by the caller). It returns what was held, and false when
// nothing was.
func (w *Watch) Clear(login string) (Login, bool) {
	now := w.conf().Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.logins[login]
	if e == nil || w.quiet(e, now) {
		return Login{}, false
	}
	l := w.view(login, e, now)
	delete(w.logins, login)
	w.markDirty(login)
	w.stats.Cleared++
	w.conf().Log.Info("login attack state cleared", "login", login, "under_attack", l.UnderAttack)
	return l, true
}

// Networks returns the networks login may try from during an attack.
func (w *Watch) Networks(ctx context.Context, login string) ([]Network, error) {
	return w.store.Networks(ctx, login, w.conf().Now().Add(-w.conf().TrustFor))
}

// Prune forgets successes older than TrustFor in the store and quiet
// logins in memory; the node runs it now and then.
func (w *Watch) Prune(ctx context.Context) error {
	now := w.conf().Now()
	w.mu.Lock()
	w.prune(now)
	w.mu.Unlock()
	_, err := w.store.Prune(ctx, now.Add(-w.conf().TrustFor))
	return err
}

// Run prunes every interval until ctx ends.
func (w *Watch) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := w.Prune(ctx); err != nil && ctx.Err() == nil {
				w.conf().Log.Error("login history not pruned", "err", err)
			}
		}
	}
}

// Stats returns the current counts.
func (w *Watch) Stats() Stats {
	now := w.conf().Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Tracked = len(w.logins)
	for _, e := range w.logins {
		if now.Before(e.until) {
			s.UnderAttack++
		}
	}
	return s
}
