package spool

import (
	"os"
	"sync"
	"syscall"
)

// group makes the spool directory durable for many callers with one fsync.
//
// Every commit and every removal changes the directory (a rename in, an
// unlink out) and needs the directory fsynced before it may be relied on.
// Callers that arrive while a directory fsync is under way wait for the next
// one, which covers all of them: the first of them to find no fsync running
// runs it for the whole batch (the others only wait), so with n writers at
// once each pays about 1/n of a directory fsync. Nothing waits for a timer:
// a lone caller gets its fsync at once, as before.
type group struct {
	// syncDir fsyncs the directory; tests replace it to count and order
	// syncs.
	syncDir func() error

	mu   sync.Mutex
	cond *sync.Cond
	// busy says a caller is running a directory fsync right now.
	busy bool
	// next is the batch waiting for the fsync after the running one.
	next *batch
}

// batch is the callers one directory fsync answers.
type batch struct {
	// n counts the callers in the batch.
	n int
	// done is set once the batch's fsync has returned, with its error in err.
	done bool
	// err is what the fsync returned.
	err error
}

func newGroup(syncDir func() error) *group {
	g := &group{syncDir: syncDir}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// wait returns once a directory fsync that started after the call has
// returned, with that fsync's error. A change made to the directory before
// wait is called is durable when wait returns nil.
func (g *group) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next == nil {
		g.next = &batch{}
	}
	b := g.next
	b.n++
	for !b.done {
		if g.busy {
			g.cond.Wait()
			continue
		}
		// No fsync runs: this caller runs the one for its batch. Callers
		// arriving from now on go into a new batch, since this fsync may
		// have started before their change.
		g.busy = true
		g.next = nil
		g.mu.Unlock()
		err := g.syncDir()
		g.mu.Lock()
		g.busy = false
		b.done, b.err = true, err
		g.cond.Broadcast()
	}
	return b.err
}

// pending returns how many callers wait for the next fsync; tests use it.
func (g *group) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next == nil {
		return 0
	}
	return g.next.n
}

// fdatasync makes f's content and size durable. Unlike fsync it skips
// metadata that reading the file back does not need (timestamps), which is
// all a message or state file needs (SPEC R15).
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
