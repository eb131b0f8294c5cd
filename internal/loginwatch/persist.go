package loginwatch

import (
	"context"
	"slices"
	"time"
)

// Saved is one login's failures and attack state as a StateStore keeps
// it, so that a restart does not lift an attack state nor forget the
// failures that lead to one (issue 19).
type Saved struct {
	// Login is the normalized address.
	Login string `json:"-"`
	// Failures are the latest failure times, oldest first, at most
	// MaxFailures.
	Failures []time.Time `json:"failures"`
	// Total, IPs, First, Last, Since, Until and Refused are Login's
	// figures (Since and Until zero outside an attack); IPs are hashes of
	// the client addresses.
	Total   int       `json:"total"`
	IPs     []uint32  `json:"ips"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
	Since   time.Time `json:"since,omitzero"`
	Until   time.Time `json:"until,omitzero"`
	Refused int       `json:"refused"`
	// Expires is when the login is quiet: the store may forget it then.
	Expires time.Time `json:"expires"`
}

// StateStore keeps the logins with failures across restarts: the node's
// SQLite database, or the guard's Redis that the nodes share.
// Implementations are safe for concurrent use.
type StateStore interface {
	// SaveLogins stores saved, replacing what was stored of those logins,
	// and forgets the logins of drop and every login quiet at now: a
	// login whose drop was missed (the logins noted for a flush were at
	// their bound, or a process stopped before its last flush) does not
	// stay stored however long the process runs.
	SaveLogins(ctx context.Context, now time.Time, saved []Saved, drop []string) error
	// LoadLogins returns the logins that are not quiet at now.
	LoadLogins(ctx context.Context, now time.Time) ([]Saved, error)
}

// mergeSaved combines what two processes saved of one login, for a store
// the nodes share: the failures of both (the same failure, saved by one
// node before and after its restart, once), the IPs of both, the later end
// of an attack and the earlier start of one that still runs. At most max
// failures, the newest, are kept, and MaxIPs addresses.
//
// One that went quiet before the other's first failure is of an episode
// that ended: the other is kept alone.
func mergeSaved(a, b Saved, max int) Saved {
	switch {
	case !b.Expires.After(a.First):
		return a
	case !a.Expires.After(b.First):
		return b
	}
	m := a
	m.Failures = append(slices.Clone(a.Failures), b.Failures...)
	slices.SortFunc(m.Failures, func(x, y time.Time) int { return x.Compare(y) })
	m.Failures = slices.CompactFunc(m.Failures, func(x, y time.Time) bool { return x.Equal(y) })
	if len(m.Failures) > max {
		m.Failures = m.Failures[len(m.Failures)-max:]
	}
	m.IPs = slices.Clone(a.IPs)
	for _, h := range b.IPs {
		if len(m.IPs) < MaxIPs && !slices.Contains(m.IPs, h) {
			m.IPs = append(m.IPs, h)
		}
	}
	m.Total = maxInt(a.Total, b.Total, len(m.Failures))
	m.Refused = maxInt(a.Refused, b.Refused)
	if !b.First.IsZero() && (m.First.IsZero() || b.First.Before(m.First)) {
		m.First = b.First
	}
	if b.Last.After(m.Last) {
		m.Last = b.Last
	}
	if b.Until.After(m.Until) {
		m.Until = b.Until
	}
	if !b.Since.IsZero() && (m.Since.IsZero() || b.Since.Before(m.Since)) {
		m.Since = b.Since
	}
	if b.Expires.After(m.Expires) {
		m.Expires = b.Expires
	}
	return m
}

func maxInt(v ...int) int { return slices.Max(v) }

// maxDirty bounds the logins noted for the next flush, a few times
// MaxLogins: past it a login that went is not forgotten in the store at
// once, which its expiry does later.
const maxDirtyFactor = 4

// markDirty notes login for the next flush; w.mu is held.
func (w *Watch) markDirty(login string) {
	if w.states == nil {
		return
	}
	if len(w.dirty) < maxDirtyFactor*w.conf().MaxLogins {
		w.dirty[login] = struct{}{}
	}
}

// saved is e as a StateStore keeps it; w.mu is held.
func (w *Watch) saved(login string, e *entry) Saved {
	s := Saved{Login: login, Total: e.total, IPs: slices.Clone(e.ips), First: e.first, Last: e.last,
		Since: e.since, Until: e.until, Refused: e.refused, Expires: e.last.Add(w.conf().Window)}
	if e.until.After(s.Expires) {
		s.Expires = e.until
	}
	for i := range e.n {
		s.Failures = append(s.Failures, e.times[(e.next-e.n+i+len(e.times))%len(e.times)])
	}
	return s
}

// Restore loads the logins st kept and keeps saving there (Flush). It is
// called before the watch is told of anything; at most MaxLogins are
// loaded, those under attack first. When the load fails (a shared Redis
// away at start) the count starts afresh but is saved all the same, so
// that the attacks counted from then on outlast the next restart.
func (w *Watch) Restore(ctx context.Context, st StateStore) error {
	w.mu.Lock()
	w.states, w.dirty = st, map[string]struct{}{}
	w.mu.Unlock()
	now := w.conf().Now()
	saved, err := st.LoadLogins(ctx, now)
	if err != nil {
		return err
	}
	slices.SortFunc(saved, func(a, b Saved) int { return b.Until.Compare(a.Until) })
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range saved {
		if len(w.logins) >= w.conf().MaxLogins {
			break
		}
		e := &entry{times: make([]time.Time, w.conf().MaxFailures), total: s.Total, first: s.First, last: s.Last,
			since: s.Since, until: s.Until, refused: s.Refused}
		e.ips = s.IPs[:min(len(s.IPs), MaxIPs)]
		// The newest failures fill the ring, the oldest go if the
		// threshold was lowered since.
		fs := s.Failures[max(len(s.Failures)-len(e.times), 0):]
		copy(e.times, fs)
		e.n, e.next = len(fs), len(fs)%len(e.times)
		if w.quiet(e, now) {
			continue
		}
		w.logins[s.Login] = e
	}
	return nil
}

// Flush saves the logins whose failures or state changed since the last
// flush, and forgets in the store those that went. What could not be saved
// is tried again at the next flush.
func (w *Watch) Flush(ctx context.Context) error {
	now := w.conf().Now()
	w.mu.Lock()
	st := w.states
	if st == nil || len(w.dirty) == 0 {
		w.mu.Unlock()
		return nil
	}
	var save []Saved
	var drop []string
	for login := range w.dirty {
		if e := w.logins[login]; e != nil && !w.quiet(e, now) {
			save = append(save, w.saved(login, e))
		} else {
			drop = append(drop, login)
		}
	}
	dirty := w.dirty
	w.dirty = map[string]struct{}{}
	w.mu.Unlock()
	if err := st.SaveLogins(ctx, now, save, drop); err != nil {
		w.mu.Lock()
		w.stats.StoreErrors++
		for login := range dirty {
			w.markDirty(login)
		}
		w.mu.Unlock()
		return err
	}
	return nil
}
