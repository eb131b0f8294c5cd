package trace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/ids"
	"submitd/internal/sessionlog"
)

// Every session id the server sends can be looked up (SPEC R13a), the
// ones of connections refused at the greeting included (a blocked IP,
// the connection limits, shutdown). Writing a record per refusal would
// make a flood of refused connections cost a database write each, which
// is what refusing before the greeting avoids (SPEC R11, R16a). Instead the
// refusals of one client address for one reason form an episode: its
// first refusal draws an 8-character tag, and every refusal of the episode
// gets a session id that starts with that tag and goes on with 14 random
// characters (still 22 of [A-Za-z0-9], SPEC R12). The episode is saved as
// one session record, under the tag followed by 14 zeros, when it starts
// and again every few seconds while its count grows. A pasted refusal id
// is looked up by its tag: the record says who was refused, why, how
// often and when, and the block it names has its Unblock button.

// tagLen is the length of an episode's tag, the start of its ids: 47 bits,
// so a tag drawn at random does not clash with another episode's.
const tagLen = 8

// episodeSuffix ends the id an episode's record is saved under.
const episodeSuffix = "00000000000000"

// Bounds of the episodes held in memory: an episode ends when its client
// has not been refused for episodeGap, and at most maxEpisodes are open,
// so a flood from many addresses cannot grow the map without bound. A
// refusal past that gets a plain id, counted in Unrecorded.
const (
	episodeGap  = time.Hour
	maxEpisodes = 4096
	// flushEvery is how often grown episodes are saved again.
	flushEvery = 5 * time.Second
)

// RecordSaver saves session records in the background;
// sessionlog.Writer is one.
type RecordSaver interface {
	Save(r *sessionlog.Record)
}

// episodeKey is what an episode groups by: the client (IPv4 address, IPv6
// /64), the listener and the reply key.
type episodeKey struct {
	client   netip.Prefix
	listener string
	key      string
}

// episode is the refusals of one client for one reason.
type episode struct {
	tag         string
	ip          string
	line        string
	first, last time.Time
	count       int
	// saved is count when the record was last handed to the saver.
	saved int
}

// Refusals hands out the ids of refused connections and records their
// episodes. Refused is on the refusal path: a map lookup under a mutex and
// a random id, no I/O.
type Refusals struct {
	saver RecordSaver
	now   func() time.Time

	mu       sync.Mutex
	episodes map[episodeKey]*episode
	// evictAt is when the least recently refused open episode will have
	// been idle for a minute: until then evictLocked has nothing to end,
	// so a flood that keeps maxEpisodes busy costs no scan per refusal.
	evictAt time.Time

	// unrecorded counts the refusals that got a plain id because
	// maxEpisodes were open.
	unrecorded atomic.Uint64

	stop chan struct{}
	done chan struct{}
}

// NewRefusals starts the recorder of refusal episodes; it saves them
// through saver. Close saves what grew and stops it.
func NewRefusals(saver RecordSaver) *Refusals {
	r := &Refusals{saver: saver, now: time.Now, episodes: map[episodeKey]*episode{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// Unrecorded counts the refusals whose ids name no record.
func (r *Refusals) Unrecorded() uint64 { return r.unrecorded.Load() }

// Refused returns the session id for a connection from ip refused on
// listener with the reply of key; sid is the random id the connection
// drew, whose characters the returned id reuses, so a refusal costs no
// second draw. reply gives the refusal's line for an id, and is called
// only when an episode starts.
func (r *Refusals) Refused(sid string, ip netip.Addr, listener, key string, reply func(sid string) string) string {
	client := netip.PrefixFrom(ip, ip.BitLen())
	if ip.Is6() {
		client, _ = ip.Prefix(64)
	}
	k := episodeKey{client: client, listener: listener, key: key}
	now := r.now()
	rnd := sid
	if !ids.IsSession(rnd) {
		rnd = ids.Session()
	}
	r.mu.Lock()
	ep := r.episodes[k]
	if ep == nil || now.Sub(ep.last) > episodeGap {
		if ep != nil {
			r.saveLocked(k, ep)
			delete(r.episodes, k)
		}
		if len(r.episodes) >= maxEpisodes {
			r.evictLocked(now)
		}
		if len(r.episodes) >= maxEpisodes {
			r.mu.Unlock()
			r.unrecorded.Add(1)
			return rnd
		}
		ep = &episode{tag: rnd[:tagLen], ip: ip.String(), first: now}
		ep.line = reply(rnd)
		r.episodes[k] = ep
	}
	ep.count++
	ep.last = now
	sid = ep.tag + rnd[tagLen:]
	if ep.count == 1 {
		// Saved at once, so the id the client just got can be looked up
		// within moments.
		r.saveLocked(k, ep)
	}
	r.mu.Unlock()
	return sid
}

// evictLocked ends the episodes idle for a minute, saving them.
func (r *Refusals) evictLocked(now time.Time) {
	if !now.After(r.evictAt) {
		return
	}
	var oldest time.Time
	for k, ep := range r.episodes {
		if now.Sub(ep.last) > time.Minute {
			r.saveLocked(k, ep)
			delete(r.episodes, k)
		} else if oldest.IsZero() || ep.last.Before(oldest) {
			oldest = ep.last
		}
	}
	r.evictAt = oldest.Add(time.Minute)
}

// saveLocked hands ep's record to the saver when it has grown.
func (r *Refusals) saveLocked(k episodeKey, ep *episode) {
	if ep.count == ep.saved {
		return
	}
	ep.saved = ep.count
	kind, why := "connect", "connection refused ("+k.key+")"
	if k.key == "blocked" {
		// The kind a blocked client's refusal has in a session record, so
		// it is explained as one (SPEC R11).
		kind, why = "refused", "client blocked"
	}
	detail := fmt.Sprintf("%s: %d connection(s) refused from %s to %s; their session ids start with %s",
		why, ep.count, ep.first.UTC().Format("2006-01-02 15:04:05"), ep.last.UTC().Format("15:04:05 UTC"), ep.tag)
	rec := &sessionlog.Record{ID: ep.tag + episodeSuffix, Start: ep.first, End: ep.last, Listener: k.listener, ClientIP: ep.ip,
		Events: []sessionlog.Event{{Time: ep.first, Kind: kind, Detail: detail, Reply: ep.line}}}
	r.saver.Save(rec)
}

func (r *Refusals) run() {
	defer close(r.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			r.flush(time.Time{})
			return
		case <-t.C:
			r.flush(r.now())
		}
	}
}

// flush saves the episodes that grew; with now set, it ends those idle
// past episodeGap.
func (r *Refusals) flush(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, ep := range r.episodes {
		r.saveLocked(k, ep)
		if !now.IsZero() && now.Sub(ep.last) > episodeGap {
			delete(r.episodes, k)
		}
	}
}

// Close saves what grew and stops. Call it before the saver closes.
func (r *Refusals) Close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

// SessionGetter reads session records; the session log's stores are ones.
type SessionGetter interface {
	Get(ctx context.Context, id string) (*sessionlog.Record, error)
}

// Session returns the record of session id; for the id of a connection
// refused at the greeting, which has none of its own, the record of its
// refusals (Refusal). Every lookup of a session id support pastes goes
// through it, so that any id the server sent answers (SPEC R13a).
func Session(ctx context.Context, g SessionGetter, id string) (*sessionlog.Record, error) {
	rec, err := g.Get(ctx, id)
	if errors.Is(err, sessionlog.ErrNotFound) {
		if r, rerr := Refusal(ctx, g, id); rerr == nil {
			return r, nil
		}
	}
	return rec, err
}

// Refusal returns the record that explains session id when the id is one
// of a refused connection (see Refusals): its episode's record, told with
// id, or an error wrapping sessionlog.ErrNotFound.
func Refusal(ctx context.Context, g SessionGetter, id string) (*sessionlog.Record, error) {
	if !ids.IsSession(id) || strings.HasSuffix(id, episodeSuffix) {
		return nil, fmt.Errorf("%s: %w", id, sessionlog.ErrNotFound)
	}
	rec, err := g.Get(ctx, id[:tagLen]+episodeSuffix)
	if err != nil {
		return nil, err
	}
	rec.ID = id
	for i := range rec.Events {
		// The reply as this connection got it: with its own id.
		e := &rec.Events[i]
		if j := strings.Index(e.Reply, id[:tagLen]); j >= 0 && j+ids.SessionLen <= len(e.Reply) {
			e.Reply = e.Reply[:j] + id + e.Reply[j+ids.SessionLen:]
		}
	}
	return rec, nil
}
