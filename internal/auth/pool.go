package auth

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// ErrBusy is returned when a password check could not start in time: the
// wait queue was full, or the wait for the client key's turn and a free
// worker exceeded the deadline. The client gets a temporary reply and tries
// again later.
var ErrBusy = errors.New("auth: password checks busy")

// Pool runs password hashes on a bounded number of workers. Each hash of
// argon2id with submitd's parameters takes 19 MiB and tens of milliseconds
// of one CPU, so the number of workers bounds the memory and CPU that
// password checks can take, whatever the number of connections; a bounded
// queue and a deadline bound how many wait and for how long.
//
// One client key (the guard's key: an IPv4 address or IPv6 /64) has at most
// one hash in flight: its further attempts wait for their turn before they
// enter the queue, so one client with many connections takes one place in
// the queue, not many, and cannot crowd the others out.
type Pool struct {
	// workers holds a token per running hash; admitted one per attempt in
	// the queue or running.
	workers chan struct{}
	// others holds a token per hash running for a client that is not
	// clean (DoClean): such clients share all workers but one, which stays
	// for clean ones, so a flood of wrong passwords cannot take every
	// worker from customers who have not failed (SPEC R16a).
	others   chan struct{}
	admitted chan struct{}
	// wait is the longest an attempt waits for its turn and a worker.
	wait time.Duration

	// mu guards keys: for each key with a hash queued or running, a
	// channel closed when it ends.
	mu   sync.Mutex
	keys map[netip.Prefix]chan struct{}
}

// NewPool returns a pool of workers (at least 1) with room for queue
// attempts waiting for a worker, each waiting at most wait.
func NewPool(workers, queue int, wait time.Duration) *Pool {
	workers = max(workers, 1)
	queue = max(queue, 0)
	return &Pool{
		workers:  make(chan struct{}, workers),
		others:   make(chan struct{}, max(workers-1, 1)),
		admitted: make(chan struct{}, workers+queue),
		wait:     wait,
		keys:     map[netip.Prefix]chan struct{}{},
	}
}

// Do runs f on a worker once key has no other run in flight. It returns
// ErrBusy, without running f, when the queue is full or the wait exceeds the
// pool's deadline, and ctx.Err() when ctx ends first.
func (p *Pool) Do(ctx context.Context, key netip.Prefix, f func()) error {
	return p.DoClean(ctx, key, true, f)
}

// DoClean is Do for a client that is clean (has no failed logins) or not;
// one that is not waits for one of the workers it may use.
func (p *Pool) DoClean(ctx context.Context, key netip.Prefix, clean bool, f func()) error {
	deadline := time.NewTimer(p.wait)
	defer deadline.Stop()

	// The key's turn first: until then the attempt holds no place in the
	// queue.
	var mine chan struct{}
	for mine == nil {
		p.mu.Lock()
		other, taken := p.keys[key]
		if !taken {
			mine = make(chan struct{})
			p.keys[key] = mine
		}
		p.mu.Unlock()
		if taken {
			select {
			case <-other:
			case <-deadline.C:
				return ErrBusy
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	defer func() {
		p.mu.Lock()
		delete(p.keys, key)
		p.mu.Unlock()
		close(mine)
	}()

	// A place in the queue, or at once ErrBusy: an attempt that cannot even
	// queue would only wait for the deadline.
	select {
	case p.admitted <- struct{}{}:
	default:
		return ErrBusy
	}
	defer func() { <-p.admitted }()

	if !clean && cap(p.workers) > 1 {
		select {
		case p.others <- struct{}{}:
		case <-deadline.C:
			return ErrBusy
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-p.others }()
	}

	select {
	case p.workers <- struct{}{}:
	case <-deadline.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.workers }()
	f()
	return nil
}
