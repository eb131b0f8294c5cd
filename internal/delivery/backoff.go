package delivery

import (
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Back-off: a receiver that answers 421, or a 4xx with an enhanced code of
// 4.7.x (Gmail's "421-4.7.28 … unusual rate", Microsoft's "451 4.7.500
// Server busy"), asks the sender to slow down. Sending it the next message
// at once, over as many connections as before, only deepens its distrust;
// instead the MX host gets a pause, which grows with each further such
// reply, and then fewer connections for a while. The mail is deferred, not
// bounced.
const (
	// backoffFirstPause is the pause after the first such reply; each
	// further one doubles it, up to backoffMaxPause.
	backoffFirstPause = time.Minute
	backoffMaxPause   = 30 * time.Minute
	// backoffQuiet is how long after the pause the host keeps the lowered
	// number of connections; a further such reply within it raises the
	// level, one after it starts again from the first.
	backoffQuiet = time.Hour
)

// Backoff is an MX host in back-off, for the queue page and logs.
type Backoff struct {
	// Host is the MX host name.
	Host string
	// Reason is the reply that asked for it ("421 4.7.28 …").
	Reason string
	// Since is when that reply came.
	Since time.Time
	// Until is the end of the pause: no connection before it.
	Until time.Time
	// Ends is when the lowered connection limit is lifted.
	Ends time.Time
	// MaxConnections is the connection limit in force after the pause.
	MaxConnections int
	// Level counts the replies asking for it in a row (1 the first).
	Level int
}

// backoffs keeps the MX hosts in back-off.
type backoffs struct {
	// maxConns is the normal connection limit per destination.
	maxConns int
	now      func() time.Time

	mu    sync.Mutex
	hosts map[string]*Backoff
}

func newBackoffs(maxConns int, now func() time.Time) *backoffs {
	return &backoffs{maxConns: maxConns, now: now, hosts: map[string]*Backoff{}}
}

// isSlowDown reports whether reply asks the sender to slow down: a 4xx
// with an enhanced status code of class 4.7 (RFC 3463 §3.8, security or
// policy status, which receivers use for rate and reputation limits), or a
// 421 (RFC 5321 §3.8), except a 421 that says the receiver is shutting
// down (4.3.2) or that the connection timed out (4.4.x): those end one
// connection and say nothing about how fast mail comes.
func isSlowDown(reply string) bool {
	code, rest, _ := strings.Cut(reply, " ")
	n, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || n/100 != 4 {
		return false
	}
	if strings.HasPrefix(rest, "4.7.") {
		return true
	}
	return n == 421 && !strings.HasPrefix(rest, "4.3.2 ") && !strings.HasPrefix(rest, "4.4.")
}

// note records a reply asking host to slow down and returns its state.
func (b *backoffs) note(host, reason string) Backoff {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.hosts[host]
	if e == nil || !now.Before(e.Ends) {
		// A host is only looked up again when mail goes to it, so the
		// hosts whose back-off has ended go here: the map holds no more
		// than the hosts that asked to slow down within the last pause
		// and quiet time, not every one since the start.
		b.pruneLocked(now)
		e = &Backoff{Host: host}
		b.hosts[host] = e
	}
	if e.Level > 0 && now.Before(e.Until) {
		// Several deliveries under way met the same refusal: one
		// request to slow down, not several.
		return *e
	}
	e.Level++
	pause := min(backoffFirstPause<<(e.Level-1), backoffMaxPause)
	e.Reason, e.Since, e.Until = reason, now, now.Add(pause)
	e.Ends = e.Until.Add(backoffQuiet)
	// Each level halves the connections, down to one.
	e.MaxConnections = max(1, b.maxConns>>e.Level)
	return *e
}

// paused returns the state of host when it is in its pause.
func (b *backoffs) paused(host string) (Backoff, bool) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.hosts[host]
	if e == nil || !now.Before(e.Until) {
		return Backoff{}, false
	}
	return *e, true
}

// limit returns the connection limit of host, 0 when it is not lowered.
func (b *backoffs) limit(host string) int {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.hosts[host]
	if e == nil {
		return 0
	}
	if !now.Before(e.Ends) {
		delete(b.hosts, host)
		return 0
	}
	return e.MaxConnections
}

// list returns the hosts in back-off, by host name.
func (b *backoffs) list() []Backoff {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneLocked(now)
	out := make([]Backoff, 0, len(b.hosts))
	for _, e := range b.hosts {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// pruneLocked forgets the hosts whose back-off has ended at now.
func (b *backoffs) pruneLocked(now time.Time) {
	for h, e := range b.hosts {
		if !now.Before(e.Ends) {
			delete(b.hosts, h)
		}
	}
}
