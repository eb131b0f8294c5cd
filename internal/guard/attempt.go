package guard

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Verdict is what taking a place for an attempt came to.
type Verdict int

// The verdicts of Counter.Take.
const (
	// Granted: the attempt has its place and may check the password.
	Granted Verdict = iota
	// Refused: the key is blocked.
	Refused
	// AtLimit: the key is not blocked yet, but its failures in the window
	// and the attempts in flight already make MaxFailures, so one more check
	// could exceed the limit (SPEC R11).
	AtLimit
)

// Outcome is what recording a failure came to.
type Outcome struct {
	// Blocked is true when a block of the key is in force after the failure.
	Blocked bool
	// Made is true when this failure made the block.
	Made bool
	// Block is the block in force when Blocked.
	Block Block
	// Failures is the number of failures of the key in the window, this one
	// included, at most MaxFailures.
	Failures int
}

// Counter holds the counting state of SPEC R11 per key: the failures in the
// rolling window, as a log of at most MaxFailures times, and the places of
// attempts in flight. An attempt takes a place before its password is
// checked, so attempts in flight count against the limit, and however many
// run at once a key gets at most MaxFailures failed checks per window.
//
// Each method is one atomic step. The memory counter does each under the
// guard's lock; a counter shared by several nodes does each in one round
// trip (one script), so that nodes cannot out-race each other either. Places
// are not durable: a place is held at most until the expiry Take gives it, so
// one whose holder died (a crashed node) comes back by itself.
type Counter interface {
	// Take takes place id for an attempt of key at now, held until expires
	// at the latest, unless the key is blocked at now (Refused) or its
	// failures in the window and its places held make MaxFailures already
	// (AtLimit).
	Take(key netip.Prefix, id uint64, now, expires time.Time) Verdict
	// Peek answers what Take would answer at now, taking nothing: Granted
	// when the key is below its limit.
	Peek(key netip.Prefix, now time.Time) Verdict
	// Fail gives place id back, records failure f of key and, when that
	// brings the key's failures in the window to MaxFailures and no block is
	// in force, blocks the key until f.Time plus BlockFor. A failure is
	// recorded even when the place is gone (it expired, or support lifted
	// the key meanwhile); id 0 records a failure checked without a place.
	Fail(key netip.Prefix, id uint64, f Failure) Outcome
	// Release gives place id back and records nothing. Releasing a place
	// that is gone does nothing.
	Release(key netip.Prefix, id uint64)
}

// place is an attempt in flight.
type place struct {
	// id names the place for its release.
	id uint64
	// expires is when the place is given back at the latest.
	expires time.Time
}

// memCounter is the Counter of a guard that keeps its state in memory (and
// writes failures and blocks through to its Store): every step runs under
// the guard's write lock, on the guard's maps.
type memCounter struct {
	// g is the guard whose maps and lock the counter uses.
	g *Guard
}

var _ Counter = (*memCounter)(nil)

// Take implements Counter.
func (m *memCounter) Take(key netip.Prefix, id uint64, now, expires time.Time) Verdict {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.blocks[key]; ok && now.Before(b.Until) {
		return Refused
	}
	ps := livePlaces(g.places[key], now)
	if g.liveCount(g.failures[key], now)+len(ps) >= g.conf().MaxFailures {
		g.setPlaces(key, ps)
		return AtLimit
	}
	g.setPlaces(key, append(ps, place{id: id, expires: expires}))
	return Granted
}

// Peek implements Counter.
func (m *memCounter) Peek(key netip.Prefix, now time.Time) Verdict {
	g := m.g
	g.mu.RLock()
	defer g.mu.RUnlock()
	if b, ok := g.blocks[key]; ok && now.Before(b.Until) {
		return Refused
	}
	held := 0
	for _, p := range g.places[key] {
		if now.Before(p.expires) {
			held++
		}
	}
	if g.liveCount(g.failures[key], now)+held >= g.conf().MaxFailures {
		return AtLimit
	}
	return Granted
}

// Fail implements Counter.
func (m *memCounter) Fail(key netip.Prefix, id uint64, f Failure) Outcome {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dropPlace(key, id)
	fs := g.trim(append(g.live(g.failures[key], f.Time), f))
	g.setFailures(g.failures, key, fs)
	out := Outcome{Failures: len(fs)}
	if b, ok := g.blocks[key]; ok && f.Time.Before(b.Until) {
		out.Block, out.Blocked = b, true
	}
	if !out.Blocked && len(fs) >= g.conf().MaxFailures {
		out.Block = Block{Key: key, Since: f.Time, Until: f.Time.Add(g.conf().BlockFor), SIDs: sessionIDs(fs, nil)}
		g.blocks[key] = out.Block
		out.Blocked, out.Made = true, true
	}
	return out
}

// Release implements Counter.
func (m *memCounter) Release(key netip.Prefix, id uint64) {
	g := m.g
	g.mu.Lock()
	g.dropPlace(key, id)
	g.mu.Unlock()
}

// dropPlace removes place id of key, if it is still held. The caller holds
// the write lock.
func (g *Guard) dropPlace(key netip.Prefix, id uint64) {
	if id == 0 {
		return
	}
	ps := g.places[key]
	if i := slices.IndexFunc(ps, func(p place) bool { return p.id == id }); i >= 0 {
		g.setPlaces(key, slices.Delete(ps, i, i+1))
	}
}

// setPlaces sets the places of key, forgetting the key when it has none, so
// the map holds only keys with attempts in flight. The caller holds the
// write lock.
func (g *Guard) setPlaces(key netip.Prefix, ps []place) {
	if len(ps) == 0 {
		delete(g.places, key)
		return
	}
	g.places[key] = ps
}

// trim keeps the newest MaxFailures of fs (oldest first), in place: only
// they can decide a block, so the log of a key holds no more, and a key
// costs bounded memory however often it fails.
func (g *Guard) trim(fs []Failure) []Failure {
	if over := len(fs) - g.conf().MaxFailures; over > 0 {
		fs = append(fs[:0], fs[over:]...)
	}
	return fs
}

// livePlaces drops the places that expired by now from ps, in place.
func livePlaces(ps []place, now time.Time) []place {
	return slices.DeleteFunc(ps, func(p place) bool { return !now.Before(p.expires) })
}

// liveCount is the number of failures in fs (oldest first) inside the window
// ending at now.
func (g *Guard) liveCount(fs []Failure, now time.Time) int {
	cut := now.Add(-g.conf().Window)
	i, _ := slices.BinarySearchFunc(fs, cut, func(f Failure, t time.Time) int {
		if f.Time.After(t) {
			return 1
		}
		return -1
	})
	return len(fs) - i
}

// Attempt is one AUTH attempt holding a place of its key (SPEC R11): it is
// settled once, by Fail or Succeed, and the first settle wins. Deferring
// Succeed right after Begin gives the place back however the session ends,
// since it does nothing once Fail has settled the attempt. The methods of a
// nil Attempt do nothing.
type Attempt struct {
	// g is the guard the place belongs to.
	g *Guard
	// key is the client key the place is counted for.
	key netip.Prefix
	// id names the place; 0 means the attempt holds none (an exempt client
	// or one without an address), so nothing is counted for it.
	id uint64
	// exempt is true for a client in an exempt network (SPEC R11a).
	exempt bool
	// sid is the session the attempt is made in (SPEC R12).
	sid string
	// once makes the first settle the only one.
	once sync.Once
	// blocked is what the first Fail reported.
	blocked bool
}

// Begin takes a place for an AUTH attempt from ip in session sid, before the
// password is checked (SPEC R11). When ok is false the key is blocked or at
// its limit (failures in the window plus attempts in flight make
// MaxFailures): the caller answers with the block refusal and closes without
// checking the password, and a is nil. Otherwise the caller settles a with
// Fail or Succeed; a place never settled is given back when AttemptTimeout
// has passed. A client in an exempt network, or without an address, always
// gets a place and is never counted.
func (g *Guard) Begin(ip netip.Addr, sid string) (a *Attempt, ok bool) {
	if !ip.IsValid() {
		return &Attempt{g: g, sid: sid}, true
	}
	key := g.conf().Key(ip)
	if g.Exempt(ip) {
		return &Attempt{g: g, key: key, exempt: true, sid: sid}, true
	}
	if g.Blocked(ip) {
		// The counter looks at the key's own block only; a network support
		// blocked by hand is not a client key. A shared counter is spared
		// the round trip too.
		return nil, false
	}
	now := g.conf().Now()
	id := g.placeSeq.Add(1)
	switch g.count.Take(key, id, now, now.Add(g.conf().AttemptTimeout)) {
	case Refused:
		g.nRefusals.Add(1)
		return nil, false
	case AtLimit:
		g.nAtLimit.Add(1)
		return nil, false
	}
	return &Attempt{g: g, key: key, id: id, sid: sid}, true
}

// Open reports whether an AUTH attempt from ip may be answered without a
// place: true unless ip is blocked or its key at its limit, the failures in
// the window and the attempts in flight making MaxFailures (SPEC R11). It
// takes nothing. A password answered from the credential cache asks it
// instead of Begin: the answer costs no hash, so it needs no place, but it
// tells a right password from a wrong one as a hash would, so past the
// limit it must not be given either, on any connection. When ok is false
// the caller answers as Begin's refusal says. An exempt client, or one
// without an address, is always let in, as Begin lets it in.
func (g *Guard) Open(ip netip.Addr) bool {
	if !ip.IsValid() || g.Exempt(ip) {
		return true
	}
	if g.Blocked(ip) {
		return false
	}
	switch g.count.Peek(g.conf().Key(ip), g.conf().Now()) {
	case Refused:
		g.nRefusals.Add(1)
		return false
	case AtLimit:
		g.nAtLimit.Add(1)
		return false
	}
	return true
}

// Fail settles the attempt as failed: it counts the failure (on disk too,
// when the guard has a store) and gives the place back. It reports whether
// the key is blocked now; the caller then closes the connection after the
// failure reply. Only the first settle counts; a Fail after it reports what
// the first Fail did, or false after Succeed.
func (a *Attempt) Fail() (blocked bool) {
	if a == nil {
		return false
	}
	a.once.Do(func() { a.blocked = a.g.fail(a) })
	return a.blocked
}

// Succeed settles the attempt as successful: it gives the place back and
// counts nothing, since an office behind one NAT address shares the count
// with whoever guesses passwords from it. After the first settle it does
// nothing.
func (a *Attempt) Succeed() {
	if a == nil {
		return
	}
	a.once.Do(func() {
		if a.id != 0 {
			a.g.count.Release(a.key, a.id)
		}
	})
}

// fail counts the failure of attempt a and reports whether its key is
// blocked now.
func (g *Guard) fail(a *Attempt) bool {
	switch {
	case !a.key.IsValid():
		return false
	case a.exempt:
		// SPEC R11a: exempt networks are never blocked; the SMTP side logs
		// the failure itself.
		g.nExempt.Add(1)
		g.log.Info("guard: AUTH failure from exempt network not counted", "key", FormatKey(a.key), "session", a.sid)
		return false
	}
	f := Failure{Time: g.conf().Now(), SID: a.sid}
	out := g.count.Fail(a.key, a.id, f)
	g.nFailures.Add(1)
	g.persist(a.key, f, out)
	if out.Made {
		g.nBlocks.Add(1)
		g.log.Warn("guard: blocked", "key", FormatKey(a.key), "failures", out.Failures,
			"window", g.conf().Window.String(), "until", out.Block.Until.UTC().Format(time.RFC3339), "sessions", strings.Join(out.Block.SIDs, ","))
	}
	return out.Blocked
}
