package tlspolicy

import (
	"context"
	"sync"
	"time"
)

// DefaultMaxCached is how many domains' policies a Cache keeps unless told
// otherwise.
const DefaultMaxCached = 10000

// Cache keeps fetched MTA-STS policies for their max_age (RFC 8461 §5.1).
// A policy in force must stay in force until then: were it forgotten, an
// attacker who strips the domain's _mta-sts TXT record, or keeps the
// policy host from answering, would have the mail sent without it. So the
// node keeps one Cache over reloads, and with a Store (Restore, Flush)
// over restarts. It is safe for concurrent use.
type Cache struct {
	// max bounds the domains kept, in memory and in the store.
	max int

	mu      sync.Mutex
	entries map[string]*cached
	// store keeps the policies; nil keeps nothing (Restore sets it).
	store Store
	// pending are the policies fetched since the last Flush, by domain.
	pending map[string]*cached
}

// cached is an MTA-STS policy kept for its max_age (RFC 8461 §5.1).
type cached struct {
	policy  *Policy
	id      string
	fetched time.Time
	expires time.Time
}

// NewCache returns an empty Cache of at most max domains; max <= 0 is
// DefaultMaxCached.
func NewCache(max int) *Cache {
	if max <= 0 {
		max = DefaultMaxCached
	}
	return &Cache{max: max, entries: map[string]*cached{}, pending: map[string]*cached{}}
}

// get returns the policy cached for domain, nil when none is or it has
// expired at now.
func (c *Cache) get(domain string, now time.Time) *cached {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[domain]
	if e != nil && !now.Before(e.expires) {
		delete(c.entries, domain)
		e = nil
	}
	return e
}

// put caches e for domain, making room when the cache is full, and notes
// it for the next Flush.
func (c *Cache) put(domain string, e *cached, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[domain]; !ok && len(c.entries) >= c.max {
		c.evictLocked(now)
	}
	c.entries[domain] = e
	// pending holds no more domains than the cache may: should the store
	// fail that long, the newest ones wait in memory only.
	if _, ok := c.pending[domain]; c.store != nil && (ok || len(c.pending) < c.max) {
		c.pending[domain] = e
	}
}

// evictLocked makes room in the cache: expired policies go, and when none
// had expired, the one expiring first.
func (c *Cache) evictLocked(now time.Time) {
	var first string
	for d, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, d)
		} else if first == "" || e.expires.Before(c.entries[first].expires) {
			first = d
		}
	}
	if len(c.entries) >= c.max && first != "" {
		delete(c.entries, first)
	}
}

// Len is how many domains have a policy cached.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Restore loads the policies in st that are in force at now, at most the
// cache's bound of them, those expiring last, and keeps saving there
// (Flush). A policy already cached, fetched since, wins over the stored
// one of the same domain.
func (c *Cache) Restore(ctx context.Context, st Store, now time.Time) error {
	ps, err := st.LoadPolicies(ctx, now, c.max)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.store = st
	for _, sp := range ps {
		if _, ok := c.entries[sp.Domain]; ok || !now.Before(sp.Expires) {
			continue
		}
		if len(c.entries) >= c.max {
			c.evictLocked(now)
		}
		p := sp.Policy
		c.entries[sp.Domain] = &cached{policy: &p, id: sp.ID, fetched: sp.Fetched, expires: sp.Expires}
	}
	return nil
}

// Flush saves the policies fetched since the last Flush; the store then
// drops the expired ones and keeps no more than the cache's bound. What
// could not be saved is tried again at the next Flush, unless a newer
// policy of its domain came since.
func (c *Cache) Flush(ctx context.Context, now time.Time) error {
	c.mu.Lock()
	st := c.store
	if st == nil || len(c.pending) == 0 {
		c.mu.Unlock()
		return nil
	}
	pending := c.pending
	c.pending = map[string]*cached{}
	c.mu.Unlock()
	ps := make([]StoredPolicy, 0, len(pending))
	for d, e := range pending {
		ps = append(ps, StoredPolicy{Domain: d, ID: e.id, Policy: *e.policy, Fetched: e.fetched, Expires: e.expires})
	}
	err := st.SavePolicies(ctx, ps, now, c.max)
	if err != nil {
		c.mu.Lock()
		for d, e := range pending {
			if _, ok := c.pending[d]; !ok && len(c.pending) < c.max {
				c.pending[d] = e
			}
		}
		c.mu.Unlock()
	}
	return err
}
