package trace

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/queue"
	"submitd/internal/spool"
)

// Bounds of the Recorder: the items waiting to be written (past it they
// are dropped and counted, never waited for), how many one transaction
// takes, and how many it keeps for a retry while the store fails.
const (
	backlog  = 8192
	maxBatch = 512
	maxHeld  = 8192
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// item is one thing to write: a message accepted, or an event.
type item struct {
	msg *Message
	ev  Event
	// open reads the content of a message accepted without it in memory,
	// for its Subject and Message-ID; it runs on the writer.
	open func() (io.ReadCloser, error)
}

// Recorder writes the history in the background, in batches, so that
// neither the SMTP session nor the delivery worker waits for the store. It
// is the queue's Tracer; Accepted goes on the spool's commit hook.
type Recorder struct {
	store     Store
	log       *slog.Logger
	retention time.Duration
	ch        chan item
	done      chan struct{}

	// mu orders sends against Close.
	mu     sync.RWMutex
	closed bool

	// dropped counts items not queued because the backlog was full;
	// failed those the store would not take.
	dropped, failed atomic.Uint64

	// Spool, when set, reads the Subject and Message-ID of messages whose
	// content the commit did not hold in memory. Set it before use.
	Spool *spool.Spool
}

var _ queue.Tracer = (*Recorder)(nil)

// RecorderStats are the Recorder's backlog and losses, for metrics.
type RecorderStats struct {
	// Backlog is the items waiting to be written.
	Backlog int
	// Dropped counts items dropped because the backlog was full.
	Dropped uint64
	// Failed counts items the store failed to save.
	Failed uint64
}

// NewRecorder starts the background writer and the pruner, which deletes
// what is older than retention, as the session log does.
func NewRecorder(store Store, retention time.Duration, log *slog.Logger) *Recorder {
	r := &Recorder{store: store, log: log, retention: retention, ch: make(chan item, backlog), done: make(chan struct{})}
	go r.run()
	return r
}

// Stats returns the backlog and the counts of lost items.
func (r *Recorder) Stats() RecorderStats {
	return RecorderStats{Backlog: len(r.ch), Dropped: r.dropped.Load(), Failed: r.failed.Load()}
}

// send queues it, or drops it when the backlog is full: a stalled store
// must not stall SMTP or delivery; the server log has the same facts.
func (r *Recorder) send(it item) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return
	}
	select {
	case r.ch <- it:
	default:
		if r.dropped.Add(1)%1000 == 1 {
			r.log.Error("trace: backlog full, delivery history not stored", "dropped", r.dropped.Load())
		}
	}
}

// Accepted records a message the spool committed. Its Subject and
// Message-ID are read here from the content the commit holds, a bounded
// read of the header; a message the commit did not hold is read by the
// writer.
func (r *Recorder) Accepted(env *spool.Envelope) {
	m := &Message{QueueID: env.ID, Received: env.Received, SessionID: env.SessionID, ClientIP: env.ClientIP,
		Account: env.Account, From: env.From, Size: env.Size, Kind: env.Kind, Rcpts: make([]Rcpt, len(env.To))}
	for i, to := range env.To {
		m.Rcpts[i] = Rcpt{Addr: NormAddr(to)}
	}
	it := item{msg: m}
	if env.Content != nil {
		m.Subject, m.MessageID = HeaderFacts(headerOf(env.Content))
	} else if sp := r.Spool; sp != nil {
		id := env.ID
		it.open = func() (io.ReadCloser, error) {
			rc, _, err := sp.Message(id)
			return rc, err
		}
	}
	r.send(it)
}

// Trace implements queue.Tracer.
func (r *Recorder) Trace(ev queue.TraceEvent) {
	r.send(item{ev: FromQueue(ev)})
}

// FromQueue is a queue event as the history keeps it.
func FromQueue(ev queue.TraceEvent) Event {
	e := Event{QueueID: ev.QueueID, Time: ev.Time, Kind: ev.Kind, Host: ev.Host, TLS: ev.TLS, Reply: ev.Reply, Next: ev.Next, Detail: ev.Detail}
	if ev.Rcpt != "" {
		e.Rcpt = NormAddr(ev.Rcpt)
	}
	return e
}

// Close writes what is queued and stops.
func (r *Recorder) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.ch)
	}
	r.mu.Unlock()
	<-r.done
}

func (r *Recorder) run() {
	defer close(r.done)
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	r.prune()
	// held are items whose save failed, oldest first, tried again when
	// retry fires.
	var held []item
	var retry <-chan time.Time
	wait := retryMin
	// hold keeps the newest maxHeld of its for the retry, counting the
	// older ones as failed.
	hold := func(its []item) {
		if n := len(its) - maxHeld; n > 0 {
			r.failed.Add(uint64(n))
			its = its[n:]
		}
		held = its
	}
	save := func(its []item) {
		if err := r.store.Save(context.Background(), r.batch(its)); err != nil {
			if held == nil {
				r.log.Error("trace: save failed; holding the delivery history and retrying", "items", len(its), "err", err)
			}
			hold(its)
			retry, wait = time.After(wait), min(2*wait, retryMax)
			return
		}
		held, retry, wait = nil, nil, retryMin
	}
	for {
		select {
		case it, ok := <-r.ch:
			if !ok {
				if held != nil {
					if err := r.store.Save(context.Background(), r.batch(held)); err != nil {
						r.failed.Add(uint64(len(held)))
						r.log.Error("trace: save failed at shutdown", "items", len(held), "err", err)
					}
				}
				return
			}
			its := append(held, it)
		more:
			for len(its) < len(held)+maxBatch {
				select {
				case it, ok := <-r.ch:
					if !ok {
						break more
					}
					its = append(its, it)
				default:
					break more
				}
			}
			if held != nil {
				// The store is failing: the new items wait for the retry
				// with the others, bounded.
				hold(its)
				continue
			}
			save(its)
		case <-retry:
			save(held)
		case <-prune.C:
			r.prune()
		}
	}
}

// batch turns items into a Batch, reading the headers still to be read.
func (r *Recorder) batch(its []item) *Batch {
	b := &Batch{}
	for i := range its {
		it := &its[i]
		if it.msg == nil {
			b.Events = append(b.Events, it.ev)
			continue
		}
		if it.open != nil {
			if rc, err := it.open(); err == nil {
				it.msg.Subject, it.msg.MessageID = HeaderFacts(rc)
				rc.Close()
			}
			it.open = nil
		}
		b.Messages = append(b.Messages, it.msg)
	}
	return b
}

func (r *Recorder) prune() {
	n, err := r.store.Prune(context.Background(), time.Now().Add(-r.retention))
	if err != nil {
		r.log.Error("trace: prune failed", "err", err)
	} else if n > 0 {
		r.log.Info("trace: pruned old delivery history", "messages", n, "retention", r.retention.String())
	}
}
