package guard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sharedTimeout bounds one step of a shared counter made for a session: past
// it the node counts on its own (see sharedCounter), so a stalled Redis adds
// at most this much to one AUTH before every later one is counted locally.
const sharedTimeout = time.Second

// sharedStore is a Store that several nodes share and that does the counting
// steps of a Counter itself, each atomically for all the nodes (Redis).
type sharedStore interface {
	Store
	// take takes place for an attempt; see Counter.Take.
	take(ctx context.Context, key netip.Prefix, place string, now, expires time.Time) (Verdict, error)
	// peek answers what take would, taking nothing; see Counter.Peek.
	peek(ctx context.Context, key netip.Prefix, now time.Time) (Verdict, error)
	// fail records a failure made by node; see Counter.Fail.
	fail(ctx context.Context, node string, key netip.Prefix, place string, f Failure) (Outcome, error)
	// release gives a place back; see Counter.Release.
	release(ctx context.Context, key netip.Prefix, place string) error
	// blocks returns the blocks in force at now.
	blocks(ctx context.Context, now time.Time) ([]Block, error)
	// watch follows the blocks and unblocks of every node until the
	// connection fails or ctx ends; see Redis.watch.
	watch(ctx context.Context, retry time.Duration, down func() bool,
		connected func(context.Context) error, changed func(Change), bad func(error)) error
}

var _ sharedStore = (*Redis)(nil)

// sharedCounter is the Counter of a guard whose store does the counting for
// several nodes. While the store answers, every step is the store's, and the
// node keeps a copy of its own failures and of every block (the local set
// that Blocked reads without waiting on the store). When a step fails, the
// node says so once, loudly, and counts on its own with the memory counter,
// on what it saw itself, until the store answers again: customers can still
// log in, and an attacker still meets the limit on each node (issue 11,
// fault behaviour).
type sharedCounter struct {
	// g is the guard the counter serves.
	g *Guard
	// s is the shared store.
	s sharedStore
	// local counts while the store is unreachable.
	local memCounter
	// up is true while the store answers.
	up atomic.Bool

	// mu guards madeAlone.
	mu sync.Mutex
	// madeAlone are the blocks this node made on its own while the store was
	// unreachable; they are written to the store when it is back, so the
	// other nodes refuse the client too.
	madeAlone []Block
}

var _ Counter = (*sharedCounter)(nil)

// place names place id of this node in the store, where every node's places
// of a key are together.
func (c *sharedCounter) place(id uint64) string {
	return c.g.conf().Node + ":" + strconv.FormatUint(id, 10)
}

// down records that the store did not answer; only the first failure of an
// outage is logged.
func (c *sharedCounter) down(err error) {
	c.g.nStoreErrors.Add(1)
	if c.up.CompareAndSwap(true, false) {
		c.g.log.Error("guard: shared store unreachable; counting AUTH failures and blocking on this node alone until it is back", "err", err)
	}
}

// Take implements Counter.
func (c *sharedCounter) Take(key netip.Prefix, id uint64, now, expires time.Time) Verdict {
	if c.up.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		v, err := c.s.take(ctx, key, c.place(id), now, expires)
		cancel()
		if err == nil {
			if v == Granted {
				// The node's own places are kept too: they are its attempts
				// in flight (Stats), and they count against the limit if
				// the node must count alone before they are settled.
				g := c.g
				g.mu.Lock()
				g.setPlaces(key, append(livePlaces(g.places[key], now), place{id: id, expires: expires}))
				g.mu.Unlock()
			}
			return v
		}
		c.down(err)
	}
	return c.local.Take(key, id, now, expires)
}

// Peek implements Counter. While the store answers, the answer is the
// store's, so that the failures and attempts of every node count.
func (c *sharedCounter) Peek(key netip.Prefix, now time.Time) Verdict {
	if c.up.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		v, err := c.s.peek(ctx, key, now)
		cancel()
		if err == nil {
			return v
		}
		c.down(err)
	}
	return c.local.Peek(key, now)
}

// Fail implements Counter.
func (c *sharedCounter) Fail(key netip.Prefix, id uint64, f Failure) Outcome {
	if c.up.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		out, err := c.s.fail(ctx, c.g.conf().Node, key, c.place(id), f)
		cancel()
		if err == nil {
			c.mirror(key, id, f, out)
			return out
		}
		c.down(err)
	}
	out := c.local.Fail(key, id, f)
	if out.Made {
		c.mu.Lock()
		c.madeAlone = append(c.madeAlone, out.Block)
		c.mu.Unlock()
	}
	return out
}

// mirror keeps this node's copy of a failure the store recorded, so that
// counting on its own after an outage starts from what the node saw, and
// the block the store answered with, so that Blocked knows it at once.
func (c *sharedCounter) mirror(key netip.Prefix, id uint64, f Failure, out Outcome) {
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dropPlace(key, id)
	g.setFailures(g.failures, key, g.trim(append(g.live(g.failures[key], f.Time), f)))
	if out.Blocked {
		g.putBlock(out.Block)
	}
}

// Release implements Counter.
func (c *sharedCounter) Release(key netip.Prefix, id uint64) {
	c.local.Release(key, id)
	if !c.up.Load() {
		// The place, if the store has it, expires there by itself.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	if err := c.s.release(ctx, key, c.place(id)); err != nil {
		c.down(err)
	}
}

// connected runs when the store answers again (and at start): the blocks are
// read in full, since the ones published meanwhile were missed, the blocks
// made alone meanwhile are written to the store, and counting is shared
// again.
func (c *sharedCounter) connected(ctx context.Context) error {
	g := c.g
	now := g.conf().Now()
	c.mu.Lock()
	alone := c.madeAlone
	c.madeAlone = nil
	c.mu.Unlock()
	for i, b := range alone {
		g.mu.RLock()
		cur, ok := g.blocks[b.Key]
		g.mu.RUnlock()
		// Unless support lifted it meanwhile, or it ran out.
		if !ok || !cur.Until.Equal(b.Until) || !now.Before(b.Until) {
			continue
		}
		if err := c.s.Block(ctx, g.conf().Node, b); err != nil {
			c.mu.Lock()
			c.madeAlone = append(c.madeAlone, alone[i:]...)
			c.mu.Unlock()
			return err
		}
	}
	// The blocks this node knew before the read are replaced by the
	// store's; one a session of this node put in meanwhile (the store
	// answered its failure with it) is newer than the read and stays.
	g.mu.RLock()
	before := make(map[netip.Prefix]bool, len(g.blocks)+len(g.wide))
	for _, m := range []map[netip.Prefix]Block{g.blocks, g.wide} {
		for k := range m {
			before[k] = true
		}
	}
	g.mu.RUnlock()
	bs, err := c.s.blocks(ctx, now)
	if err != nil {
		return err
	}
	g.mu.Lock()
	blocks := make(map[netip.Prefix]Block, len(bs))
	wide := map[netip.Prefix]Block{}
	for _, m := range []map[netip.Prefix]Block{g.blocks, g.wide} {
		for k, b := range m {
			if !before[k] {
				if g.isKey(k) {
					blocks[k] = b
				} else {
					wide[k] = b
				}
			}
		}
	}
	g.blocks, g.wide = blocks, wide
	for _, b := range bs {
		g.putBlock(b)
	}
	g.mu.Unlock()
	if !c.up.Swap(true) {
		g.log.Warn("guard: shared store reachable; AUTH failures are counted for all nodes again", "blocks", len(bs))
	}
	return nil
}

// changed applies a block or unblock another node published.
func (c *sharedCounter) changed(ch Change) {
	if ch.Node == c.g.conf().Node {
		return
	}
	c.g.apply(ch)
}

// run follows the store until ctx ends: the subscription feeds the local
// set of blocks, and when it breaks the node counts alone and subscribes
// again every retry interval. Expired state is pruned every minute.
func (c *sharedCounter) run(ctx context.Context) {
	g := c.g
	retry := g.conf().PollInterval
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := g.Prune(ctx); err != nil && c.up.Load() {
					g.log.Warn("guard: prune", "err", err)
				}
			}
		}
	}()
	bad := func(err error) { g.log.Warn("guard: ignored a message on the changes channel", "err", err) }
	for {
		err := c.s.watch(ctx, retry, func() bool { return !c.up.Load() }, c.connected, c.changed, bad)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("subscription ended")
		}
		c.down(fmt.Errorf("follow changes: %w", err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// SharedUp reports whether the guard counts in a shared store that answers
// now; false too when it has none.
func (g *Guard) SharedUp() bool { return g.shared != nil && g.shared.up.Load() }
