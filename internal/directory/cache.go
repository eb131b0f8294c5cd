package directory

import (
	"context"
	"sync"
	"time"

	"submitd/internal/address"
)

// Feed hands the directory's changes, made by this process or any other, to
// its subscribers: a Watcher reading SQLite's change log, or a Listener on
// PostgreSQL's NOTIFY channel. Whoever keeps something derived from the
// directory (Cache, the credential cache) subscribes without caring which.
type Feed interface {
	// Subscribe adds f, called with every change from now on, and with
	// ChangesLost when changes may have been missed. f must not block.
	Subscribe(f func(Change))
	// Run follows the changes until ctx is done.
	Run(ctx context.Context)
}

var (
	_ Feed = (*Watcher)(nil)
	_ Feed = (*Listener)(nil)
)

// subscribers is a Feed's list of subscribers.
type subscribers struct {
	// mu guards fs.
	mu sync.Mutex
	// fs are called with each change, in order.
	fs []func(Change)
}

// add adds f.
func (s *subscribers) add(f func(Change)) {
	s.mu.Lock()
	s.fs = append(s.fs, f)
	s.mu.Unlock()
}

// deliver calls every subscriber with ch.
func (s *subscribers) deliver(ch Change) {
	s.mu.Lock()
	fs := s.fs
	s.mu.Unlock()
	for _, f := range fs {
		f(ch)
	}
}

// DefaultCacheEntries bounds the accounts a Cache holds (a few hundred
// bytes each).
const DefaultCacheEntries = 50000

// AccountSource is what a Cache looks accounts up in: a Store.
type AccountSource interface {
	// Account returns one account, or an error wrapping ErrNotFound.
	Account(ctx context.Context, address string) (*Account, error)
}

// Cache remembers accounts looked up for AUTH for a short time, so that a
// busy node does not ask a shared database for the same account at every
// login. Subscribed to a Feed (Changed), it drops an account as soon as a
// change to it is announced; the TTL bounds how long a change whose notice
// was lost goes unseen. Only accounts found are remembered: logins that do
// not exist, which any client can make up, cost a lookup each and take no
// memory. It is safe for concurrent use.
type Cache struct {
	// src is where accounts are looked up; ttl how long one is used; max
	// the most held; now the clock.
	src AccountSource
	ttl time.Duration
	max int
	now func() time.Time

	// mu guards the fields below.
	mu sync.Mutex
	// entries are the cached accounts by normalized address.
	entries map[string]cachedAccount
	// gen counts the drops; a lookup stores its answer only if none
	// happened while it ran, since the answer may predate the change.
	gen uint64
}

// cachedAccount is one remembered lookup.
type cachedAccount struct {
	// acct is the account as looked up; expires is when it stops being
	// used.
	acct    Account
	expires time.Time
}

// NewCache returns a cache over src using each account for ttl, holding at
// most entries (0: DefaultCacheEntries); now nil means time.Now.
func NewCache(src AccountSource, ttl time.Duration, entries int, now func() time.Time) *Cache {
	if entries <= 0 {
		entries = DefaultCacheEntries
	}
	if now == nil {
		now = time.Now
	}
	return &Cache{src: src, ttl: ttl, max: entries, now: now, entries: map[string]cachedAccount{}}
}

// Account implements AccountSource: the cached account while it is fresh,
// else the source's answer. Errors are never remembered, so an unreachable
// database is asked again at the next login.
func (c *Cache) Account(ctx context.Context, addr string) (*Account, error) {
	a, err := address.Parse(addr)
	if err != nil {
		return c.src.Account(ctx, addr)
	}
	key := a.String()
	c.mu.Lock()
	e, ok := c.entries[key]
	gen := c.gen
	c.mu.Unlock()
	if ok && c.now().Before(e.expires) {
		acct := e.acct
		return &acct, nil
	}
	acct, err := c.src.Account(ctx, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.entries) >= c.max {
			c.evict()
		}
		c.entries[key] = cachedAccount{acct: *acct, expires: c.now().Add(c.ttl)}
	}
	c.mu.Unlock()
	return acct, nil
}

// evict makes room: the expired entries go, and if none had, one other.
// c.mu is held.
func (c *Cache) evict() {
	now := c.now()
	n := len(c.entries)
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < n {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}

// Changed drops what ch may have made stale; it is a Feed subscriber. A
// change to a domain or its aliases drops the domain's accounts, whose
// Aliases it changes.
func (c *Cache) Changed(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	switch {
	case ch.Kind == ChangesLost:
		clear(c.entries)
	case ch.IsAccount():
		delete(c.entries, ch.Name)
	default:
		for k, e := range c.entries {
			if e.acct.Domain == ch.Domain {
				delete(c.entries, k)
			}
		}
	}
}

// Len returns how many accounts are cached.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
