package contain

import (
	"context"
	"net/netip"
	"slices"
	"time"
)

// maxPendingCounts bounds the figures counted and not yet saved. A flush
// every few seconds leaves far fewer; past the bound new figures still
// count in memory but are not saved, and Dropped says how many.
const maxPendingCounts = 200000

// countKey is one Count's key within an account.
type countKey struct {
	kind string
	at   int64
	key  string
}

// persisted is what a Detector has counted since it last saved (under
// Detector.mu), so a flush writes only that: the SMTP path adds to a map
// and never waits for a database.
type persisted struct {
	// store keeps the windows; nil keeps nothing (Restore sets it).
	store SignalStore
	// since is the hour (Unix hours) from which the detector, or the
	// detectors sharing its store, hold the accounts' whole history.
	since int64
	// evicted is set once an account was forgotten to make room.
	evicted bool
	// pending are the figures to merge into the store, by account, and
	// npending how many; resets the kinds to forget first, by account.
	pending  map[string]map[countKey]int64
	npending int
	resets   map[string]string
	// dropped counts figures not saved because pending was full.
	dropped uint64
	// pruned is when the store was last pruned.
	pruned time.Time
}

// note adds a figure to save; d.mu is held.
func (d *Detector) note(account, kind string, at int64, key string, n int64) {
	if d.store == nil {
		return
	}
	k := countKey{kind, at, key}
	p := d.pending[account]
	v, ok := p[k]
	if !ok && d.npending >= maxPendingCounts {
		d.dropped++
		return
	}
	if ok {
		n = merge(kind, v, n)
	} else {
		d.npending++
	}
	if p == nil {
		p = map[countKey]int64{}
		d.pending[account] = p
	}
	p[k] = n
}

// reset forgets kinds of account in what waits and, at the next flush, in
// the store; d.mu is held.
func (d *Detector) reset(account, kinds string) {
	if d.store == nil {
		return
	}
	p := d.pending[account]
	for k := range p {
		if containsKind(kinds, k.kind) {
			delete(p, k)
			d.npending--
		}
	}
	for _, k := range kinds {
		if !containsKind(d.resets[account], string(k)) {
			d.resets[account] += string(k)
		}
	}
}

func containsKind(kinds, kind string) bool {
	for _, k := range kinds {
		if string(k) == kind {
			return true
		}
	}
	return false
}

// Restore loads the windows kept in st and keeps saving there (Flush): a
// restart, or a node that starts beside others sharing st, carries on
// with the counts instead of starting from nothing (issue 19). It is
// called before the detector is told of anything. The accounts loaded are
// bounded as always by MaxAccounts.
func (d *Detector) Restore(ctx context.Context, st SignalStore) error {
	now := d.now()
	if err := st.PruneCounts(ctx, d.cutoffs(now)); err != nil {
		return err
	}
	th := *d.th.Load()
	width := max(th.BounceWindow/bounceBuckets, time.Second)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.store, d.pruned = st, now
	// The counts are applied as they are read, so memory holds no more
	// than the accounts the detector keeps.
	err := st.LoadCounts(ctx, func(c Count) {
		if c.Kind == KindSince {
			d.since = min(d.since, c.N/int64(time.Hour))
		}
		if c.Account == "" || c.N <= 0 || !d.counts(c.Kind) {
			return
		}
		at := time.Unix(0, c.At)
		switch c.Kind {
		case KindHour:
			d.get(c.Account, at).hours.add(c.At/int64(time.Hour), uint32(min(c.N, 1<<32-1)))
		case KindSlice:
			d.get(c.Account, at).slices.add(c.At/int64(sliceWidth), uint32(min(c.N, 1<<32-1)))
		case KindRcpts:
			d.get(c.Account, at).rcpts.add(c.At/int64(width), uint32(min(c.N, 1<<32-1)))
		case KindRefused:
			d.get(c.Account, at).refused.add(c.At/int64(width), uint32(min(c.N, 1<<32-1)))
		case KindHit:
			s := d.get(c.Account, at)
			s.hits = append(s.hits, at)
		case KindSpam:
			s := d.get(c.Account, at)
			for range min(c.N, int64(th.Spam)) {
				s.spam = append(s.spam, at)
			}
		case KindNetwork:
			p, err := netip.ParsePrefix(c.Key)
			if err != nil {
				return
			}
			last := time.Unix(0, c.N)
			s := d.get(c.Account, last)
			if s.nets == nil {
				s.nets = map[netip.Prefix]time.Time{}
			}
			if len(s.nets) < th.Networks-1 {
				s.nets[p] = last
			}
		}
	})
	if err != nil {
		d.store = nil
		clear(d.accounts)
		return err
	}
	// The start of counting is saved once, the earliest of every
	// detector's, so that a history is known to be short only while it is.
	d.note("", KindSince, 0, "", d.since*int64(time.Hour))
	for _, s := range d.accounts {
		// What the store holds of an account is its whole history.
		s.since = d.since
		slices.SortFunc(s.hits, func(a, b time.Time) int { return a.Compare(b) })
		if n := th.LimitHits - 1; len(s.hits) > n {
			s.hits = s.hits[len(s.hits)-max(n, 0):]
		}
		slices.SortFunc(s.spam, func(a, b time.Time) int { return a.Compare(b) })
		if n := th.Spam - 1; len(s.spam) > n {
			s.spam = s.spam[len(s.spam)-max(n, 0):]
		}
	}
	return nil
}

// counts reports whether the signal kind belongs to is on: the figures of
// one turned off since they were saved are not loaded.
func (d *Detector) counts(kind string) bool {
	switch kind {
	case KindHour, KindSlice:
		return d.th.Load().RiseFloor > 0
	case KindRcpts, KindRefused:
		return d.th.Load().BounceShare > 0
	case KindHit:
		return d.th.Load().LimitHits > 0
	case KindSpam:
		return d.th.Load().Spam > 0
	case KindNetwork:
		return d.th.Load().Networks > 0
	}
	return false
}

// cutoffs are the times before which each kind's figures have left their
// window, in Unix nanoseconds.
func (d *Detector) cutoffs(now time.Time) map[string]int64 {
	th := *d.th.Load()
	width := max(th.BounceWindow/bounceBuckets, time.Second)
	ns := now.UnixNano()
	return map[string]int64{
		KindHour:    ns - int64(time.Duration(24*th.RiseDays+1)*time.Hour),
		KindSlice:   ns - int64(time.Hour+sliceWidth),
		KindRcpts:   ns - int64(th.BounceWindow+width),
		KindRefused: ns - int64(th.BounceWindow+width),
		KindHit:     ns - int64(th.LimitWindow),
		KindSpam:    ns - int64(th.SpamWindow),
		KindNetwork: ns - int64(th.NetworksWindow),
	}
}

// Flush saves what was counted since the last flush, and now and then
// deletes what left its window. What could not be saved waits for the
// next one, within the bound.
func (d *Detector) Flush(ctx context.Context) error {
	d.mu.Lock()
	st := d.store
	if st == nil {
		d.mu.Unlock()
		return nil
	}
	if d.npending == 0 && len(d.resets) == 0 {
		d.mu.Unlock()
		return d.prune(ctx, st)
	}
	pending, resets, npending := d.pending, d.resets, d.npending
	d.pending, d.resets, d.npending = map[string]map[countKey]int64{}, map[string]string{}, 0
	d.mu.Unlock()

	rs := make([]Reset, 0, len(resets))
	for a, k := range resets {
		rs = append(rs, Reset{Account: a, Kinds: k})
	}
	cs := make([]Count, 0, npending)
	for a, p := range pending {
		for k, n := range p {
			cs = append(cs, Count{Account: a, Kind: k.kind, At: k.at, Key: k.key, N: n})
		}
	}
	err := st.SaveCounts(ctx, rs, cs)
	if err == nil {
		return d.prune(ctx, st)
	}
	// Put the batch back with what came since. A reset made since wins
	// over the figures counted before it; resets are applied before any
	// figure, so the old ones simply join the new.
	d.mu.Lock()
	defer d.mu.Unlock()
	for a, p := range pending {
		newer := d.resets[a]
		for k, n := range p {
			if !containsKind(newer, k.kind) {
				d.note(a, k.kind, k.at, k.key, n)
			}
		}
	}
	for a, kinds := range resets {
		for _, k := range kinds {
			if !containsKind(d.resets[a], string(k)) {
				d.resets[a] += string(k)
			}
		}
	}
	return err
}

// pruneEvery is how often Flush deletes the figures that left their
// windows.
const pruneEvery = time.Hour

// prune deletes from the store what left its window, once per pruneEvery.
func (d *Detector) prune(ctx context.Context, st SignalStore) error {
	now := d.now()
	d.mu.Lock()
	due := now.Sub(d.pruned) >= pruneEvery
	if due {
		d.pruned = now
	}
	d.mu.Unlock()
	if !due {
		return nil
	}
	return st.PruneCounts(ctx, d.cutoffs(now))
}

// Unsaved is how many figures were counted but not saved because too many
// waited (maxPendingCounts).
func (d *Detector) Unsaved() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped
}
