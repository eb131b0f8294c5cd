package sending

import (
	"context"
	"sync"
	"time"
)

// Request asks a Counter for n more events in the rolling window under Key,
// which must stay within Max (0 is no limit and always passes).
type Request struct {
	// Key names the counted window, such as "a:messages_per_hour:jan@firma.cz".
	Key string
	// Window is the window's length.
	Window time.Duration
	// Max is the most events the window may hold; 0 is no limit.
	Max int64
	// N is how many events to add.
	N int64
}

// Taken is what a Counter added for one Request, so it can be given back.
type Taken struct {
	// Key and Window are the Request's.
	Key    string
	Window time.Duration
	// Minute is the bucket the events went into (Unix minutes).
	Minute int64
	// N is how many events were added.
	N int64
}

// Counter counts events in rolling windows. Windows count in whole minutes:
// events of one minute leave the window together, exactly Window after the
// start of their minute, so the "try again after HH:MM" a refusal names is
// the minute a slot is free again.
type Counter interface {
	// Take adds every request's events if all of them stay within their
	// limits, atomically; otherwise it adds none and returns the index of
	// the first request that does not fit and when it would.
	Take(ctx context.Context, now time.Time, reqs []Request) (taken []Taken, refused int, until time.Time, err error)
	// Give takes back what Take added.
	Give(ctx context.Context, now time.Time, taken []Taken) error
	// Count returns how many events the window under key holds now.
	Count(ctx context.Context, now time.Time, key string, window time.Duration) (int64, error)
}

// minuteOf is t in Unix minutes.
func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

// bucket is the events of one minute.
type bucket struct {
	// minute is the bucket's start in Unix minutes; n its events.
	minute, n int64
}

// window is one rolling window: the buckets still in it, oldest first, and
// their total. It holds at most one bucket per minute of its length, and
// only minutes with events.
type window struct {
	// buckets are the minutes with events, oldest first.
	buckets []bucket
	// total is the sum of the buckets' events.
	total int64
	// span is the window's length in minutes.
	span int64
}

// prune drops the buckets that left the window of span minutes by minute now.
func (w *window) prune(now, span int64) {
	i := 0
	for i < len(w.buckets) && w.buckets[i].minute+span <= now {
		w.total -= w.buckets[i].n
		i++
	}
	if i > 0 {
		w.buckets = append(w.buckets[:0], w.buckets[i:]...)
	}
}

// until returns the minute from which n more events fit under max: when
// enough of the oldest buckets have left the window.
func (w *window) until(n, max, span int64) int64 {
	over := w.total + n - max
	for _, b := range w.buckets {
		over -= b.n
		if over <= 0 {
			return b.minute + span
		}
	}
	// n alone is more than max: no wait makes it fit.
	return 0
}

// untilTime turns the minute until returned into a time; 0 (nothing frees
// enough) becomes a whole window from now.
func untilTime(minute int64, now time.Time, window time.Duration) time.Time {
	if minute == 0 {
		return now.Add(window).UTC().Truncate(time.Minute)
	}
	return time.Unix(minute*60, 0).UTC()
}

// add puts n events into minute now.
func (w *window) add(now, n int64) {
	if k := len(w.buckets); k > 0 && w.buckets[k-1].minute == now {
		w.buckets[k-1].n += n
	} else {
		w.buckets = append(w.buckets, bucket{now, n})
	}
	w.total += n
}

// give takes n events back out of minute m, if it is still in the window.
func (w *window) give(m, n int64) {
	for i := len(w.buckets) - 1; i >= 0; i-- {
		b := &w.buckets[i]
		if b.minute != m {
			continue
		}
		n = min(n, b.n)
		b.n -= n
		w.total -= n
		if b.n == 0 {
			w.buckets = append(w.buckets[:i], w.buckets[i+1:]...)
		}
		return
	}
}

// Memory is a Counter in this process's memory: limits count per node.
type Memory struct {
	// mu guards windows and swept.
	mu sync.Mutex
	// windows are the counted windows by key.
	windows map[string]*window
	// swept is when windows was last cleared of empty windows.
	swept time.Time
	// store keeps the windows across restarts (Restore); nil keeps
	// nothing. dirty are the minutes of windows changed since the last
	// Flush, which saves only those, each with the minute it leaves its
	// window.
	store *SQLiteWindows
	dirty map[windowMinute]int64
}

// NewMemory returns an empty in-memory Counter.
func NewMemory() *Memory { return &Memory{windows: map[string]*window{}} }

var _ Counter = (*Memory)(nil)

// sweepEvery is how often Take clears out the windows that emptied, so
// that accounts which stopped sending cost nothing.
const sweepEvery = time.Minute

// Take implements Counter.
func (m *Memory) Take(_ context.Context, now time.Time, reqs []Request) ([]Taken, int, time.Time, error) {
	min := minuteOf(now)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	ws := make([]*window, len(reqs))
	for i, r := range reqs {
		span := int64(r.Window / time.Minute)
		w := m.windows[r.Key]
		if w == nil {
			w = &window{span: span}
			m.windows[r.Key] = w
		}
		w.prune(min, span)
		ws[i] = w
		if r.Max > 0 && w.total+r.N > r.Max {
			return nil, i, untilTime(w.until(r.N, r.Max, span), now, r.Window), nil
		}
	}
	taken := make([]Taken, len(reqs))
	for i, r := range reqs {
		ws[i].add(min, r.N)
		m.changed(r.Key, min, ws[i].span)
		taken[i] = Taken{Key: r.Key, Window: r.Window, Minute: min, N: r.N}
	}
	return taken, -1, time.Time{}, nil
}

// Give implements Counter.
func (m *Memory) Give(_ context.Context, _ time.Time, taken []Taken) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range taken {
		if w := m.windows[t.Key]; w != nil {
			w.give(t.Minute, t.N)
			m.changed(t.Key, t.Minute, w.span)
		}
	}
	return nil
}

// Count implements Counter.
func (m *Memory) Count(_ context.Context, now time.Time, key string, window time.Duration) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.windows[key]
	if w == nil {
		return 0, nil
	}
	w.prune(minuteOf(now), int64(window/time.Minute))
	return w.total, nil
}

// sweep drops the windows with nothing left in them, once per sweepEvery.
func (m *Memory) sweep(now time.Time) {
	if now.Sub(m.swept) < sweepEvery && !now.Before(m.swept) {
		return
	}
	m.swept = now
	min := minuteOf(now)
	for k, w := range m.windows {
		w.prune(min, w.span)
		if w.total == 0 {
			// Its stored minutes have all ended: the next Flush deletes
			// them.
			delete(m.windows, k)
		}
	}
}

// Len is how many windows are held, for tests and metrics.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.windows)
}
