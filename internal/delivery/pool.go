package delivery

import (
	"context"
	"sync"
	"time"

	"submitd/internal/tlspolicy"
)

// PoolConfig says how sessions are reused. The zero value takes the
// defaults of internal/config.
type PoolConfig struct {
	// MaxMessages is how many messages one connection carries before it is
	// closed, so that no session lives for ever and a receiver's
	// per-session limits are not run into; default 100. 1 turns reuse off.
	MaxMessages int
	// IdleTimeout is how long a connection waits for its next message
	// before it is closed with QUIT; default 5s.
	IdleTimeout time.Duration
	// MaxPerDestination is the most connections open at once to one
	// destination (one MX address with one TLS mode, or the smarthost). A
	// delivery that finds them all busy waits for one to be free instead of
	// opening another, so the number of connections follows the backlog
	// up to this limit; default 20.
	MaxPerDestination int
	// MaxIdle bounds the idle sessions over all destinations, so that
	// mail to many different hosts does not leave as many connections
	// (and file descriptors) open for IdleTimeout; a session finding the
	// pool full is closed; default 100.
	MaxIdle int
}

// withDefaults fills the zero fields.
func (c PoolConfig) withDefaults() PoolConfig {
	if c.MaxMessages < 1 {
		c.MaxMessages = 100
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Second
	}
	if c.MaxPerDestination < 1 {
		c.MaxPerDestination = 20
	}
	if c.MaxIdle < 1 {
		c.MaxIdle = 100
	}
	return c
}

// destKey names a destination whose connections may carry each other's
// messages. Everything that decides how a session is set up is in it: a
// connection made under one TLS policy, or for another certificate name or
// login, never serves another.
type destKey struct {
	// name is the host name (certificate checks, Result.Host).
	name string
	// addr is the address dialled.
	addr string
	// mode is the TLS mode the session was set up with.
	mode tlsMode
	// user is the AUTH login, "" for none.
	user string
	// policy is the TLS policy the certificate was checked under.
	policy tlspolicy.Kind
}

func keyOf(t target) destKey {
	return destKey{name: t.name, addr: t.addr, mode: t.mode, user: t.user, policy: t.policy}
}

// session is an open connection that has said EHLO (and STARTTLS and AUTH
// where they apply) and may carry a message.
type session struct {
	// c is the conversation.
	c *client
	// key is the destination it belongs to.
	key destKey
	// info is how TLS went when the session was set up.
	info tlsInfo
	// used counts the messages it has carried.
	used int
	// idle closes it once it has waited IdleTimeout in the pool; nil
	// while it is in use.
	idle *time.Timer
}

// dest is the pool's record of one destination.
type dest struct {
	// open counts its connections, in use, idle or being opened.
	open int
	// idle are the sessions waiting for a message, most recently used last.
	idle []*session
	// waiters are deliveries waiting for a session or a free slot; each
	// channel is closed to wake its waiter.
	waiters []chan struct{}
	// domains are the recipient domains routed here (pool.routes).
	domains map[string]struct{}
}

// pool keeps the sessions of one sender between messages.
type pool struct {
	cfg PoolConfig
	// closeIdle ends a session that leaves the pool (QUIT and close).
	closeIdle func(*session)
	// limit, when set, gives a lower connection limit for a host name
	// (0: none), for hosts in back-off.
	limit func(name string) int

	mu    sync.Mutex
	dests map[destKey]*dest
	// routes map a recipient domain to the destination that last took a
	// message for it, as long as that destination has a connection: a
	// further message for the domain goes there without DNS lookups.
	routes map[string]destKey
	// closed is set by shutdown: sessions are no longer kept.
	closed bool
	// idle counts the idle sessions over all destinations.
	idle int
}

func newPool(cfg PoolConfig, closeIdle func(*session)) *pool {
	return &pool{cfg: cfg.withDefaults(), closeIdle: closeIdle, dests: map[destKey]*dest{}, routes: map[string]destKey{}}
}

// get returns an idle session of k, or nil and a reserved slot: the caller
// then opens a connection and must hand the slot back with put or release.
// When k has all the connections it may have and none is idle, get waits
// for one, until ctx is done.
func (p *pool) get(ctx context.Context, k destKey) (*session, error) {
	p.mu.Lock()
	d := p.dests[k]
	if d == nil {
		d = &dest{}
		p.dests[k] = d
	}
	for {
		if n := len(d.idle); n > 0 {
			s := d.idle[n-1]
			d.idle[n-1] = nil
			d.idle = d.idle[:n-1]
			p.idle--
			s.idle.Stop()
			s.idle = nil
			p.mu.Unlock()
			return s, nil
		}
		if d.open < p.maxOpen(k) {
			d.open++
			p.mu.Unlock()
			return nil, nil
		}
		ch := make(chan struct{})
		d.waiters = append(d.waiters, ch)
		p.mu.Unlock()
		select {
		case <-ch:
			p.mu.Lock()
		case <-ctx.Done():
			p.mu.Lock()
			if !p.dropWaiter(d, ch) {
				// Woken and cancelled at once: the wake-up is for
				// someone else.
				p.wakeLocked(d)
			}
			p.tidyLocked(k, d)
			p.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// maxOpen is the most connections k may have.
func (p *pool) maxOpen(k destKey) int {
	if p.limit != nil {
		if l := p.limit(k.name); l > 0 {
			return min(l, p.cfg.MaxPerDestination)
		}
	}
	return p.cfg.MaxPerDestination
}

// dropWaiter removes ch from d's waiters and reports whether it was there.
func (p *pool) dropWaiter(d *dest, ch chan struct{}) bool {
	for i, w := range d.waiters {
		if w == ch {
			d.waiters = append(d.waiters[:i], d.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// wakeLocked wakes the longest waiting delivery of d, if any.
func (p *pool) wakeLocked(d *dest) {
	if len(d.waiters) > 0 {
		close(d.waiters[0])
		d.waiters = d.waiters[1:]
	}
}

// tidyLocked forgets a destination with nothing open and nobody waiting,
// so the map holds only destinations in use.
func (p *pool) tidyLocked(k destKey, d *dest) {
	if d.open == 0 && len(d.waiters) == 0 && len(d.idle) == 0 {
		delete(p.dests, k)
		for dom := range d.domains {
			if p.routes[dom] == k {
				delete(p.routes, dom)
			}
		}
	}
}

// setRoute records that k took a message for domain. It is kept while k
// has connections; a domain's MX records are looked up again once the
// last one is closed, at most IdleTimeout after the last message.
func (p *pool) setRoute(domain string, k destKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.dests[k]
	if d == nil {
		return
	}
	if old, ok := p.routes[domain]; ok && old != k {
		if od := p.dests[old]; od != nil {
			delete(od.domains, domain)
		}
	}
	if d.domains == nil {
		d.domains = map[string]struct{}{}
	}
	d.domains[domain] = struct{}{}
	p.routes[domain] = k
}

// route returns the destination recorded for domain, if it still has a
// connection.
func (p *pool) route(domain string) (destKey, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.routes[domain]
	return k, ok
}

// put returns a session after a message: it waits in the pool for the next
// one, or is ended when it has carried MaxMessages or the pool is shutting
// down.
func (p *pool) put(s *session) {
	p.mu.Lock()
	d := p.dests[s.key]
	if p.closed || s.used >= p.cfg.MaxMessages || p.idle >= p.cfg.MaxIdle {
		p.mu.Unlock()
		p.closeIdle(s)
		p.release(s.key)
		return
	}
	s.idle = time.AfterFunc(p.cfg.IdleTimeout, func() { p.expire(s) })
	d.idle = append(d.idle, s)
	p.idle++
	p.wakeLocked(d)
	p.mu.Unlock()
}

// expire ends s if it is still idle.
func (p *pool) expire(s *session) {
	p.mu.Lock()
	d := p.dests[s.key]
	found := false
	if d != nil {
		for i, is := range d.idle {
			if is == s {
				d.idle = append(d.idle[:i], d.idle[i+1:]...)
				p.idle--
				found = true
				break
			}
		}
	}
	p.mu.Unlock()
	if found {
		p.closeIdle(s)
		p.release(s.key)
	}
}

// release hands back the slot of a connection of k that was closed or
// never opened.
func (p *pool) release(k destKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.dests[k]
	if d == nil {
		return
	}
	d.open--
	p.wakeLocked(d)
	p.tidyLocked(k, d)
}

// shutdown ends every idle session and keeps no more from now on.
func (p *pool) shutdown() {
	p.mu.Lock()
	p.closed = true
	var all []*session
	for _, d := range p.dests {
		for _, s := range d.idle {
			s.idle.Stop()
			all = append(all, s)
		}
		d.idle = nil
	}
	p.idle = 0
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.closeIdle(s)
			p.release(s.key)
		}()
	}
	wg.Wait()
}

// stats counts open and idle connections, for tests and logs.
func (p *pool) stats() (open, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.dests {
		open += d.open
		idle += len(d.idle)
	}
	return open, idle
}
