package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/delivery"
)

// clock is the time source of the load loops; tests substitute a fake one
// to check the latency accounting without sleeping.
type clock interface {
	// now is the current time.
	now() time.Time
	// sleepUntil waits until t or until ctx is done.
	sleepUntil(ctx context.Context, t time.Time)
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

func (realClock) sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

// schedule hands out the send times of an open-loop run: slot i is due at
// start + i/rate, whether or not the server kept up with the slots before.
// Latency is measured from the slot's time, so a server that falls behind
// shows the queueing delay its clients would see (the load generator does
// not slow down to match the server).
type schedule struct {
	// start is when slot 0 is due.
	start time.Time
	// interval is the time between slots, 1/rate.
	interval time.Duration
	// end: no slot is due at or after it (zero: no end).
	end time.Time
	// limit is the number of slots (0: no limit).
	limit int64
	// next is the next slot to hand out.
	next atomic.Int64
}

// take returns the due time of the next slot, false when there is none.
func (s *schedule) take() (time.Time, bool) {
	i := s.next.Add(1) - 1
	if s.limit > 0 && i >= s.limit {
		return time.Time{}, false
	}
	at := s.start.Add(time.Duration(i) * s.interval)
	if !s.end.IsZero() && !at.Before(s.end) {
		return time.Time{}, false
	}
	return at, true
}

// closedLoop hands out work to closed-loop workers, each starting its next
// message as soon as the last one is answered, until the end or the limit.
type closedLoop struct {
	// end is when no new message is started.
	end time.Time
	// limit is the number of messages (0: no limit).
	limit int64
	// next counts messages handed out.
	next atomic.Int64
}

// take says whether another message may start at now.
func (l *closedLoop) take(now time.Time) bool {
	if l.limit > 0 && l.next.Add(1) > l.limit {
		return false
	}
	return now.Before(l.end)
}

// ticket is how a worker learns when its next message starts: open-loop
// from the schedule (sleeping until the slot), closed-loop at once.
type ticket func(ctx context.Context) (start time.Time, ok bool)

// openTickets issues tickets from a schedule.
func openTickets(s *schedule, clk clock) ticket {
	return func(ctx context.Context) (time.Time, bool) {
		at, ok := s.take()
		if !ok || ctx.Err() != nil {
			return time.Time{}, false
		}
		clk.sleepUntil(ctx, at)
		return at, ctx.Err() == nil
	}
}

// closedTickets issues tickets from a closedLoop.
func closedTickets(l *closedLoop, clk clock) ticket {
	return func(ctx context.Context) (time.Time, bool) {
		now := clk.now()
		return now, ctx.Err() == nil && l.take(now)
	}
}

// sources maps a connection number to the source address it dials from:
// n consecutive addresses from base, so the server sees n clients. All of
// 127.0.0.0/8 is local on Linux, so no setup is needed on loopback.
type sources struct {
	// base is the first address.
	base netip.Addr
	// n is how many there are (at least 1).
	n int
}

// at returns the source address for connection i.
func (s sources) at(i int) net.IP {
	a := s.base
	for k := 0; k < i%max(s.n, 1); k++ {
		a = a.Next()
	}
	return net.IP(a.AsSlice())
}

// accounts names the benchmark accounts: format with %d replaced by 0…n-1.
type accounts struct {
	// format is the login with one %d, "bench%d@bench.test".
	format string
	// n is how many there are.
	n int
	// password is every account's password.
	password string
}

// login is account i (modulo n).
func (a accounts) login(i int) string {
	if !strings.Contains(a.format, "%d") {
		return a.format
	}
	return fmt.Sprintf(a.format, i%max(a.n, 1))
}

// sendConfig is what the send workload needs.
type sendConfig struct {
	// dial reaches the server.
	dial *dialConfig
	// conns is the number of concurrent connections.
	conns int
	// perConn is messages per connection; 1 opens a new connection (and
	// logs in again) for every message, 0 keeps it for the whole run.
	perConn int
	// size is the message size in bytes.
	size int
	// to is the recipient.
	to string
	// accts are the accounts logged in with, in turn.
	accts accounts
	// src are the source addresses used, in turn.
	src sources
}

// sendLoad is the state of a send run.
type sendLoad struct {
	// cfg is the workload.
	cfg *sendConfig
	// clk is the time source.
	clk clock
	// msgs records each message: its latency or its failure.
	msgs *recorder
	// setup records the time to connect, set up TLS and log in.
	setup *recorder
	// bytes counts the bytes of accepted messages.
	bytes atomic.Int64
	// connNo numbers connections, choosing source address and account.
	connNo atomic.Int64
}

// run starts cfg.conns workers and waits for them. When connections are
// kept for the whole run (perConn 0) they are all opened and logged in
// first, so that the figures are those of the steady state rather than of
// the logins; begin is called after that and returns the workers' tickets.
func (l *sendLoad) run(ctx context.Context, begin func() ticket) {
	first := make([]*session, l.cfg.conns)
	if l.cfg.perConn == 0 {
		var wg sync.WaitGroup
		for i := range first {
			wg.Add(1)
			go func() {
				defer wg.Done()
				first[i] = l.open(ctx)
			}()
		}
		wg.Wait()
	}
	next := begin()
	var wg sync.WaitGroup
	for _, s := range first {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, next, s)
		}()
	}
	wg.Wait()
}

// session is a logged-in connection and the message it sends.
type session struct {
	// c is the connection.
	c *client
	// from is the account logged in, the sender.
	from string
	// body is the message, From: the account.
	body []byte
}

// open connects and logs in with the next source address and account,
// recording the setup time or failure; nil when it failed.
func (l *sendLoad) open(ctx context.Context) *session {
	i := int(l.connNo.Add(1) - 1)
	from := l.cfg.accts.login(i)
	t0 := l.clk.now()
	c, err := l.login(ctx, l.cfg.src.at(i), from)
	if err != nil {
		l.setup.fail(err)
		return nil
	}
	l.setup.ok(l.clk.now().Sub(t0))
	return &session{c: c, from: from, body: buildMessage(from, l.cfg.to, l.cfg.size)}
}

// worker sends messages on one connection at a time, starting with s if it
// is not nil. A message's latency runs from its ticket (its scheduled time
// in an open loop) to the 250 after the data, and includes connecting and
// logging in when the message needed a new connection.
func (l *sendLoad) worker(ctx context.Context, next ticket, s *session) {
	sent := 0
	defer func() {
		if s != nil {
			s.c.quit()
		}
	}()
	for {
		start, ok := next(ctx)
		if !ok {
			return
		}
		if s == nil {
			if s = l.open(ctx); s == nil {
				l.msgs.fail(errSetup)
				// A refused connection fails fast; a pause keeps a
				// closed loop from spinning on it.
				realClock{}.sleepUntil(ctx, time.Now().Add(10*time.Millisecond))
				continue
			}
			sent = 0
		}
		err := s.c.send(s.from, l.cfg.to, s.body)
		if err != nil {
			l.msgs.fail(err)
			var re *replyError
			if !errors.As(err, &re) || re.rep.Code == 421 {
				s.c.close()
				s = nil
				continue
			}
		} else {
			l.msgs.ok(l.clk.now().Sub(start))
			l.bytes.Add(int64(len(s.body)))
		}
		sent++
		if l.cfg.perConn > 0 && sent >= l.cfg.perConn {
			s.c.quit()
			s = nil
		}
	}
}

// errSetup counts a message that was not sent because its connection could
// not be set up; the setup errors say why.
var errSetup = errors.New("no connection")

// login opens a session and authenticates.
func (l *sendLoad) login(ctx context.Context, src net.IP, user string) (*client, error) {
	c, err := connect(ctx, l.cfg.dial, src, true)
	if err != nil {
		return nil, err
	}
	rep, err := c.authPlain(user, l.cfg.accts.password)
	if err == nil {
		err = expect("AUTH", rep, 235)
	}
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// idleResult is what the idle workload measured.
type idleResult struct {
	// half is how many sessions were open at the first measurement, open
	// at the second.
	half, open int
	// setup is their setup times and failures.
	setup *recorder
}

// idleSettle is the pause between the last login and a measurement of
// idle sessions: the server's memory settles once the handshakes are over.
var idleSettle = 3 * time.Second

// runIdle opens n logged-in sessions in two halves, at most parallel being
// set up at once, calls measure(0) when the first half is open and
// measure(1) when all are, holds them until hold has passed, and closes
// them. The memory the second half adds is the memory of idle sessions:
// what logging in costs for a moment (argon2id: 19 MiB per hash) and the
// runtime keeps for a while has been reached by then, and few logins at a
// time keep that moment small.
func runIdle(ctx context.Context, cfg *sendConfig, n, parallel int, hold time.Duration, measure func(int)) idleResult {
	l := &sendLoad{cfg: cfg, clk: realClock{}, msgs: newRecorder(), setup: newRecorder()}
	end := time.Now().Add(hold)
	var mu sync.Mutex
	var open []*client
	sem := make(chan struct{}, max(parallel, 1))
	res := idleResult{setup: l.setup}
	for part, upTo := range []int{n / 2, n} {
		var wg sync.WaitGroup
		for i := len(open); i < upTo; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				t0 := time.Now()
				c, err := l.login(ctx, cfg.src.at(i), cfg.accts.login(i))
				if err != nil {
					l.setup.fail(err)
					return
				}
				l.setup.ok(time.Since(t0))
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
			}()
		}
		wg.Wait()
		realClock{}.sleepUntil(ctx, time.Now().Add(idleSettle))
		measure(part)
		if part == 0 {
			res.half = len(open)
		}
	}
	res.open = len(open)
	realClock{}.sleepUntil(ctx, end)
	for _, c := range open {
		c.quit()
	}
	return res
}

// floodConfig is the wrong-password flood.
type floodConfig struct {
	// send supplies the server, the flooded accounts, connection count and
	// sources.
	send *sendConfig
	// probeEvery is the time between the starts of legitimate logins
	// (0: none).
	probeEvery time.Duration
	// probeAccts are the accounts of the cached and uncached legitimate
	// logins, none of them flooded: a login guessed from many addresses
	// is refused from new networks (SPEC R21), which is not what those
	// probes measure.
	probeAccts accounts
	// probeSrc is the first of probeSources addresses legitimate logins
	// come from, in turn; the flooded login's owner logged in from there
	// before the flood.
	probeSrc netip.Addr
	// ownerNewSrc is the first address from which the flooded login's
	// owner tries a network it never logged in from; each try comes from
	// the next network (newNetwork), since a success would make its
	// network one the login logged in from.
	ownerNewSrc netip.Addr
	// wrongCode is the reply code of a wrong password (RFC 4954 §6: 535;
	// some servers answer otherwise).
	wrongCode int
}

// probeSources is how many addresses legitimate logins during a flood come
// from: they start on schedule whether or not the ones before have been
// answered, and a slow server must not turn them into a connection flood
// from one address (max_connections_per_ip).
const probeSources = 16

// floodResult is what the flood measured.
type floodResult struct {
	// attempts records each AUTH: the wrong password's reply is the
	// expected outcome, any other reply or failure is counted by its key.
	attempts *recorder
	// cached records legitimate logins of one account logged in before.
	cached *recorder
	// uncached records legitimate logins of accounts not logged in before
	// in this run.
	uncached *recorder
	// ownerTrusted and ownerNew record the right password of the first
	// flooded login, from the network it logged in from before the flood
	// and from a network it never logged in from.
	ownerTrusted, ownerNew *recorder
}

// runFlood sends wrong passwords on cfg.send.conns connections until end,
// each connection from the next source address, and meanwhile starts a
// login with the right password every probeEvery, as users do whether or
// not the server is slow. The logins take turns: one account not flooded
// used over and over (cached), accounts not flooded and not yet used
// (uncached), and the first flooded account from the network it logged in
// from before and from a new one (what its owner sees).
//
// The flood lasts d from the call of begin, which comes after a first login
// of the cached account and of the flooded owner's.
func runFlood(ctx context.Context, cfg *floodConfig, d time.Duration, begin func()) floodResult {
	res := floodResult{attempts: newRecorder(), cached: newRecorder(), uncached: newRecorder(),
		ownerTrusted: newRecorder(), ownerNew: newRecorder()}
	sc := cfg.send
	l := &sendLoad{cfg: sc, clk: realClock{}, msgs: newRecorder(), setup: newRecorder()}
	// A login under way when the flood ends runs to its end (or its
	// timeout): cutting it off would count it as a failure it may not be.
	pctx := ctx
	probeAddr := sources{base: cfg.probeSrc, n: probeSources}
	probe := func(rec *recorder, user, pass string, src net.IP) {
		c, err := connect(pctx, sc.dial, src, true)
		if err != nil {
			rec.fail(err)
			return
		}
		defer c.quit()
		t0 := time.Now()
		rep, err := c.authPlain(user, pass)
		if err == nil {
			err = expect("AUTH", rep, 235)
		}
		if err != nil {
			rec.fail(err)
			return
		}
		rec.ok(time.Since(t0))
	}
	pa := cfg.probeAccts
	owner := sc.accts.login(0)
	if cfg.probeEvery > 0 {
		// One login before the flood, not counted, puts the cached
		// account in any cache the server has, and one makes the probes'
		// network one the owner of the first flooded login logged in from.
		probe(newRecorder(), pa.login(0), pa.password, probeAddr.at(0))
		probe(newRecorder(), owner, sc.accts.password, probeAddr.at(0))
	}
	begin()
	end := time.Now().Add(d)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	if cfg.probeEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for k := 0; ; k++ {
				next = next.Add(cfg.probeEvery)
				realClock{}.sleepUntil(ctx, next)
				if over(ctx, end) {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					switch k % 4 {
					case 0:
						probe(res.cached, pa.login(0), pa.password, probeAddr.at(k))
					case 1:
						probe(res.uncached, pa.login(1+(k/4)%max(pa.n-1, 1)), pa.password, probeAddr.at(k))
					case 2:
						probe(res.ownerTrusted, owner, sc.accts.password, probeAddr.at(k))
					default:
						probe(res.ownerNew, owner, sc.accts.password, newNetwork(cfg.ownerNewSrc, k/4))
					}
				}()
			}
		}()
	}
	for range sc.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !over(ctx, end) {
				i := int(l.connNo.Add(1) - 1)
				c, err := connect(ctx, sc.dial, sc.src.at(i), true)
				if err != nil {
					if !over(ctx, end) {
						res.attempts.fail(err)
					}
					continue
				}
				for !over(ctx, end) {
					t0 := time.Now()
					rep, err := c.authPlain(sc.accts.login(i), "wrong-"+sc.accts.password)
					if err == nil && rep.Code == cfg.wrongCode {
						res.attempts.ok(time.Since(t0))
						continue
					}
					if !over(ctx, end) {
						if err == nil {
							err = &replyError{"AUTH", rep}
						}
						res.attempts.fail(err)
					}
					break
				}
				c.close()
			}
		}()
	}
	wg.Wait()
	return res
}

// newNetwork is the address of base in the i-th network after base's: for
// IPv4 the i-th /24 (SPEC R21 trusts a network of an earlier success, a
// /24 by default), for IPv6 the i-th /48.
func newNetwork(base netip.Addr, i int) net.IP {
	if base.Is4() {
		b := base.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v += uint32(i) << 8
		return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	b := base.As16()
	n := uint64(b[4])<<8 | uint64(b[5]) + uint64(i)
	b[4], b[5] = byte(n>>8), byte(n)
	return net.IP(b[:])
}

// over reports whether a timed load is over. It looks at the clock as well
// as at ctx: the dialer fails at the deadline on its own, a moment before
// the context says it is done, and a loop waiting for the context alone
// would count a burst of spurious timeouts.
func over(ctx context.Context, end time.Time) bool {
	return ctx.Err() != nil || !time.Now().Before(end)
}

// preblock makes the server block src by failing logins from it until a
// new connection is refused at the greeting, at most tries attempts. It
// returns the refusal.
func preblock(ctx context.Context, dial *dialConfig, src net.IP, user, pass string, tries int) (delivery.Reply, error) {
	for n := 0; n < tries; {
		c, err := connect(ctx, dial, src, true)
		var re *replyError
		if errors.As(err, &re) && re.step == "greeting" {
			return re.rep, nil
		}
		if err != nil {
			return delivery.Reply{}, fmt.Errorf("blocking %s: %w", src, err)
		}
		for ; n < tries; n++ {
			rep, err := c.authPlain(user, "wrong-"+pass)
			if err != nil || rep.Code != 535 {
				break
			}
		}
		c.close()
	}
	return delivery.Reply{}, fmt.Errorf("%s not refused after %d failed logins", src, tries)
}

// runRefused connects from the blocked src on conns connections at once
// until end, reading only the greeting (after the TLS handshake on an
// implicit-TLS port). A refusal (a greeting other than 220) is the success
// counted; a 220 is an error. The client resets the connection instead of
// closing it gracefully, so that the run does not exhaust local ports in
// TIME_WAIT.
func runRefused(ctx context.Context, dial *dialConfig, src net.IP, conns int, end time.Time) *recorder {
	rec := newRecorder()
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	d := *dial
	d.abortiveClose = true
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !over(ctx, end) {
				t0 := time.Now()
				c, err := connect(ctx, &d, src, false)
				var re *replyError
				switch {
				case errors.As(err, &re) && re.step == "greeting":
					rec.ok(time.Since(t0))
				case err != nil:
					if !over(ctx, end) {
						rec.fail(err)
					}
				default:
					rec.fail(&replyError{"greeting (not refused)", delivery.Reply{Code: 220}})
					c.close()
				}
			}
		}()
	}
	wg.Wait()
	return rec
}
