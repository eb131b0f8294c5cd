// Package guard is submitd's brute-force guard (SPEC R11, R11a): it counts
// failed AUTH attempts per client key — an IPv4 address or an IPv6 /64 by
// default — in a rolling window, blocks a key that reaches the limit, and
// lifts blocks when they run out or when support lifts them.
//
// An AUTH attempt takes a place of its key before the password is checked
// (Begin), and gets one only while the key's failures in the window plus the
// places held are below the limit, so however many attempts a client runs at
// once, no more passwords are checked than the limit allows (SPEC R11,
// decided). Taking a
// place, recording a failure and giving a place back are each one atomic
// step of a Counter.
//
// The state that decides a refusal lives in memory, so Blocked is a map
// lookup under a read lock and costs no I/O however many refused connections
// arrive. Every failure, block and unblock is also written through to a Store,
// which makes blocks and counts survive a restart, and whose change log brings
// changes made elsewhere (the CLI, other nodes sharing the store) to the
// running server within one poll interval.
//
// With the Redis store, shared by several nodes, the store does the counting
// steps itself, so the limit holds across the nodes, and blocks and unblocks
// reach every node's memory by pub/sub at once. While Redis does not answer,
// each node counts and blocks on its own (see sharedCounter).
package guard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/poll"
)

// Defaults of the zero Config fields (SPEC R11).
const (
	DefaultMaxFailures  = 10
	DefaultWindow       = time.Hour
	DefaultBlockFor     = time.Hour
	DefaultIPv4Prefix   = 32
	DefaultIPv6Prefix   = 64
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultMaxKeys holds memory for counting keys to about 200 MB.
	DefaultMaxKeys = 1 << 20
	// DefaultAttemptTimeout is far longer than a password check takes; it
	// only bounds how long the place of a session that vanished without
	// settling its attempt stays taken.
	DefaultAttemptTimeout = 5 * time.Minute
)

// storeTimeout bounds one store operation made on behalf of a session, so a
// stalled database delays an AUTH reply by at most this much.
const storeTimeout = 5 * time.Second

// pruneBatch is how many keys Prune changes per hold of the write lock.
const pruneBatch = 4096

// changesBatch is how many change-log entries one store read returns.
const changesBatch = 500

// Config is the guard's policy and its injected clock.
type Config struct {
	// MaxFailures blocks a key when it reaches this many failures in Window.
	MaxFailures int
	// Window is the rolling window failures are counted in.
	Window time.Duration
	// BlockFor is how long a block lasts from the failure that caused it.
	BlockFor time.Duration
	// IPv4Prefix is the prefix length IPv4 clients are counted by.
	IPv4Prefix int
	// IPv6Prefix is the prefix length IPv6 clients are counted by: a host
	// usually holds a whole /64, so counting single addresses would let it
	// try 2^64 times as often (SPEC R11, decided).
	IPv6Prefix int
	// Exempt are networks that are never blocked (SPEC R11a).
	Exempt []netip.Prefix
	// PollInterval is how often Run reads the store's change log.
	PollInterval time.Duration
	// MaxKeys caps the keys with failures kept in memory. Without a cap, a
	// client rotating through IPv6 /64s (a /48 holds 65 536 of them, a /32
	// four billion) grows memory by each failure for a whole window; at the
	// cap, the keys with the fewest failures are forgotten first.
	MaxKeys int
	// AttemptTimeout is how long an attempt holds its place at most (see
	// Begin): a place its session never settled is given back after it.
	// It must outlast any password check, or a check still running when its
	// place is given back lets one more attempt in than MaxFailures allows.
	AttemptTimeout time.Duration
	// Node names this guard in the change log; empty means a random name.
	Node string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.MaxFailures == 0 {
		c.MaxFailures = DefaultMaxFailures
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.BlockFor == 0 {
		c.BlockFor = DefaultBlockFor
	}
	if c.IPv4Prefix == 0 {
		c.IPv4Prefix = DefaultIPv4Prefix
	}
	if c.IPv6Prefix == 0 {
		c.IPv6Prefix = DefaultIPv6Prefix
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	// Clients are compared unmapped (Exempt), so an exempt network written
	// as IPv4-mapped IPv6 (::ffff:192.0.2.0/120) must be made IPv4 too, or
	// it would exempt nobody.
	exempt := make([]netip.Prefix, len(c.Exempt))
	for i, p := range c.Exempt {
		exempt[i] = normPrefix(p)
	}
	c.Exempt = exempt
	if c.Node == "" {
		var b [8]byte
		rand.Read(b[:])
		c.Node = "node-" + hex.EncodeToString(b[:])
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.MaxFailures < 1:
		return c, fmt.Errorf("guard: max failures %d: must be at least 1", c.MaxFailures)
	case c.Window < 0:
		return c, fmt.Errorf("guard: window %s: must be positive", c.Window)
	case c.BlockFor < 0:
		return c, fmt.Errorf("guard: block time %s: must be positive", c.BlockFor)
	case c.IPv4Prefix < 0 || c.IPv4Prefix > 32:
		return c, fmt.Errorf("guard: IPv4 prefix length %d: must be between 0 and 32", c.IPv4Prefix)
	case c.IPv6Prefix < 0 || c.IPv6Prefix > 128:
		return c, fmt.Errorf("guard: IPv6 prefix length %d: must be between 0 and 128", c.IPv6Prefix)
	case c.MaxKeys < 1:
		return c, fmt.Errorf("guard: max keys %d: must be at least 1", c.MaxKeys)
	case c.PollInterval < 0:
		return c, fmt.Errorf("guard: poll interval %s: must be positive", c.PollInterval)
	case c.AttemptTimeout < 0:
		return c, fmt.Errorf("guard: attempt timeout %s: must be positive", c.AttemptTimeout)
	}
	return c, nil
}

// Key returns the key ip is counted and blocked by: ip masked to
// IPv4Prefix or IPv6Prefix bits. An IPv4-mapped IPv6 address counts as the
// IPv4 address it carries. The zero Addr has no key (an invalid Prefix).
func (c Config) Key(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := c.IPv6Prefix
	if ip.Is4() {
		bits = c.IPv4Prefix
	}
	// A zone (fe80::1%eth0) would make otherwise equal keys differ.
	p, _ := ip.WithZone("").Prefix(bits)
	return p
}

// Target turns what support names in an unblock into the prefix to lift:
// a single address becomes its key, so that unblocking one IPv6 address
// lifts the /64 it is counted in.
func (c Config) Target(p netip.Prefix) netip.Prefix {
	p = normPrefix(p)
	if p.IsSingleIP() {
		return c.Key(p.Addr())
	}
	return p
}

// Stats are the guard's counters since start, for metrics.
type Stats struct {
	// Failures are the AUTH failures counted towards blocks.
	Failures uint64
	// ExemptFailures are the AUTH failures from exempt networks, not counted.
	ExemptFailures uint64
	// Blocks are the blocks this guard made.
	Blocks uint64
	// Refusals are the connections, sessions and AUTH attempts refused
	// because of a block.
	Refusals uint64
	// AtLimit are the AUTH attempts refused, without a block yet, because
	// the failures in the window and the attempts in flight made the limit.
	AtLimit uint64
	// Unblocks are the blocks support lifted before they ran out.
	Unblocks uint64
	// Expired are the blocks that ran out by themselves.
	Expired uint64
	// Evicted are the keys forgotten because MaxKeys was reached.
	Evicted uint64
	// StoreErrors are the store operations that failed.
	StoreErrors uint64
	// BlockedKeys is the number of keys blocked now.
	BlockedKeys int
	// TrackedKeys is the number of keys with failures in memory.
	TrackedKeys int
	// InFlight is the number of AUTH attempts holding a place now.
	InFlight int
	// Shared is true when the guard counts in a store several nodes share.
	Shared bool
	// SharedUp is true while that store answers; while it does not, the
	// guard counts and blocks on this node alone.
	SharedUp bool
}

// Guard counts AUTH failures and decides blocks. It is safe for concurrent
// use.
type Guard struct {
	// cfg is the policy, defaults filled in; SetConfig replaces it.
	cfg atomic.Pointer[Config]
	// store keeps the state durably; nil keeps it in memory only.
	store Store
	// log gets blocks, unblocks and store trouble.
	log *slog.Logger
	// count does the atomic steps of counting (see Counter).
	count Counter
	// shared is count when the store is shared by several nodes (Redis),
	// nil otherwise.
	shared *sharedCounter
	// placeSeq numbers the places of attempts.
	placeSeq atomic.Uint64

	// syncMu makes Sync calls take turns, so each change is applied once.
	syncMu sync.Mutex

	// mu guards the maps and seq.
	mu sync.RWMutex
	// failures are the failures in the window per key, oldest first, at
	// most MaxFailures of them.
	failures map[netip.Prefix][]Failure
	// blocks are the blocks per key.
	blocks map[netip.Prefix]Block
	// wide are the blocks support made by hand of networks that are not
	// one client key (a /24, a /48), by network. Blocked looks at them
	// only when there are any, so the usual case stays one map lookup.
	wide map[netip.Prefix]Block
	// places are the places of attempts in flight per key, at most
	// MaxFailures of them; they are not stored, since a restart ends the
	// sessions that held them.
	places map[netip.Prefix][]place
	// seq is the change-log position applied so far.
	seq int64

	// The counters of Stats.
	nFailures, nExempt, nBlocks, nRefusals, nAtLimit, nUnblocks, nExpired, nEvicted, nStoreErrors atomic.Uint64
	// evicting is set once keys are evicted, so the flood is logged once
	// per prune interval, not once per key.
	evicting atomic.Bool
}

// New makes a guard and loads the state from store. A nil store keeps the
// state in memory only.
func New(ctx context.Context, cfg Config, store Store, log *slog.Logger) (*Guard, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{
		store: store, log: log,
		failures: map[netip.Prefix][]Failure{},
		blocks:   map[netip.Prefix]Block{},
		wide:     map[netip.Prefix]Block{},
		places:   map[netip.Prefix][]place{},
	}
	g.cfg.Store(&cfg)
	g.count = &memCounter{g: g}
	if s, ok := store.(sharedStore); ok {
		// A node starts without the shared store too, counting alone
		// until it answers (see sharedCounter).
		g.shared = &sharedCounter{g: g, s: s, local: memCounter{g: g}}
		g.count = g.shared
		cctx, cancel := context.WithTimeout(ctx, storeTimeout)
		err := g.shared.connected(cctx)
		cancel()
		if err != nil {
			g.nStoreErrors.Add(1)
			log.Error("guard: shared store unreachable at start; counting AUTH failures and blocking on this node alone until it is back", "err", err)
		}
		return g, nil
	}
	if store != nil {
		if err := g.reload(ctx); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Config returns the configuration in effect, defaults filled in.
func (g *Guard) Config() Config { return *g.conf() }

// conf returns the configuration in force.
func (g *Guard) conf() *Config { return g.cfg.Load() }

// SetConfig puts a new policy in force while the guard runs (a reload):
// MaxFailures, Window, BlockFor, Exempt and MaxKeys. What the state is
// keyed and named by (the prefix lengths, Node), the poll interval, the
// attempt timeout and the clock stay as the guard was made with. Failures
// and blocks recorded go on: a block keeps the end it was given, and a
// key's failures count against the new limit from its next attempt. A
// shared store that applies the policy itself (Redis) is given it too.
func (g *Guard) SetConfig(c Config) error {
	old := g.conf()
	c.IPv4Prefix, c.IPv6Prefix, c.Node, c.PollInterval, c.AttemptTimeout, c.Now =
		old.IPv4Prefix, old.IPv6Prefix, old.Node, old.PollInterval, old.AttemptTimeout, old.Now
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	if cs, ok := g.store.(interface{ SetConfig(Config) error }); ok {
		if err := cs.SetConfig(c); err != nil {
			return err
		}
	}
	g.cfg.Store(&c)
	return nil
}

// Key returns the key ip is counted by; see Config.Key.
func (g *Guard) Key(ip netip.Addr) netip.Prefix { return g.conf().Key(ip) }

// Exempt reports whether ip is in an exempt network.
func (g *Guard) Exempt(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.conf().Exempt {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Blocked reports whether ip is blocked now (SPEC R11). It runs for every
// connection and every command of a session, so it does no I/O: one map
// lookup under a read lock, and the clock only when a block exists.
func (g *Guard) Blocked(ip netip.Addr) bool {
	key := g.conf().Key(ip)
	g.mu.RLock()
	b, ok := g.blocks[key]
	if !ok && len(g.wide) > 0 {
		b, ok = g.wideBlock(ip.Unmap().WithZone(""), g.conf().Now())
	}
	g.mu.RUnlock()
	if !ok || !g.conf().Now().Before(b.Until) || g.Exempt(ip) {
		return false
	}
	g.nRefusals.Add(1)
	return true
}

// Clean reports whether the key key has no failures in the window: the
// password pool serves such clients first (SPEC R16a), so that a flood of
// wrong passwords does not starve the customers who type theirs right.
func (g *Guard) Clean(key netip.Prefix) bool {
	g.mu.RLock()
	fs := g.failures[key]
	g.mu.RUnlock()
	return len(fs) == 0 || len(g.live(fs, g.conf().Now())) == 0
}

// wideBlock returns a network block in force that holds ip; the caller
// holds the lock.
func (g *Guard) wideBlock(ip netip.Addr, now time.Time) (Block, bool) {
	for p, b := range g.wide {
		if p.Contains(ip) && now.Before(b.Until) {
			return b, true
		}
	}
	return Block{}, false
}

// isKey reports whether p is a client key, as Key makes them, rather than a
// wider or narrower network.
func (g *Guard) isKey(p netip.Prefix) bool { return g.conf().Key(p.Addr()) == p }

// putBlock records b in memory, with the client keys or with the networks;
// the caller holds the write lock.
func (g *Guard) putBlock(b Block) {
	if g.isKey(b.Key) {
		g.blocks[b.Key] = b
		return
	}
	g.wide[b.Key] = b
}

// BlockNetwork blocks p, an address or a network, until until, as support
// asks by hand (SPEC R11a): a single address blocks the key it is counted
// by, so blocking one IPv6 address blocks its /64. The block is stored
// like one the guard made, so it survives a restart and reaches other
// processes through the change log. It returns the blocked prefix.
func (g *Guard) BlockNetwork(ctx context.Context, p netip.Prefix, until time.Time) (netip.Prefix, error) {
	p = g.Target(p)
	now := g.conf().Now()
	if !until.After(now) {
		return p, fmt.Errorf("guard: block %s: the end %s is not in the future", FormatKey(p), until.UTC().Format(time.RFC3339))
	}
	b := Block{Key: p, Since: now, Until: until}
	if g.store != nil {
		if err := g.store.Block(ctx, g.conf().Node, b); err != nil {
			return p, err
		}
	}
	g.mu.Lock()
	g.putBlock(b)
	g.mu.Unlock()
	g.nBlocks.Add(1)
	g.log.Warn("guard: blocked by support", "key", FormatKey(p), "until", until.UTC().Format(time.RFC3339))
	return p, nil
}

// Failure records a failed AUTH from ip in session sid that holds no place
// (see Begin), such as an AUTH exchange the client abandoned before any
// password was checked, and reports whether ip is blocked as a result (SPEC
// R11: every AUTH that does not succeed counts).
func (g *Guard) Failure(ip netip.Addr, sid string) bool {
	if !ip.IsValid() {
		return false
	}
	return g.fail(&Attempt{g: g, key: g.conf().Key(ip), exempt: g.Exempt(ip), sid: sid})
}

// persist writes failure f of key and, when f made one, the block to the
// store. The write is synchronous: failures are rare next to connections,
// the caller pads AUTH replies to a minimum duration anyway, and a failure
// that was answered is then also on disk. The decision itself was made in
// memory first, so a failing store does not stop blocking.
func (g *Guard) persist(key netip.Prefix, f Failure, out Outcome) {
	if g.store == nil || g.shared != nil {
		// A shared store recorded the failure and the block in the step
		// that decided them.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := g.store.AddFailure(ctx, g.conf().Node, key, f); err != nil {
		g.storeError("record failure", key, err)
	}
	if out.Made {
		if err := g.store.Block(ctx, g.conf().Node, out.Block); err != nil {
			g.storeError("record block", key, err)
		}
	}
}

// setFailures sets the failures of key in m (the guard's map, under the write
// lock, or one being loaded), first making room when key is new and m is at
// MaxKeys: of two keys picked at random (Go randomizes where a map range
// starts), the one with fewer failures, or with the same number the one that
// failed longer ago, is forgotten. A client working towards a block thus
// outlasts a flood of keys with one failure each; the store keeps the
// forgotten failures until they leave the window.
func (g *Guard) setFailures(m map[netip.Prefix][]Failure, key netip.Prefix, fs []Failure) {
	if _, ok := m[key]; !ok && len(m) >= g.conf().MaxKeys {
		var a, b netip.Prefix
		for k := range m {
			a = k
			break
		}
		for k := range m {
			if k != a {
				b = k
				break
			}
		}
		victim := a
		if b.IsValid() && less(m[b], m[a]) {
			victim = b
		}
		delete(m, victim)
		g.nEvicted.Add(1)
		if g.evicting.CompareAndSwap(false, true) {
			g.log.Warn("guard: too many keys with failures; forgetting those with the fewest",
				"max_keys", g.conf().MaxKeys, "forgotten", FormatKey(victim))
		}
	}
	m[key] = fs
}

// less reports whether failures a weigh less than b: fewer of them, or as
// many but the last one earlier.
func less(a, b []Failure) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return len(a) > 0 && a[len(a)-1].Time.Before(b[len(b)-1].Time)
}

// live drops the failures older than the window from fs (oldest first).
func (g *Guard) live(fs []Failure, now time.Time) []Failure {
	cut := now.Add(-g.conf().Window)
	i := 0
	for i < len(fs) && !fs[i].Time.After(cut) {
		i++
	}
	if i == 0 {
		return fs
	}
	return append(fs[:0:0], fs[i:]...)
}

func (g *Guard) storeError(what string, key netip.Prefix, err error) {
	g.nStoreErrors.Add(1)
	g.log.Error("guard: store write failed; the decision holds in memory", "op", what, "key", FormatKey(key), "err", err)
}

// Unblock lifts the blocks and clears the failures of every key overlapping
// p, an address or a network (SPEC R11a), and returns those keys. The places
// of attempts in flight go too, so the client can try again at once; the
// failures of those attempts still count when they come. The store
// is changed first, so other processes learn of it through the change log.
func (g *Guard) Unblock(ctx context.Context, p netip.Prefix) ([]netip.Prefix, error) {
	p = g.Target(p)
	var keys []netip.Prefix
	if g.store != nil {
		var err error
		keys, err = g.store.Unblock(ctx, g.conf().Node, p, g.conf().Now())
		if err != nil && g.shared != nil {
			// A block this node made while counting alone must not outlast
			// an outage of the shared store: it is lifted here, and the
			// error says the other nodes were not reached.
			g.applyUnblock(p, g.conf().Now(), "support")
			return nil, fmt.Errorf("guard: unblock %s: lifted on this node only: %w", FormatKey(p), err)
		}
		if err != nil {
			return nil, fmt.Errorf("guard: unblock %s: %w", FormatKey(p), err)
		}
	}
	keys = append(keys, g.applyUnblock(p, g.conf().Now(), "support")...)
	// The store and memory mostly name the same keys; a network can cover
	// a great many, so duplicates go by sorting, not by searching.
	slices.SortFunc(keys, comparePrefix)
	return slices.Compact(keys), nil
}

// Target turns what support names in an unblock into the prefix to lift;
// see Config.Target.
func (g *Guard) Target(p netip.Prefix) netip.Prefix { return g.conf().Target(p) }

// applyUnblock removes the keys overlapping p from memory and returns them.
func (g *Guard) applyUnblock(p netip.Prefix, now time.Time, by string) []netip.Prefix {
	var keys []netip.Prefix
	var lifted []Block
	g.mu.Lock()
	for k := range g.places {
		if p.Overlaps(k) {
			delete(g.places, k)
		}
	}
	for k := range g.failures {
		if p.Overlaps(k) {
			delete(g.failures, k)
			// A blocked key usually has failures too and is listed with
			// the blocks below. A lookup, not a search of keys, keeps a wide
			// unblock linear: it runs under the write lock, so every
			// connection waits for it.
			if _, blocked := g.blocks[k]; !blocked {
				keys = append(keys, k)
			}
		}
	}
	for _, m := range []map[netip.Prefix]Block{g.blocks, g.wide} {
		for k, b := range m {
			if p.Overlaps(k) {
				delete(m, k)
				keys = append(keys, k)
				if now.Before(b.Until) {
					lifted = append(lifted, b)
				}
			}
		}
	}
	g.mu.Unlock()
	for _, b := range lifted {
		g.nUnblocks.Add(1)
		g.log.Warn("guard: unblocked", "key", FormatKey(b.Key), "by", by,
			"blocked_since", b.Since.UTC().Format(time.RFC3339), "sessions", strings.Join(b.SIDs, ","))
	}
	return keys
}

// Stats returns the counters.
func (g *Guard) Stats() Stats {
	now := g.conf().Now()
	g.mu.RLock()
	active := 0
	for _, m := range []map[netip.Prefix]Block{g.blocks, g.wide} {
		for _, b := range m {
			if now.Before(b.Until) {
				active++
			}
		}
	}
	tracked := len(g.failures)
	inFlight := 0
	for _, ps := range g.places {
		for _, p := range ps {
			if now.Before(p.expires) {
				inFlight++
			}
		}
	}
	g.mu.RUnlock()
	return Stats{
		Failures:       g.nFailures.Load(),
		ExemptFailures: g.nExempt.Load(),
		Blocks:         g.nBlocks.Load(),
		Refusals:       g.nRefusals.Load(),
		AtLimit:        g.nAtLimit.Load(),
		Unblocks:       g.nUnblocks.Load(),
		Expired:        g.nExpired.Load(),
		Evicted:        g.nEvicted.Load(),
		StoreErrors:    g.nStoreErrors.Load(),
		BlockedKeys:    active,
		TrackedKeys:    tracked,
		InFlight:       inFlight,
		Shared:         g.shared != nil,
		SharedUp:       g.SharedUp(),
	}
}

// List returns the keys with failures in the window or a block in force, as
// Entries describes them. With a shared store they are every node's, read
// from the store; while it does not answer, this node's.
func (g *Guard) List() []Entry {
	if g.SharedUp() {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		now := g.conf().Now()
		st, err := g.store.Load(ctx, now.Add(-g.conf().Window))
		cancel()
		if err == nil {
			return Entries(st, now, g.conf().Window)
		}
		g.shared.down(err)
	}
	g.mu.RLock()
	st := &State{Failures: make(map[netip.Prefix][]Failure, len(g.failures)), Blocks: make(map[netip.Prefix]Block, len(g.blocks))}
	for k, fs := range g.failures {
		st.Failures[k] = slices.Clone(fs)
	}
	for _, m := range []map[netip.Prefix]Block{g.blocks, g.wide} {
		for k, b := range m {
			st.Blocks[k] = b
		}
	}
	g.mu.RUnlock()
	return Entries(st, g.conf().Now(), g.conf().Window)
}

// Run keeps the guard in step with its store until ctx is done: it reads the
// change log every PollInterval, so an unblock made with the CLI takes
// effect within a second (SPEC R11a), and prunes expired state every minute.
func (g *Guard) Run(ctx context.Context) {
	if g.shared != nil {
		// A shared store tells of changes as they are made.
		g.shared.run(ctx)
		return
	}
	poll.Loop{Every: g.conf().PollInterval, Sync: g.Sync, Prune: g.Prune,
		What: "guard: the store's change log", Log: g.log}.Run(ctx)
}

// Sync applies the changes other processes made to the store since the last
// call. When the change log no longer reaches back that far, it reloads the
// whole state.
func (g *Guard) Sync(ctx context.Context) error {
	if g.store == nil || g.shared != nil {
		return nil
	}
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	for {
		g.mu.RLock()
		after := g.seq
		g.mu.RUnlock()
		chs, err := g.store.Changes(ctx, after, changesBatch)
		if errors.Is(err, ErrChangesPruned) {
			g.log.Warn("guard: change log pruned past this node's position; reloading state", "position", after)
			return g.reload(ctx)
		}
		if err != nil {
			return fmt.Errorf("guard: read changes after %d: %w", after, err)
		}
		for _, ch := range chs {
			if ch.Node != g.conf().Node {
				g.apply(ch)
			}
			g.mu.Lock()
			if ch.Seq > g.seq {
				g.seq = ch.Seq
			}
			g.mu.Unlock()
		}
		if len(chs) < changesBatch {
			return nil
		}
	}
}

// apply applies a change another process made.
func (g *Guard) apply(ch Change) {
	switch ch.Kind {
	case ChangeFailure:
		// Counted only: the node that saw the failure decides the block and
		// logs it, and this node learns of the block from its change.
		f := Failure{Time: ch.Time}
		if len(ch.SIDs) > 0 {
			f.SID = ch.SIDs[0]
		}
		now := g.conf().Now()
		if !f.Time.After(now.Add(-g.conf().Window)) {
			return
		}
		g.mu.Lock()
		fs := g.live(g.failures[ch.Key], now)
		if !slices.ContainsFunc(fs, func(x Failure) bool { return x.SID == f.SID && x.Time.Equal(f.Time) }) {
			fs = append(fs, f)
			slices.SortStableFunc(fs, func(a, b Failure) int { return a.Time.Compare(b.Time) })
		}
		g.setFailures(g.failures, ch.Key, g.trim(fs))
		g.mu.Unlock()
	case ChangeBlock:
		g.mu.Lock()
		g.putBlock(Block{Key: ch.Key, Since: ch.Time, Until: ch.Until, SIDs: ch.SIDs})
		g.mu.Unlock()
		g.log.Info("guard: block made elsewhere applied", "key", FormatKey(ch.Key), "by", ch.Node,
			"until", ch.Until.UTC().Format(time.RFC3339), "sessions", strings.Join(ch.SIDs, ","))
	case ChangeUnblock:
		g.applyUnblock(ch.Key, g.conf().Now(), ch.Node)
	}
}

// reload replaces the memory state with the store's.
func (g *Guard) reload(ctx context.Context) error {
	now := g.conf().Now()
	st, err := g.store.Load(ctx, now.Add(-g.conf().Window))
	if err != nil {
		return fmt.Errorf("guard: load state: %w", err)
	}
	failures := make(map[netip.Prefix][]Failure, len(st.Failures))
	for k, fs := range st.Failures {
		slices.SortStableFunc(fs, func(a, b Failure) int { return a.Time.Compare(b.Time) })
		if fs = g.trim(g.live(fs, now)); len(fs) > 0 {
			g.setFailures(failures, k, fs)
		}
	}
	g.mu.Lock()
	g.failures, g.seq = failures, st.Seq
	g.blocks = make(map[netip.Prefix]Block, len(st.Blocks))
	g.wide = map[netip.Prefix]Block{}
	for _, b := range st.Blocks {
		if now.Before(b.Until) {
			g.putBlock(b)
		}
	}
	g.mu.Unlock()
	return nil
}

// Prune forgets failures older than the window and blocks that ran out, in
// memory and in the store.
func (g *Guard) Prune(ctx context.Context) error {
	now := g.conf().Now()
	var expired []Block
	g.evicting.Store(false)
	// With a million keys, a pass over them takes a good part of a second.
	// Blocked, on every connection and read, waits for the write lock, so
	// the pass runs under the read lock and the write lock is taken only
	// to change what the pass found, a batch at a time.
	var stale []netip.Prefix
	cut := now.Add(-g.conf().Window)
	g.mu.RLock()
	for _, m := range []map[netip.Prefix]Block{g.blocks, g.wide} {
		for _, b := range m {
			if !now.Before(b.Until) {
				expired = append(expired, b)
			}
		}
	}
	for k, fs := range g.failures {
		if len(fs) > 0 && !fs[0].Time.After(cut) {
			stale = append(stale, k)
		}
	}
	g.mu.RUnlock()
	g.mu.Lock()
	ended := expired[:0]
	for _, b := range expired {
		// Unless a new block replaced it meanwhile.
		m := g.blocks
		if !g.isKey(b.Key) {
			m = g.wide
		}
		if cur, ok := m[b.Key]; ok && !now.Before(cur.Until) {
			delete(m, b.Key)
			ended = append(ended, b)
		}
	}
	expired = ended
	// Places expire only when their session died without settling them;
	// there are few, and at most MaxFailures per key.
	for k, ps := range g.places {
		g.setPlaces(k, livePlaces(ps, now))
	}
	g.mu.Unlock()
	for len(stale) > 0 {
		n := min(len(stale), pruneBatch)
		g.mu.Lock()
		for _, k := range stale[:n] {
			if fs, ok := g.failures[k]; ok {
				if fs = g.live(fs, now); len(fs) == 0 {
					delete(g.failures, k)
				} else {
					g.failures[k] = fs
				}
			}
		}
		g.mu.Unlock()
		stale = stale[n:]
	}
	for _, b := range expired {
		g.nExpired.Add(1)
		g.log.Info("guard: block ran out", "key", FormatKey(b.Key),
			"blocked_since", b.Since.UTC().Format(time.RFC3339), "sessions", strings.Join(b.SIDs, ","))
	}
	if g.store == nil {
		return nil
	}
	// Store.Prune keeps every block until it has ended, however long it is.
	if err := g.store.Prune(ctx, cut); err != nil {
		return fmt.Errorf("guard: prune before %s: %w", cut.UTC().Format(time.RFC3339), err)
	}
	return nil
}

// sessionIDs appends the distinct session ids of fs to ids, in order.
func sessionIDs(fs []Failure, ids []string) []string {
	for _, f := range fs {
		if f.SID != "" && !slices.Contains(ids, f.SID) {
			ids = append(ids, f.SID)
		}
	}
	return ids
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
