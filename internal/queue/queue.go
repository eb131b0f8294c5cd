// Package queue delivers the messages in the spool (SPEC R17, R18). It keeps
// per-recipient state beside each message, rewritten atomically after every
// delivery attempt, so that a crash after one recipient was delivered retries
// only the others; it retries temporary failures with a doubling backoff up
// to max_age, reports permanent failures and expiry to the sender with one
// RFC 3464 DSN, and limits how many deliveries run at once, in all and per
// destination domain.
//
// The queue holds in memory only what scheduling needs (id, due time, open
// destination domains), and a new message's envelope until its first
// attempt; otherwise a message's envelope and state are read from the spool
// when an attempt starts and dropped when it ends. An attempt reads a
// message of up to MaxInMemory bytes once, for signing and for every
// transaction.
package queue

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/spool"
)

// MaxInMemory is the largest message an attempt holds in memory, read once
// from the spool for signing and for every transaction; larger ones are
// streamed from the spool each time. With the default 50 workers it bounds
// that memory to about 12 MiB.
const MaxInMemory = 256 << 10

// maxHandoff bounds the message content the queue keeps from commits for
// first attempts not yet made (spool.Envelope.Content).
const maxHandoff = 32 << 20

// Signer computes a message's DKIM signature. Sign returns the
// "DKIM-Signature: …\r\n" header field to prepend, or "" when no key applies
// to the message (SPEC R17).
type Signer interface {
	Sign(ctx context.Context, msg io.Reader) (string, error)
}

// Config is what a Queue needs. Zero durations and limits take the defaults
// of internal/config.
type Config struct {
	// Spool holds the messages.
	Spool *spool.Spool
	// Sender delivers to one destination domain at a time.
	Sender delivery.Sender
	// Signer signs messages before their first attempt; nil: no signing.
	Signer Signer
	// Hostname names this server in reports (Reporting-MTA, MAILER-DAEMON@).
	Hostname string
	// RetryMin is the delay after the first temporary failure; it doubles
	// with each further one.
	RetryMin time.Duration
	// RetryMax caps the retry delay.
	RetryMax time.Duration
	// MaxAge is how long after arrival a message is retried before its open
	// recipients fail as expired (SPEC R18).
	MaxAge time.Duration
	// WarnAfter sends one delay warning when a message is still undelivered
	// this long after arrival; 0 disables warnings.
	WarnAfter time.Duration
	// Workers is the most deliveries under way at once.
	Workers int
	// PerDomain is the most deliveries under way at once to one domain.
	PerDomain int
	// Log receives a line for every attempt; nil discards.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// LockWait is how long New waits for the spool lock; default 5s.
	LockWait time.Duration
	// Observer hears of delivery attempts, for metrics; nil: nobody.
	Observer Observer
	// Tracer hears what becomes of each recipient, for the delivery
	// history (SPEC R13a); nil: nobody.
	Tracer Tracer
	// Outcomes hears the recipients' results of every attempt at a
	// destination with the account that submitted the message, for the
	// detection of compromised accounts (SPEC R20); nil: nobody. It runs
	// on the delivery worker, so it must only count and return.
	Outcomes func(account string, results []delivery.Result)
}

// Settings are the parts of a queue's configuration that may change while
// it runs (a reload): attempts started after Set use them, attempts under
// way finish with the Sender they started with.
type Settings struct {
	// Sender delivers to one destination domain at a time.
	Sender delivery.Sender
	// RetryMin, RetryMax, MaxAge and WarnAfter are those of Config.
	RetryMin, RetryMax, MaxAge, WarnAfter time.Duration
	// Workers and PerDomain are those of Config.
	Workers, PerDomain int
}

// withDefaults fills in the zero fields as New does.
func (st Settings) withDefaults() Settings {
	if st.RetryMin <= 0 {
		st.RetryMin = 5 * time.Minute
	}
	if st.RetryMax < st.RetryMin {
		st.RetryMax = max(time.Hour, st.RetryMin)
	}
	if st.MaxAge <= 0 {
		st.MaxAge = 5 * 24 * time.Hour
	}
	if st.Workers < 1 {
		st.Workers = 50
	}
	if st.PerDomain < 1 {
		st.PerDomain = 5
	}
	return st
}

// Queue schedules and runs deliveries.
type Queue struct {
	// cfg is the configuration; its Settings part is only read by New,
	// which puts it in set.
	cfg  Config
	set  atomic.Pointer[Settings]
	sp   *spool.Spool
	log  *slog.Logger
	now  func() time.Time
	lock *os.File

	// base is the context jobs run under; Run replaces it.
	base context.Context

	mu       sync.Mutex
	cond     *sync.Cond // broadcast when a job ends
	entries  map[string]*entry
	waiting  dueHeap           // idle entries, by due time
	ready    map[string][]*job // jobs waiting for a worker, by domain
	order    []string          // domains with ready jobs, round robin
	inflight map[string]int    // running jobs by domain
	running  int               // running jobs in all
	wake     chan struct{}     // nudges Run's loop
	wg       sync.WaitGroup    // running jobs
	stats    Stats
	// draining is set by Drain: no attempt starts any more.
	draining bool
	handoff  int64 // bytes of Content held by entries not yet attempted

	// adoptMu lets one adoption of a foreign spool run at a time.
	adoptMu sync.Mutex
	// heldAccounts are the accounts held (Hold), by reason: their new
	// messages are held at their first attempt.
	heldAccounts map[string]string
	// holdMu makes Hold, Release and Purge take turns.
	holdMu sync.Mutex
}

// Stats counts outcomes since the queue started.
type Stats struct {
	// Delivered counts recipients delivered.
	Delivered int64
	// Deferred counts temporary failures.
	Deferred int64
	// Failed counts recipients that failed permanently or expired.
	Failed int64
	// Finished counts messages removed from the spool because every
	// recipient was delivered or failed.
	Finished int64
	// Reports counts DSNs made.
	Reports int64
}

// entry is one message as the scheduler sees it.
type entry struct {
	id      string
	due     time.Time
	index   int      // position in waiting; -1 when not there
	domains []string // destination domains with open recipients
	active  bool     // an attempt is under way
	force   bool     // next attempt tries every open recipient (queue retry)
	// received is when the message was accepted, for the age of the
	// oldest message (Sizes).
	received time.Time
	// account is the account that submitted the message.
	account string
	// held is set while the message is held (State.Held); it is then in
	// neither waiting nor an attempt.
	held bool
	// first is the envelope Add was given, kept until the first attempt:
	// that attempt need not read it from the spool, and knows the message
	// has no state yet (only attempts write one).
	first *spool.Envelope

	// Set by requests while an attempt runs; read when it ends.
	holdReq atomic.Bool
	deleted atomic.Bool
	bounce  atomic.Bool
	retry   atomic.Bool

	// The attempt's data, guarded by amu and present only while active.
	amu    sync.Mutex
	left   int       // jobs of the attempt not finished
	cutoff time.Time // recipients due at or before this are tried
	ctx    context.Context
	cancel context.CancelFunc
	env    *spool.Envelope
	st     *State
	gone   bool // the message vanished from the spool
	// unreadable is set when the envelope or state could not be read for a
	// reason that may pass (no file descriptors left, an I/O error): the
	// attempt is skipped and made again later, never dropped.
	unreadable bool
	// data is the content, DKIM-Signature first, when it is at most
	// MaxInMemory bytes and could be read; nil: stream it from the spool.
	data []byte
}

// job is one attempt's delivery to one destination domain.
type job struct {
	e      *entry
	domain string
}

// New makes a queue over cfg.Spool and takes the spool's lock, so that one
// server at a time delivers from it and "submitd queue" can tell whether a
// server is running. Close releases it.
func New(cfg Config) (*Queue, error) {
	if cfg.Spool == nil || cfg.Sender == nil {
		return nil, errors.New("queue: Spool and Sender are required")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.LockWait <= 0 {
		cfg.LockWait = 5 * time.Second
	}
	q := &Queue{
		cfg: cfg, sp: cfg.Spool, log: cfg.Log, now: cfg.Now,
		base:         context.Background(),
		entries:      map[string]*entry{},
		ready:        map[string][]*job{},
		heldAccounts: map[string]string{},
		inflight:     map[string]int{},
		wake:         make(chan struct{}, 1),
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	if q.now == nil {
		q.now = time.Now
	}
	q.set.Store(new(Settings{Sender: cfg.Sender, RetryMin: cfg.RetryMin, RetryMax: cfg.RetryMax, MaxAge: cfg.MaxAge,
		WarnAfter: cfg.WarnAfter, Workers: cfg.Workers, PerDomain: cfg.PerDomain}.withDefaults()))
	q.cond = sync.NewCond(&q.mu)
	// "submitd queue" holds the lock for a moment while it changes the
	// spool of a stopped server; a server starting then waits for it.
	lock, err := lockSpool(q.sp.Dir())
	for deadline := time.Now().Add(cfg.LockWait); errors.Is(err, ErrLocked) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		lock, err = lockSpool(q.sp.Dir())
	}
	if err != nil {
		return nil, err
	}
	q.lock = lock
	return q, nil
}

// Set puts st in force: the next attempts use its Sender and retry
// settings, and the scheduler its limits. A Sender replaced is told to keep
// no connection open once its deliveries under way have ended.
func (q *Queue) Set(st Settings) {
	if st.Sender == nil {
		st.Sender = q.settings().Sender
	}
	old := q.set.Swap(new(st.withDefaults()))
	if c, ok := old.Sender.(delivery.IdleCloser); ok && old.Sender != st.Sender {
		c.CloseIdle()
	}
	// More workers may start at once.
	q.kick()
}

// Backoffs returns the destinations in back-off of the Sender in force,
// when it keeps them (delivery.MX), for the queue page.
func (q *Queue) Backoffs() []delivery.Backoff {
	if b, ok := q.settings().Sender.(interface{ Backoffs() []delivery.Backoff }); ok {
		return b.Backoffs()
	}
	return nil
}

// settings returns the settings in force.
func (q *Queue) settings() *Settings { return q.set.Load() }

// Close releases the spool lock. Call it after Run has returned.
func (q *Queue) Close() error {
	if q.lock == nil {
		return nil
	}
	err := q.lock.Close()
	q.lock = nil
	return err
}

// Load schedules messages found in the spool at start-up, reading each one's
// state: recipients delivered before a crash or restart are not tried again.
func (q *Queue) Load(envs []*spool.Envelope) {
	for _, env := range envs {
		data, err := q.sp.ReadState(env.ID)
		if err != nil {
			q.log.Error("queue: cannot read state; retrying every recipient", "queue_id", env.ID, "err", err)
		}
		st, err := decodeState(env, data)
		if err != nil {
			// Losing track of which recipients got the message may deliver it
			// twice to some; dropping it would lose it for all. Keep it.
			q.log.Error("queue: damaged state; retrying every recipient", "queue_id", env.ID, "err", err)
			st = newState(env)
		}
		due, ok := st.NextDue()
		if !ok {
			// Finished before the crash but not yet removed: the attempt
			// only reports and removes.
			due = time.Time{}
		}
		q.mu.Lock()
		if _, dup := q.entries[env.ID]; !dup {
			e := &entry{id: env.ID, due: due, index: -1, domains: openDomains(st), received: env.Received, account: env.Account}
			q.entries[env.ID] = e
			if st.Held != nil {
				// SPEC R20: a held message waits for its release.
				e.held = true
			} else {
				heap.Push(&q.waiting, e)
			}
		}
		q.mu.Unlock()
	}
	q.kick()
}

// Add schedules a newly committed message for delivery at once. It is meant
// for spool.Spool.OnCommit and does no I/O. Adding a message twice is
// harmless.
func (q *Queue) Add(env *spool.Envelope) {
	st := newState(env)
	q.mu.Lock()
	if _, dup := q.entries[env.ID]; !dup {
		// A copy: the caller's envelope is not the queue's to keep.
		first := *env
		first.To = slices.Clone(env.To)
		if n := int64(len(first.Content)); n != first.Size || q.handoff+n > maxHandoff {
			// A backlog reads its messages from the spool when their turn
			// comes rather than holding them all in memory.
			first.Content = nil
		} else {
			q.handoff += n
		}
		e := &entry{id: env.ID, due: q.now(), index: -1, domains: openDomains(st), first: &first, received: env.Received, account: env.Account}
		q.entries[env.ID] = e
		heap.Push(&q.waiting, e)
	}
	q.mu.Unlock()
	q.kick()
}

// Len returns how many messages the queue holds.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// Stats returns the outcome counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stats
}

func (q *Queue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// openDomains lists the distinct destination domains of open recipients,
// sorted; "" stands for recipients whose address does not parse.
func openDomains(st *State) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range st.Rcpts {
		if r.open() && !seen[r.Domain] {
			seen[r.Domain] = true
			out = append(out, r.Domain)
		}
	}
	sort.Strings(out)
	return out
}

// Run delivers until ctx is cancelled, then waits for the attempts under
// way to end (they see ctx cancelled) and returns. "submitd queue retry"
// and "delete" reach it through the admin API (Retry, Delete).
func (q *Queue) Run(ctx context.Context) {
	q.mu.Lock()
	q.base = ctx
	q.mu.Unlock()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		q.dispatchLocked()
		wait := time.Hour
		if q.waiting.Len() > 0 {
			wait = min(wait, max(q.waiting[0].due.Sub(q.now()), 0))
		}
		q.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			q.wg.Wait()
			if c, ok := q.settings().Sender.(delivery.IdleCloser); ok {
				c.CloseIdle()
			}
			return
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// Drain stops starting deliveries and waits until those under way have
// ended, or until ctx is done; it reports whether they all ended. A server
// handing its spool to the process that replaces it drains first: a
// delivery cut off after the destination took the message but before its
// state was written would be made again by the new process.
func (q *Queue) Drain(ctx context.Context) bool {
	q.mu.Lock()
	q.draining = true
	q.mu.Unlock()
	done := make(chan struct{})
	go func() {
		q.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// RunDue runs every attempt that is due by the queue's clock, including
// those of reports made meanwhile, and returns when none is left. It is the
// deterministic alternative to Run for tests with a fake clock; do not use
// both at once.
func (q *Queue) RunDue(ctx context.Context) {
	q.mu.Lock()
	q.base = ctx
	for {
		q.dispatchLocked()
		if q.running == 0 && len(q.order) == 0 && (q.waiting.Len() == 0 || q.waiting[0].due.After(q.now())) {
			break
		}
		q.cond.Wait()
	}
	q.mu.Unlock()
}

// NextDue returns when the earliest waiting message is due, and false when
// none waits.
func (q *Queue) NextDue() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiting.Len() == 0 {
		return time.Time{}, false
	}
	return q.waiting[0].due, true
}

// dispatchLocked starts the attempts that are due and hands their jobs to
// free workers, round robin over domains, within the global and per-domain
// limits (SPEC R17 per-destination concurrency).
func (q *Queue) dispatchLocked() {
	if q.draining {
		return
	}
	now := q.now()
	for q.waiting.Len() > 0 && !q.waiting[0].due.After(now) {
		e := heap.Pop(&q.waiting).(*entry)
		q.startLocked(e, now)
	}
	st := q.settings()
	for q.running < st.Workers {
		started := false
		for i, d := range q.order {
			if q.inflight[d] >= st.PerDomain {
				continue
			}
			jobs := q.ready[d]
			j := jobs[0]
			jobs[0] = nil
			// The domain goes to the back of the line, so that one busy
			// domain does not keep the others waiting.
			q.order = append(q.order[:i], q.order[i+1:]...)
			if len(jobs) == 1 {
				delete(q.ready, d)
			} else {
				q.ready[d] = jobs[1:]
				q.order = append(q.order, d)
			}
			q.inflight[d]++
			q.running++
			q.wg.Add(1)
			go q.runJob(j)
			started = true
			break
		}
		if !started {
			break
		}
	}
}

// startLocked begins an attempt of e: one job per open destination domain.
func (q *Queue) startLocked(e *entry, now time.Time) {
	e.active = true
	doms := e.domains
	if len(doms) == 0 {
		// Nothing to deliver: the job only reports and removes.
		doms = []string{""}
	}
	e.left = len(doms)
	e.cutoff = now
	if e.force {
		e.cutoff = time.Unix(1<<62, 0)
		e.force = false
	}
	e.ctx, e.cancel = context.WithCancel(q.base)
	for _, d := range doms {
		if _, ok := q.ready[d]; !ok {
			q.order = append(q.order, d)
		}
		q.ready[d] = append(q.ready[d], &job{e: e, domain: d})
	}
}

// runJob delivers one attempt's recipients of one domain and, if it is the
// attempt's last job, finishes the attempt.
func (q *Queue) runJob(j *job) {
	defer q.wg.Done()
	e := j.e
	drop, due, held := q.deliver(j)
	q.mu.Lock()
	q.running--
	if q.inflight[j.domain]--; q.inflight[j.domain] == 0 {
		delete(q.inflight, j.domain)
	}
	if drop || held || !due.IsZero() {
		// The attempt is over.
		e.active = false
		switch {
		case drop:
			delete(q.entries, e.id)
		case held:
			// SPEC R20: out of the schedule until Release.
			e.held = true
			e.retry.Store(false)
		default:
			if e.retry.Swap(false) {
				due = q.now()
				e.force = true
			}
			if e.deleted.Load() {
				// Deleted after this attempt's end was decided: the next
				// attempt, at once, only deletes.
				due = q.now()
			}
			e.due = due
			heap.Push(&q.waiting, e)
		}
	}
	q.mu.Unlock()
	q.cond.Broadcast()
	q.kick()
}

// deliver runs job j. When it is the last job of the attempt it returns
// either drop (the message is finished or gone), held (the message is held
// now) or the next due time; otherwise it returns false and the zero time.
func (q *Queue) deliver(j *job) (drop bool, due time.Time, held bool) {
	e := j.e
	e.amu.Lock()
	if e.st == nil && !e.gone {
		q.loadLocked(e)
	}
	var rcpts []string
	var idx []int
	if !e.gone && !e.unreadable && !e.deleted.Load() && !q.holding(e) {
		for i, r := range e.st.Rcpts {
			if r.open() && r.Domain == j.domain && !r.Next.After(e.cutoff) {
				rcpts = append(rcpts, r.Addr)
				idx = append(idx, i)
			}
		}
	}
	env, dkim, data := e.env, "", e.data
	if e.st != nil {
		dkim = e.st.DKIM
	}
	e.amu.Unlock()

	var results []delivery.Result
	if len(rcpts) > 0 {
		if j.domain == "" {
			for _, r := range rcpts {
				results = append(results, delivery.Result{Rcpt: r, Status: delivery.Permanent,
					Reply: "recipient address is not valid"})
			}
		} else {
			m := &delivery.Message{
				From: env.From, Rcpts: rcpts, Domain: j.domain, Size: env.Size + int64(len(dkim)),
				Data:       data,
				Open:       func() (io.ReadCloser, error) { return q.open(env.ID, dkim) },
				RequireTLS: env.RequireTLS, TLSOptional: env.TLSOptional,
			}
			if d := env.DSN; d != nil {
				// RFC 3461 §5.2: the parameters go on with the message.
				m.Ret, m.EnvID = d.Ret, d.EnvID
				for _, r := range rcpts {
					if p, ok := d.Rcpts[r]; ok {
						if m.RcptDSN == nil {
							m.RcptDSN = map[string]delivery.RcptDSN{}
						}
						m.RcptDSN[r] = delivery.RcptDSN{Notify: p.Notify, ORcpt: p.ORcpt}
					}
				}
			}
			start := time.Now()
			results = q.settings().Sender.Deliver(e.ctx, m)
			q.observer().Attempted(results, time.Since(start), q.now().Sub(env.Received))
			if q.cfg.Outcomes != nil && env.Account != "" {
				q.cfg.Outcomes(env.Account, results)
			}
		}
	}

	e.amu.Lock()
	defer e.amu.Unlock()
	e.left--
	last := e.left == 0
	if len(rcpts) > 0 && !e.gone && !e.unreadable {
		q.apply(e, idx, results)
		// Persist before anything else happens (SPEC R15, R18): a crash from
		// here on must not deliver these recipients again. When this was the
		// last job and every recipient is delivered, removing the message
		// below is that record, so the write is skipped.
		if !(last && allDelivered(e.st) && !e.deleted.Load()) {
			if err := e.st.write(q.sp, e.id); err != nil {
				q.log.Error("queue: cannot save delivery state", "queue_id", e.id, "err", err)
			}
		}
	}
	if !last {
		return false, time.Time{}, false
	}
	e.cancel()
	if !e.gone && !e.unreadable && !e.deleted.Load() && q.holding(e) {
		held = q.holdLocked(e)
	}
	if !held {
		drop, due = q.finishLocked(e)
	}
	e.env, e.st, e.data = nil, nil, nil
	return drop, due, held
}

// loadLocked reads e's envelope and state, and its content when it is small
// enough to hold, and signs the message if it has not been signed yet (SPEC
// R17: before the first attempt).
func (q *Queue) loadLocked(e *entry) {
	env := e.first
	e.first = nil
	if env != nil {
		// A new message: it has no state file yet.
		e.env, e.st = env, newState(env)
	} else if !q.loadState(e) {
		return
	}
	var content []byte
	if c := e.env.Content; c != nil {
		// Handed over by the commit (Add): no need to read it back.
		q.mu.Lock()
		q.handoff -= int64(len(c))
		q.mu.Unlock()
		e.env.Content = nil
		if !e.st.Done() {
			content = c
		}
	}
	if env := e.env; content == nil && env.Size <= MaxInMemory && !e.st.Done() {
		var err error
		content, err = q.readContent(env.ID, env.Size)
		if errors.Is(err, fs.ErrNotExist) {
			e.gone = true
			return
		}
		if err != nil {
			// The transactions try again from the spool and report it.
			q.log.Warn("queue: cannot read message", "queue_id", env.ID, "err", err)
		}
	}
	if !e.st.Signed && q.cfg.Signer != nil && !e.st.Done() {
		// The signature is kept in memory and saved with the first result,
		// then reused on every retry so all copies carry the same signature.
		// A crash before then just signs again.
		var err error
		if content != nil {
			e.st.DKIM, err = q.cfg.Signer.Sign(e.ctx, bytes.NewReader(content))
		} else {
			var rc io.ReadCloser
			if rc, _, err = q.sp.Message(e.id); err == nil {
				e.st.DKIM, err = q.cfg.Signer.Sign(e.ctx, rc)
				rc.Close()
			}
		}
		if err != nil {
			// An unsigned message is still better delivered than held:
			// the receiving side decides by its DMARC policy. Signed stays
			// false, so that the next attempt signs again: the failure may
			// pass (a busy key store) and must not leave every retry
			// unsigned.
			q.log.Error("queue: DKIM signing failed; sending this attempt unsigned", "queue_id", e.id, "session", e.env.SessionID, "err", err)
			e.st.DKIM = ""
		} else {
			e.st.Signed = true
		}
	}
	if content != nil {
		e.data = append([]byte(e.st.DKIM), content...)
	}
}

// loadState reads e's envelope and state from the spool; it reports false
// when the message is gone.
func (q *Queue) loadState(e *entry) bool {
	env, err := q.sp.Envelope(e.id)
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		e.gone = true
		return false
	case err != nil:
		// SPEC R15: an accepted message is never dropped for an error that
		// may pass, such as running out of file descriptors.
		q.log.Error("queue: cannot read message; trying again later", "queue_id", e.id, "err", err)
		e.unreadable = true
		return false
	}
	e.env = env
	data, err := q.sp.ReadState(e.id)
	if errors.As(err, &pe) {
		// Reading failed, which says nothing of the state: retrying every
		// recipient would deliver again to those already done.
		q.log.Error("queue: cannot read delivery state; trying again later", "queue_id", e.id, "err", err)
		e.env = nil
		e.unreadable = true
		return false
	}
	if err == nil {
		e.st, err = decodeState(env, data)
	}
	if err != nil {
		q.log.Error("queue: damaged state; retrying every recipient", "queue_id", e.id, "err", err)
		e.st = newState(env)
	}
	return true
}

// readContent reads message id's content of size bytes.
func (q *Queue) readContent(id string, size int64) ([]byte, error) {
	rc, n, err := q.sp.Message(id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if n != size {
		return nil, fmt.Errorf("content is %d bytes, the envelope says %d", n, size)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// open returns the message content with the DKIM header prepended.
func (q *Queue) open(id, dkim string) (io.ReadCloser, error) {
	rc, _, err := q.sp.Message(id)
	if err != nil {
		return nil, err
	}
	if dkim == "" {
		return rc, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(strings.NewReader(dkim), rc), rc}, nil
}

// apply records the results for the recipients at idx.
func (q *Queue) apply(e *entry, idx []int, results []delivery.Result) {
	now := q.now()
	cancelled := e.ctx.Err() != nil
	byAddr := map[string]delivery.Result{}
	for _, r := range results {
		byAddr[r.Rcpt] = r
	}
	maxAge := q.settings().MaxAge
	expiry := e.env.Received.Add(maxAge)
	var nd, ndef, nf int64
	for n, i := range idx {
		rc := e.st.Rcpts[i]
		res, ok := delivery.Result{}, false
		if n < len(results) && results[n].Rcpt == rc.Addr {
			res, ok = results[n], true
		} else {
			res, ok = byAddr[rc.Addr]
		}
		if !ok {
			res = delivery.Result{Rcpt: rc.Addr, Status: delivery.Temporary, Reply: "delivery returned no result for this recipient"}
		}
		if cancelled && res.Status == delivery.Temporary {
			// Shutdown or delete interrupted the attempt: that says nothing
			// about the destination, so it is not counted as one.
			continue
		}
		status := statusOf(res.Status)
		rc.record(now, status, res.Host, res.Reply, res.Code)
		switch status {
		case Delivered:
			rc.Relayed = res.Relayed
			nd++
			rc.Next = time.Time{}
		case Failed:
			nf++
		case Deferred:
			if !now.Before(expiry) {
				// SPEC R18: temporary failures are retried up to max_age.
				rc.Status = Failed
				rc.Expired = true
				rc.Reason = "expired after " + fmtDuration(maxAge)
				nf++
			} else {
				ndef++
				rc.Next = now.Add(q.backoff(rc.Attempts))
				if rc.Next.After(expiry) {
					rc.Next = expiry
				}
			}
		}
		q.tracer().Trace(TraceEvent{QueueID: e.id, Rcpt: rc.Addr, Time: now, Kind: rc.Status, Host: res.Host, TLS: res.TLS,
			Reply: res.Reply, Next: rc.Next, Detail: rc.Reason})
		attrs := []any{"queue_id", e.id, "session", e.env.SessionID, "rcpt", rc.Addr, "status", rc.Status,
			"attempt", rc.Attempts, "host", res.Host, "reply", res.Reply}
		if rc.Status == Deferred {
			attrs = append(attrs, "next", rc.Next)
		}
		q.log.Info("delivery attempt", attrs...)
	}
	q.mu.Lock()
	q.stats.Delivered += nd
	q.stats.Deferred += ndef
	q.stats.Failed += nf
	q.mu.Unlock()
}

// backoff is the delay after the n-th attempt: RetryMin doubled n-1 times,
// capped at RetryMax.
func (q *Queue) backoff(n int) time.Duration {
	st := q.settings()
	d := st.RetryMin
	for i := 1; i < n && d < st.RetryMax; i++ {
		d *= 2
	}
	return min(d, st.RetryMax)
}

// finishLocked ends an attempt: reports failures and delays, removes the
// message when every recipient is done, else says when it is due again.
func (q *Queue) finishLocked(e *entry) (drop bool, due time.Time) {
	if e.gone {
		return true, time.Time{}
	}
	if e.unreadable {
		e.unreadable = false
		return false, q.now().Add(q.settings().RetryMin)
	}
	if e.deleted.Load() {
		if err := q.remove(e.env, e.st, e.bounce.Load()); err != nil {
			q.log.Error("queue: delete failed", "queue_id", e.id, "err", err)
		}
		return true, time.Time{}
	}
	now := q.now()
	changed := false
	// SPEC R18: failed recipients are reported once, to the envelope sender,
	// never for a message from <> or for a report.
	// RFC 3461 §4.1: each recipient's NOTIFY says which reports it
	// wants; without one, failures and delays.
	var failed, succeeded []*Rcpt
	for _, r := range e.st.Rcpts {
		if r.Status == Failed && !r.Bounced {
			if e.env.DSN.Notifies(r.Addr, "FAILURE") {
				failed = append(failed, r)
			}
			r.Bounced = true
			changed = true
		}
		// RFC 3461 §6.2.6: a server that offers DSN got the request and
		// answers it; one that does not leaves a "relayed" notice to us.
		if r.Status == Delivered && r.Relayed && !r.Notified && e.env.DSN.Notifies(r.Addr, "SUCCESS") {
			succeeded = append(succeeded, r)
			r.Notified = true
			changed = true
		}
	}
	if len(failed) > 0 {
		dsn := q.report(e.env, failed, reportFailed, now)
		for _, r := range failed {
			q.tracer().Trace(TraceEvent{QueueID: e.id, Rcpt: r.Addr, Time: now, Kind: TraceBounced, Reply: r.Reply, Detail: dsn})
		}
	}
	if len(succeeded) > 0 {
		q.report(e.env, succeeded, reportDelivered, now)
	}
	if w := q.settings().WarnAfter; w > 0 && !e.st.Warned && !e.st.Done() && now.Sub(e.env.Received) >= w {
		e.st.Warned = true
		changed = true
		var deferred []*Rcpt
		for _, r := range e.st.Rcpts {
			if r.Status == Deferred && e.env.DSN.Notifies(r.Addr, "DELAY") {
				deferred = append(deferred, r)
			}
		}
		if len(deferred) > 0 {
			q.report(e.env, deferred, reportDelayed, now)
		}
	}
	if e.st.Done() {
		if err := q.sp.Remove(e.id); err != nil && !errors.Is(err, fs.ErrNotExist) {
			q.log.Error("queue: cannot remove finished message", "queue_id", e.id, "err", err)
		}
		q.log.Info("message finished", "queue_id", e.id, "session", e.env.SessionID, "summary", summary(e.st))
		q.mu.Lock()
		q.stats.Finished++
		q.mu.Unlock()
		return true, time.Time{}
	}
	if changed {
		if err := e.st.write(q.sp, e.id); err != nil {
			q.log.Error("queue: cannot save delivery state", "queue_id", e.id, "err", err)
		}
	}
	e.domains = openDomains(e.st)
	due, _ = e.st.NextDue()
	if due.IsZero() {
		// Recipients that this attempt did not reach (cancelled) are due at
		// once, but not in a busy loop.
		due = now.Add(time.Second)
	}
	return false, due
}

// report makes a DSN about rcpts unless the message may not be answered,
// and schedules it. It returns the DSN's queue id, or why none was made,
// for the delivery history.
func (q *Queue) report(env *spool.Envelope, rcpts []*Rcpt, kind reportKind, now time.Time) string {
	denv := q.reporter().report(env, rcpts, kind, now)
	if denv == nil {
		if !Bounceable(env) {
			return "no report: the message is from <> or is a report itself (RFC 3464)"
		}
		return "no report: it could not be made (see the server log)"
	}
	q.mu.Lock()
	q.stats.Reports++
	q.mu.Unlock()
	// The spool's OnCommit hook may have added it already; Add is
	// idempotent.
	q.Add(denv)
	return "report " + denv.ID
}

// remove deletes a message, reporting it first with bounce.
func (q *Queue) remove(env *spool.Envelope, st *State, bounce bool) error {
	denv, err := q.reporter().remove(env, st, bounce, q.now())
	if denv != nil {
		q.Add(denv)
	}
	return err
}

func (q *Queue) reporter() *reporter {
	return &reporter{sp: q.sp, hostname: q.cfg.Hostname, maxAge: q.settings().MaxAge, log: q.log}
}

// reporter makes reports and deletes messages; the queue and the offline
// "submitd queue" commands share it.
type reporter struct {
	sp       *spool.Spool
	hostname string
	maxAge   time.Duration
	log      *slog.Logger
}

// report writes a DSN about rcpts into the spool and returns its envelope,
// or nil when the message may not be answered or the report failed.
func (r *reporter) report(env *spool.Envelope, rcpts []*Rcpt, kind reportKind, now time.Time) *spool.Envelope {
	// SPEC R18: never a report for a message from <> or for a report.
	if !Bounceable(env) {
		r.log.Info("no report for a message from <> or for a report", "queue_id", env.ID, "session", env.SessionID,
			"kind", env.Kind, "rcpts", len(rcpts))
		return nil
	}
	denv, err := sendReport(r.sp, &report{hostname: r.hostname, env: env, rcpts: rcpts,
		kind: kind, until: env.Received.Add(r.maxAge), now: now})
	if err != nil {
		r.log.Error("queue: cannot make report", "queue_id", env.ID, "err", err)
		return nil
	}
	r.log.Info("report queued", "queue_id", env.ID, "session", env.SessionID, "report_id", denv.ID,
		"action", kind.String(), "to", env.From, "rcpts", len(rcpts))
	return denv
}

// remove deletes a message; with bounce, its open recipients fail as deleted
// by the administrator and, with any failed ones not yet reported, are
// reported first. It returns the report's envelope, if one was made.
func (r *reporter) remove(env *spool.Envelope, st *State, bounce bool, now time.Time) (*spool.Envelope, error) {
	var denv *spool.Envelope
	if bounce && st != nil {
		var rs []*Rcpt
		for _, rc := range st.Rcpts {
			if rc.open() {
				rc.Status = Failed
				rc.Reason = "deleted from the queue by the administrator"
			}
			if rc.Status == Failed && !rc.Bounced {
				rc.Bounced = true
				if env.DSN.Notifies(rc.Addr, "FAILURE") {
					rs = append(rs, rc)
				}
			}
		}
		if len(rs) > 0 {
			denv = r.report(env, rs, reportFailed, now)
		}
	}
	err := r.sp.Remove(env.ID)
	r.log.Info("message deleted", "queue_id", env.ID, "session", env.SessionID, "bounce", bounce)
	return denv, err
}

func allDelivered(st *State) bool {
	for _, r := range st.Rcpts {
		if r.Status != Delivered {
			return false
		}
	}
	return true
}

// summary counts recipients by status, like "delivered=2 failed=1".
func summary(st *State) string {
	n := map[string]int{}
	for _, r := range st.Rcpts {
		n[r.Status]++
	}
	var parts []string
	for _, s := range []string{Pending, Deferred, Delivered, Failed} {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s, n[s]))
		}
	}
	return strings.Join(parts, " ")
}

// fmtDuration prints d in days when it is a whole number of them.
func fmtDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// dueHeap orders idle entries by due time.
type dueHeap []*entry

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].id < h[j].id
	}
	return h[i].due.Before(h[j].due)
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	e.index = -1
	*h = old[:n-1]
	return e
}
