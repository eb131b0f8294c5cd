package contain

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/delivery"
)

// The signals (SPEC R20). They name a trip in the API, the audit log, the
// webhook and the metrics.
const (
	// SignalLimits: the account hit its sending limits again and again.
	SignalLimits = "limits"
	// SignalBounces: a large share of its recent recipients were refused
	// by the receiving servers.
	SignalBounces = "bounces"
	// SignalNetworks: it logged in from many networks within the window.
	SignalNetworks = "networks"
	// SignalVolume: it sent far more in the last hour than it usually does.
	SignalVolume = "volume"
	// SignalSpam: the content scanner refused or flagged several of its
	// messages as spam (SPEC R22).
	SignalSpam = "spam"
)

// Thresholds are the trip points of the signals; a zero count turns its
// signal off.
type Thresholds struct {
	// LimitHits trips when the account hits a sending limit this many
	// times within LimitWindow.
	LimitHits int
	// LimitWindow is the rolling window of LimitHits.
	LimitWindow time.Duration
	// BounceShare trips when at least this share (0–1) of the account's
	// recipients in BounceWindow were refused, once there are at least
	// BounceMin of them.
	BounceShare float64
	// BounceMin is the fewest recipients BounceShare is judged on.
	BounceMin int
	// BounceWindow is the rolling window of BounceShare.
	BounceWindow time.Duration
	// Networks trips when the account logs in successfully from this many
	// distinct networks (IPv4 /24, IPv6 /48) within NetworksWindow.
	Networks int
	// NetworksWindow is the rolling window of Networks.
	NetworksWindow time.Duration
	// RiseFactor trips when the messages of the last hour reach this many
	// times the account's mean per hour over the last RiseDays days …
	RiseFactor float64
	// RiseFloor … and at least this many messages, so that a quiet
	// account's first busy hour is no trip.
	RiseFloor int
	// RiseDays is how many days of history the mean is taken over.
	RiseDays int
	// Spam trips when this many of the account's messages are refused or
	// flagged as spam within SpamWindow.
	Spam int
	// SpamWindow is the rolling window of Spam.
	SpamWindow time.Duration
}

// Trip is one signal that tripped, with the figures that made it trip.
type Trip struct {
	// Account is the account concerned.
	Account string `json:"account"`
	// Signal is one of the Signal constants.
	Signal string `json:"signal"`
	// Figures are the counts the decision was made on, by name.
	Figures map[string]float64 `json:"figures"`
	// Summary says the same in a sentence, for people.
	Summary string `json:"summary"`
	// Time is when the signal tripped.
	Time time.Time `json:"time"`
}

// Buckets of the rolling counts. A count is kept in buckets of a fixed
// width, so an account costs the same whatever it sends.
const (
	// bounceBuckets split BounceWindow.
	bounceBuckets = 12
	// hourSlices split the last hour of the volume signal.
	hourSlices = 12
	// maxRiseDays bounds RiseDays, and so the hourly history.
	maxRiseDays = 31
)

// window is a rolling count in a ring of buckets, numbered by time: the
// newest bucket is head, and the ring holds the len(counts) buckets up to
// it. Counts saturate rather than wrap; total is their sum, kept as they
// change, so the whole ring is summed without a loop.
type window[T uint16 | uint32] struct {
	// head is the newest bucket's number; counts the ring; total its sum.
	head   int64
	counts []T
	total  uint64
}

func newWindow[T uint16 | uint32](n int) window[T] { return window[T]{counts: make([]T, n)} }

// add counts n at bucket number b; a bucket older than the ring is lost.
func (w *window[T]) add(b int64, n uint32) {
	size := int64(len(w.counts))
	if b > w.head {
		if b-w.head >= size {
			clear(w.counts)
			w.total = 0
		} else {
			for i := w.head + 1; i <= b; i++ {
				w.total -= uint64(w.counts[i%size])
				w.counts[i%size] = 0
			}
		}
		w.head = b
	}
	if b <= w.head-size {
		return
	}
	i := b % size
	v := min(uint64(w.counts[i])+uint64(n), uint64(^T(0)))
	w.total += v - uint64(w.counts[i])
	w.counts[i] = T(v)
}

// sum counts the buckets numbered from lo to hi, both included.
func (w *window[T]) sum(lo, hi int64) uint64 {
	size := int64(len(w.counts))
	lo = max(lo, w.head-size+1)
	hi = min(hi, w.head)
	if lo == w.head-size+1 && hi == w.head {
		return w.total
	}
	var s uint64
	for b := lo; b <= hi; b++ {
		s += uint64(w.counts[b%size])
	}
	return s
}

// before counts every bucket of the ring older than the head.
func (w *window[T]) before() uint64 {
	return w.total - uint64(w.counts[w.head%int64(len(w.counts))])
}

// state is what the detector keeps of one account: fixed-size buckets,
// and at most Thresholds.LimitHits times and Thresholds.Networks networks.
type state struct {
	// seen is when the account was last heard of, for eviction.
	seen time.Time
	// hits are the times of the recent limit hits, oldest first.
	hits []time.Time
	// rcpts and refused count delivery results in BounceWindow buckets.
	rcpts, refused window[uint32]
	// nets are the networks logged in from, with the last time.
	nets map[netip.Prefix]time.Time
	// slices count the last hour's messages; hours the history by hour,
	// in 16 bits, since 65535 messages in an hour trips anyway.
	slices window[uint32]
	hours  window[uint16]
	// spam are the times of the recent spam verdicts, oldest first, at
	// most Thresholds.Spam of them.
	spam []time.Time
	// since is the hour (Unix hours) from which hours holds the account's
	// whole history: the start of counting, or of this state when the
	// account was forgotten to make room.
	since int64
}

// Detector watches each account's signals in rolling windows and calls
// Trip when one trips. Its methods are called in the SMTP and delivery
// paths: they count in memory and return, and Trip must not wait either.
//
// Memory is bounded per account (fixed buckets, capped lists) and in all
// (MaxAccounts: past it, the account heard of least recently among a few
// is forgotten, so a flood of logins costs no more than the cap).
type Detector struct {
	// th are the thresholds (SetThresholds); maxAccounts bounds the
	// accounts tracked.
	th          atomic.Pointer[Thresholds]
	maxAccounts int
	// now is the clock; trip is told of trips.
	now  func() time.Time
	trip func(Trip)

	// hourlyLimit returns the most messages an hour the sending limits let
	// account send, 0 for none (SetHourlyLimit).
	hourlyLimit func(account string) int64

	// mu guards accounts and what the fields of persisted describe.
	mu       sync.Mutex
	accounts map[string]*state
	persisted
}

// MaxNetworks is the highest Networks threshold, which bounds the networks
// kept of one account.
const MaxNetworks = 1000

// DefaultMaxAccounts bounds the accounts a Detector tracks; with the
// default thresholds one costs about 600 bytes.
const DefaultMaxAccounts = 100000

// NewDetector returns a detector calling trip with every trip. maxAccounts
// 0 means DefaultMaxAccounts; now nil means time.Now.
func NewDetector(th Thresholds, maxAccounts int, now func() time.Time, trip func(Trip)) *Detector {
	if maxAccounts <= 0 {
		maxAccounts = DefaultMaxAccounts
	}
	if now == nil {
		now = time.Now
	}
	th.RiseDays = min(max(th.RiseDays, 1), maxRiseDays)
	th.Networks = min(th.Networks, MaxNetworks)
	d := &Detector{maxAccounts: maxAccounts, now: now, trip: trip, accounts: map[string]*state{},
		persisted: persisted{since: now().Unix() / 3600, pending: map[string]map[countKey]int64{}, resets: map[string]string{}}}
	d.th.Store(&th)
	return d
}

// SetThresholds puts new thresholds in force (a reload); the windows keep
// what they counted, and the next event is judged by the new thresholds.
// RiseDays sizes each account's hourly history and stays as the detector
// was made with.
func (d *Detector) SetThresholds(th Thresholds) {
	th.RiseDays = d.th.Load().RiseDays
	th.Networks = min(th.Networks, MaxNetworks)
	d.th.Store(&th)
}

// SetHourlyLimit tells the detector the most messages an hour the sending
// limits let an account send (SPEC R19), 0 for none. f is called outside
// the detector's lock and must not block for long.
func (d *Detector) SetHourlyLimit(f func(account string) int64) { d.hourlyLimit = f }

// get returns account's state, making it (and room for it); d.mu is held.
func (d *Detector) get(account string, at time.Time) *state {
	st := d.accounts[account]
	if st == nil {
		if len(d.accounts) >= d.maxAccounts {
			d.evict()
		}
		st = &state{
			rcpts: newWindow[uint32](bounceBuckets), refused: newWindow[uint32](bounceBuckets),
			slices: newWindow[uint32](hourSlices), hours: newWindow[uint16](24*d.th.Load().RiseDays + 1),
			since: d.since,
		}
		if d.evicted {
			// The store may hold more of its history than memory now does.
			st.since = at.Unix() / 3600
		}
		d.accounts[account] = st
	}
	if at.After(st.seen) {
		st.seen = at
	}
	return st
}

// evict forgets the account heard of least recently among a few taken at
// random (map order), which costs the same however many are tracked.
func (d *Detector) evict() {
	var victim string
	var oldest time.Time
	n := 0
	for a, st := range d.accounts {
		if victim == "" || st.seen.Before(oldest) {
			victim, oldest = a, st.seen
		}
		if n++; n == 8 {
			break
		}
	}
	delete(d.accounts, victim)
	d.evicted = true
}

// Forget drops what the detector holds of account: after a release it
// starts afresh, or the old figures would trip it again at once.
func (d *Detector) Forget(account string) {
	d.mu.Lock()
	delete(d.accounts, account)
	d.reset(account, allKinds)
	d.mu.Unlock()
}

// Tracked returns how many accounts the detector holds state for.
func (d *Detector) Tracked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.accounts)
}

// LimitHit is told of every refusal by a sending limit (SPEC R19): the
// account, the limit's name and when. It is the limits' hook.
func (d *Detector) LimitHit(account, limit string, at time.Time) {
	th := *d.th.Load()
	if th.LimitHits <= 0 || account == "" {
		return
	}
	d.mu.Lock()
	st := d.get(account, at)
	kept := since(st.hits, at.Add(-th.LimitWindow))
	// Refusals within one minute count once: a single message to more
	// recipients than the limit leaves, or a client that retries MAIL in a
	// loop, is one burst, not repeated sending into the limit. What trips
	// is coming back into the limit minute after minute.
	if n := len(kept); n > 0 && kept[n-1].Truncate(time.Minute).Equal(at.Truncate(time.Minute)) {
		st.hits = kept
		d.mu.Unlock()
		return
	}
	st.hits = append(kept, at)
	d.note(account, KindHit, at.UnixNano(), "", 1)
	if len(st.hits) > th.LimitHits {
		st.hits = st.hits[len(st.hits)-th.LimitHits:]
	}
	n := len(st.hits)
	if n >= th.LimitHits {
		// A trip starts the count afresh, so a warning is not repeated
		// for every further hit.
		st.hits = st.hits[:0]
		d.reset(account, KindHit)
	}
	d.mu.Unlock()
	if n >= th.LimitHits {
		d.fire(Trip{Account: account, Signal: SignalLimits, Time: at,
			Figures: map[string]float64{"hits": float64(n), "threshold": float64(th.LimitHits), "window_seconds": th.LimitWindow.Seconds()},
			Summary: fmt.Sprintf("%d sending limit refusals within %s (last: %s), threshold %d", n, th.LimitWindow, limit, th.LimitHits)})
	}
}

// Delivered is told of the recipients' results of one delivery attempt of
// a message the account submitted (queue.Config.Outcomes). A recipient
// refused for good (a 5xx, a non-existent domain) counts as refused;
// temporary failures count as neither, since greylisting is common.
func (d *Detector) Delivered(account string, results []delivery.Result) {
	th := *d.th.Load()
	if th.BounceShare <= 0 || account == "" || len(results) == 0 {
		return
	}
	var total, refused uint32
	for _, r := range results {
		switch r.Status {
		case delivery.Delivered:
			total++
		case delivery.Permanent:
			total++
			refused++
		}
	}
	if total == 0 {
		return
	}
	at := d.now()
	width := max(th.BounceWindow/bounceBuckets, time.Second)
	b := at.UnixNano() / int64(width)
	d.mu.Lock()
	st := d.get(account, at)
	st.rcpts.add(b, total)
	st.refused.add(b, refused)
	d.note(account, KindRcpts, b*int64(width), "", int64(total))
	if refused > 0 {
		d.note(account, KindRefused, b*int64(width), "", int64(refused))
	}
	lo := b - bounceBuckets + 1
	n, bad := st.rcpts.sum(lo, b), st.refused.sum(lo, b)
	tripped := n >= uint64(max(th.BounceMin, 1)) && float64(bad) >= th.BounceShare*float64(n)
	if tripped {
		st.rcpts, st.refused = newWindow[uint32](bounceBuckets), newWindow[uint32](bounceBuckets)
		d.reset(account, KindRcpts+KindRefused)
	}
	d.mu.Unlock()
	if tripped {
		d.fire(Trip{Account: account, Signal: SignalBounces, Time: at,
			Figures: map[string]float64{"recipients": float64(n), "refused": float64(bad), "share": float64(bad) / float64(n),
				"threshold": th.BounceShare, "min": float64(th.BounceMin), "window_seconds": th.BounceWindow.Seconds()},
			Summary: fmt.Sprintf("%d of %d recipients refused within %s (%.0f%%), threshold %.0f%% of at least %d",
				bad, n, th.BounceWindow, 100*float64(bad)/float64(n), 100*th.BounceShare, th.BounceMin)})
	}
}

// networkOf is the network a login is counted by: the IPv4 /24 or the
// IPv6 /48, what one customer's site or provider usually holds.
func networkOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

// LoggedIn is told of every successful AUTH (smtpd.Activity).
func (d *Detector) LoggedIn(account string, ip netip.Addr, _ string, at time.Time) {
	th := *d.th.Load()
	if th.Networks <= 0 || account == "" || !ip.IsValid() {
		return
	}
	net := networkOf(ip)
	from := at.Add(-th.NetworksWindow)
	d.mu.Lock()
	st := d.get(account, at)
	if st.nets == nil {
		st.nets = map[netip.Prefix]time.Time{}
	}
	// At most Networks are kept: at that many the signal trips and they
	// are cleared. The expired ones are dropped only when a new network
	// would make the count, so a login costs little; a map with fewer
	// than Networks-1 entries never needs it.
	if _, ok := st.nets[net]; !ok && len(st.nets) >= th.Networks-1 {
		for p, t := range st.nets {
			if !t.After(from) {
				delete(st.nets, p)
			}
		}
	}
	st.nets[net] = at
	d.note(account, KindNetwork, 0, net.String(), at.UnixNano())
	n := len(st.nets)
	if n >= th.Networks {
		clear(st.nets)
		d.reset(account, KindNetwork)
	}
	d.mu.Unlock()
	if n >= th.Networks {
		d.fire(Trip{Account: account, Signal: SignalNetworks, Time: at,
			Figures: map[string]float64{"networks": float64(n), "threshold": float64(th.Networks), "window_seconds": th.NetworksWindow.Seconds()},
			Summary: fmt.Sprintf("logins from %d networks within %s (last from %s), threshold %d", n, th.NetworksWindow, net, th.Networks)})
	}
}

// sliceWidth is the width of one slice of the last hour.
const sliceWidth = time.Hour / hourSlices

// Queued is told of every message the account submitted (smtpd.Activity).
//
// The volume signal compares the last hour with the account's mean per
// hour over the hours of history the detector holds, up to RiseDays days.
// While that history is shorter than RiseDays, as after a start on an
// empty data_dir, it says too little of what is usual for the account: the
// signal then trips only above what the sending limits let the account
// send in an hour (SPEC R19), so an account that keeps within its limits
// is not held for a history the detector does not have (issue 19).
func (d *Detector) Queued(account string, _ int, at time.Time) {
	th := *d.th.Load()
	if th.RiseFloor <= 0 || account == "" {
		return
	}
	slice := at.UnixNano() / int64(sliceWidth)
	hour := at.Unix() / 3600
	full := int64(24 * th.RiseDays)
	d.mu.Lock()
	st := d.get(account, at)
	st.slices.add(slice, 1)
	st.hours.add(hour, 1)
	d.note(account, KindSlice, slice*int64(sliceWidth), "", 1)
	d.note(account, KindHour, hour*int64(time.Hour), "", 1)
	last := st.slices.sum(slice-hourSlices+1, slice)
	// The ring holds RiseDays days before the current hour, of which the
	// hours since st.since are known.
	known := min(max(hour-st.since, 0), full)
	var mean float64
	if known > 0 {
		mean = float64(st.hours.before()) / float64(known)
	}
	d.mu.Unlock()
	limit := max(float64(th.RiseFloor), th.RiseFactor*mean)
	if float64(last) >= limit && known < full && d.hourlyLimit != nil {
		if most := d.hourlyLimit(account); most > 0 {
			limit = max(limit, float64(most+1))
		}
	}
	if float64(last) < limit {
		return
	}
	// Another message may have tripped it while the lock was not held:
	// one trip is enough.
	d.mu.Lock()
	st = d.accounts[account]
	if st == nil || float64(st.slices.sum(slice-hourSlices+1, slice)) < limit {
		d.mu.Unlock()
		return
	}
	st.slices = newWindow[uint32](hourSlices)
	d.reset(account, KindSlice)
	d.mu.Unlock()
	d.fire(Trip{Account: account, Signal: SignalVolume, Time: at,
		Figures: map[string]float64{"last_hour": float64(last), "mean_per_hour": mean, "factor": th.RiseFactor,
			"floor": float64(th.RiseFloor), "days": float64(th.RiseDays), "history_hours": float64(known)},
		Summary: fmt.Sprintf("%d messages in the last hour against a mean of %.1f per hour over %d hours of history (trips at %.0f: %g times the mean, at least %d)",
			last, mean, known, limit, th.RiseFactor, th.RiseFloor)})
}

// Spam is told of every message of the account that the content scanner
// refused or flagged as spam (SPEC R22), with rspamd's action.
func (d *Detector) Spam(account, action string, at time.Time) {
	th := *d.th.Load()
	if th.Spam <= 0 || account == "" {
		return
	}
	from := at.Add(-th.SpamWindow)
	d.mu.Lock()
	st := d.get(account, at)
	st.spam = append(since(st.spam, from), at)
	d.note(account, KindSpam, at.UnixNano(), "", 1)
	n := len(st.spam)
	if n >= th.Spam {
		// As for the limit hits, a trip starts the count afresh, in the
		// store too, so a restart does not count these verdicts again.
		st.spam = st.spam[:0]
		d.reset(account, KindSpam)
	}
	d.mu.Unlock()
	if n >= th.Spam {
		d.fire(Trip{Account: account, Signal: SignalSpam, Time: at,
			Figures: map[string]float64{"messages": float64(n), "threshold": float64(th.Spam), "window_seconds": th.SpamWindow.Seconds()},
			Summary: fmt.Sprintf("%d messages refused or flagged as spam within %s (last: %s), threshold %d", n, th.SpamWindow, action, th.Spam)})
	}
}

// since keeps the times of ts after from, in ts's own array; ts is oldest
// first and holds no more than a threshold's count, which bounds it.
func since(ts []time.Time, from time.Time) []time.Time {
	kept := ts[:0]
	for _, t := range ts {
		if t.After(from) {
			kept = append(kept, t)
		}
	}
	return kept
}

// fire hands a trip on.
func (d *Detector) fire(t Trip) {
	if d.trip != nil {
		d.trip(t)
	}
}
