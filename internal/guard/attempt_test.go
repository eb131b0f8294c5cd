package guard

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// rush starts n attempts from ip at once, as n sessions that sent AUTH
// together would: each takes its place (or not), and those with a place
// check the password only once every one of them has asked, so all of them
// are in flight together. check is the password check: it says whether the
// password was right. rush returns how many checks ran and how many of the
// failed ones reported the key blocked.
func rush(g *Guard, ip netip.Addr, n int, check func(i int) bool) (checked, blocked int) {
	var begun, done sync.WaitGroup
	var nChecked, nBlocked atomic.Int64
	begun.Add(n)
	for i := range n {
		done.Go(func() {
			a, ok := g.Begin(ip, fmt.Sprintf("rush%03d", i))
			begun.Done()
			if !ok {
				return
			}
			defer a.Succeed()
			begun.Wait()
			nChecked.Add(1)
			if !check(i) && a.Fail() {
				nBlocked.Add(1)
			}
		})
	}
	done.Wait()
	return int(nChecked.Load()), int(nBlocked.Load())
}

func wrong(int) bool { return false }

// places reports how many attempts from ip get a place right now, giving
// every place back afterwards.
func places(g *Guard, ip netip.Addr) int {
	var held []*Attempt
	for {
		a, ok := g.Begin(ip, "probe")
		if !ok {
			break
		}
		held = append(held, a)
		if len(held) > 1000 {
			break
		}
	}
	for _, a := range held {
		a.Succeed()
	}
	return len(held)
}

// TestRaceOfAttempts is the attack of the issue: sessions from one IP send a
// wrong AUTH all at once, and the right password comes just after. However
// many run at once, only MaxFailures passwords are checked; the rest are
// refused before the check, the key is blocked, and the right password is
// refused too, unchecked (SPEC R11: the limit holds however many attempts
// run at once).
func TestRaceOfAttempts(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		ip := addr("112.67.35.229")
		checked, blocked := rush(g, ip, 19, wrong)
		if checked != DefaultMaxFailures {
			t.Fatalf("%d of 19 wrong passwords were checked, want %d", checked, DefaultMaxFailures)
		}
		if blocked == 0 || !g.Blocked(ip) {
			t.Fatalf("not blocked after %d failed checks (%d reported it)", checked, blocked)
		}
		clk.Advance(50 * time.Millisecond)
		if a, ok := g.Begin(ip, "right"); ok || a != nil {
			t.Fatal("the attempt after the rush got a place: its password would be checked")
		}
		s := g.Stats()
		if s.Failures != 10 || s.Blocks != 1 || s.AtLimit != 9 || s.InFlight != 0 {
			t.Fatalf("stats = %+v, want 10 failures, 1 block, 9 refused at the limit, none in flight", s)
		}
		// A larger rush on a fresh key checks no more.
		if checked, _ := rush(g, addr("112.67.35.230"), 200, wrong); checked != DefaultMaxFailures {
			t.Fatalf("%d of 200 wrong passwords were checked, want %d", checked, DefaultMaxFailures)
		}
	})
}

// TestSuccessGivesPlaceBack: a success inside the limit counts nothing and
// gives its place back, so another attempt can take it; a place held by an
// attempt in flight is not free meanwhile.
func TestSuccessGivesPlaceBack(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		ip := addr("192.0.2.8")
		// Nine wrong passwords and one right one, all at once.
		checked, blocked := rush(g, ip, 10, func(i int) bool { return i == 3 })
		if checked != 10 || blocked != 0 || g.Blocked(ip) {
			t.Fatalf("9 failures and a success: %d checked, %d reported blocked, Blocked %v", checked, blocked, g.Blocked(ip))
		}
		a, ok := g.Begin(ip, "tenth")
		if !ok {
			t.Fatal("the place the success gave back cannot be taken")
		}
		if b, ok := g.Begin(ip, "eleventh"); ok || b != nil {
			t.Fatal("an attempt got a place while 9 failures and 1 attempt in flight make the limit")
		}
		if s := g.Stats(); s.InFlight != 1 || s.AtLimit != 1 {
			t.Fatalf("stats = %+v, want 1 in flight, 1 refused at the limit", s)
		}
		a.Succeed()
		if n := places(g, ip); n != 1 {
			t.Fatalf("%d places free after the success, want 1", n)
		}
		a, _ = g.Begin(ip, "tenth-again")
		if !a.Fail() || !g.Blocked(ip) {
			t.Fatal("the tenth failure did not block")
		}
	})
}

// TestSettleOnce: the first settle of an attempt wins; later ones do nothing,
// so a deferred Succeed after Fail neither counts nor frees anything, and a
// session that dies in the middle of its check gives its place back.
func TestSettleOnce(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{MaxFailures: 3}), Config{MaxFailures: 3})
		ip := addr("198.51.100.20")

		a, _ := g.Begin(ip, "s1")
		a.Fail()
		a.Fail()
		a.Succeed()
		if s := g.Stats(); s.Failures != 1 || s.InFlight != 0 {
			t.Fatalf("after Fail, Fail, Succeed: %+v, want 1 failure, nothing in flight", s)
		}
		b, _ := g.Begin(ip, "s2")
		b.Succeed()
		if b.Fail() {
			t.Fatal("Fail after Succeed reported a block")
		}
		if s := g.Stats(); s.Failures != 1 {
			t.Fatalf("Fail after Succeed was counted: %+v", s)
		}

		// The session's goroutine panics while checking; its deferred Succeed
		// gives the place back.
		func() {
			defer func() { _ = recover() }()
			c, ok := g.Begin(ip, "s3")
			if !ok {
				t.Fatal("no place")
			}
			defer c.Succeed()
			panic("check failed hard")
		}()
		if n := places(g, ip); n != 2 {
			t.Fatalf("%d places free, want 2 (3 minus 1 failure)", n)
		}

		// The last Fail that blocks keeps reporting it.
		c, _ := g.Begin(ip, "s4")
		d, _ := g.Begin(ip, "s5")
		if c.Fail() || !d.Fail() || !d.Fail() {
			t.Fatal("the third failure did not report the block, or a repeat forgot it")
		}

		var none *Attempt
		none.Succeed()
		if none.Fail() {
			t.Fatal("a nil Attempt reported a block")
		}
	})
}

// TestPlaceExpires: a place never settled (its holder lost without a trace)
// is given back after AttemptTimeout, so it cannot lock a client out.
func TestPlaceExpires(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{MaxFailures: 4, AttemptTimeout: time.Minute}), Config{MaxFailures: 4, AttemptTimeout: time.Minute})
		ip := addr("203.0.113.70")
		for range 4 {
			if _, ok := g.Begin(ip, "lost"); !ok {
				t.Fatal("no place")
			}
		}
		clk.Advance(time.Minute - time.Nanosecond)
		if n := places(g, ip); n != 0 {
			t.Fatalf("%d places free before the lost ones expired", n)
		}
		clk.Advance(time.Nanosecond)
		if n := places(g, ip); n != 4 {
			t.Fatalf("%d places free after the lost ones expired, want 4", n)
		}
		g.Begin(ip, "lost again")
		clk.Advance(time.Hour)
		if err := g.Prune(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s := g.Stats(); s.InFlight != 0 || len(g.places) != 0 {
			t.Fatalf("after prune %d in flight, %d keys with places", s.InFlight, len(g.places))
		}
	})
}

// TestPlacesPerKey: the places of one key do not take those of another; an
// IPv6 client shares its /64's places (SPEC R11).
func TestPlacesPerKey(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{MaxFailures: 3}), Config{MaxFailures: 3})
		full := []string{"192.0.2.1", "2001:db8:1:2::1"}
		for _, s := range full {
			for range 3 {
				if _, ok := g.Begin(addr(s), "hold"); !ok {
					t.Fatalf("%s: no place", s)
				}
			}
		}
		for _, tc := range []struct {
			ip   string
			want int
		}{
			{"192.0.2.1", 0},
			{"192.0.2.2", 3},
			{"2001:db8:1:2::ffff", 0},
			{"2001:db8:1:3::1", 3},
		} {
			if n := places(g, addr(tc.ip)); n != tc.want {
				t.Errorf("%s: %d places free, want %d", tc.ip, n, tc.want)
			}
		}
	})
}

// TestBeginExempt: an exempt client always gets a place and is never
// blocked, however many attempts it makes at once (SPEC R11a).
func TestBeginExempt(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{Exempt: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}), Config{Exempt: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}})
		ip := addr("10.1.2.3")
		if checked, blocked := rush(g, ip, 50, wrong); checked != 50 || blocked != 0 {
			t.Fatalf("exempt client: %d of 50 checked, %d reported blocked", checked, blocked)
		}
		if checked, _ := rush(g, ip, 50, wrong); checked != 50 || g.Blocked(ip) {
			t.Fatalf("exempt client after 50 failures: %d of 50 checked, Blocked %v", checked, g.Blocked(ip))
		}
		if s := g.Stats(); s.ExemptFailures != 100 || s.Failures != 0 || s.InFlight != 0 {
			t.Fatalf("stats = %+v, want 100 exempt failures, none counted", s)
		}
		// A client without an address (nothing to key it by) is not counted.
		a, ok := g.Begin(netip.Addr{}, "noaddr")
		if !ok || a.Fail() || g.Stats().Failures != 0 {
			t.Fatal("a client without an address was refused or counted")
		}
	})
}

// TestSlidingWindow: the window rolls with each failure (SPEC R11: a rolling
// hour), so failures leave it one by one, and ten failures spread across
// the turn of an hour still block: a fixed window starting on the hour would
// let 9 before it and 10 after it through, 19 in two minutes.
func TestSlidingWindow(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := testutil.NewClock(time.Date(2025, 3, 14, 9, 59, 0, 0, time.UTC))
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		ip := addr("198.51.100.50")
		if checked, _ := rush(g, ip, 9, wrong); checked != 9 {
			t.Fatalf("%d of 9 checked", checked)
		}
		clk.Advance(2 * time.Minute) // 10:01
		checked, blocked := rush(g, ip, 10, wrong)
		if checked != 1 || blocked != 1 || !g.Blocked(ip) {
			t.Fatalf("across the hour: %d more checked (want 1), %d reported blocked (want 1)", checked, blocked)
		}

		// Nine failures a minute apart leave the window one by one.
		other := addr("198.51.100.51")
		for i := range 9 {
			if i > 0 {
				clk.Advance(time.Minute)
			}
			rush(g, other, 1, wrong)
		}
		start := clk.Now().Add(-8 * time.Minute)
		for i := range 9 {
			// Failure i (from 0) leaves the window exactly one hour after it
			// was made, and frees one place more.
			left := start.Add(time.Duration(i)*time.Minute + time.Hour)
			clk.Set(left.Add(-time.Nanosecond))
			if n := places(g, other); n != i+1 {
				t.Fatalf("just before failure %d leaves the window: %d places, want %d", i, n, i+1)
			}
			clk.Set(left)
			if n := places(g, other); n != i+2 {
				t.Fatalf("when failure %d leaves the window: %d places, want %d", i, n, i+2)
			}
		}
	})
}

// TestAttemptsRestart: failures and blocks counted through attempts survive
// a restart on the same store (SPEC R11a); places in flight do not, since
// the restart ended the sessions holding them.
func TestAttemptsRestart(t *testing.T) {
	eachBackend(t, durableBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		blocked, counted := addr("192.0.2.10"), addr("2001:db8:9::1")
		rush(g, blocked, 30, wrong)
		rush(g, counted, 6, wrong)
		for range 4 {
			g.Begin(counted, "in flight at the crash")
		}
		if n := places(g, counted); n != 0 {
			t.Fatalf("%d places free before the restart, want 0", n)
		}

		clk.Advance(10 * time.Minute)
		g2 := newGuard(t, clk, be.open(t, Config{}), Config{})
		if _, ok := g2.Begin(blocked, "after"); ok || !g2.Blocked(blocked) {
			t.Fatal("the block was lost in the restart")
		}
		if n := places(g2, counted); n != 4 {
			t.Fatalf("%d places free after the restart, want 4 (10 minus 6 failures)", n)
		}
	})
}

// TestUnblockFreesPlaces: lifting a key, in this process or with the CLI on
// a running server, frees its places too, so the client can try again at
// once (SPEC R11a).
func TestUnblockFreesPlaces(t *testing.T) {
	eachBackend(t, durableBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{PollInterval: fastPoll})
		follow(t, g)
		ctx := context.Background()

		busy := addr("192.0.2.30")
		var stuck []*Attempt
		for range 10 {
			a, _ := g.Begin(busy, "stuck")
			stuck = append(stuck, a)
		}
		if _, err := g.Unblock(ctx, netip.MustParsePrefix("192.0.2.30/32")); err != nil {
			t.Fatal(err)
		}
		if n := places(g, busy); n != 10 {
			t.Fatalf("%d places free after unblock, want 10", n)
		}
		// The attempts that were in flight still count when they fail.
		for _, a := range stuck[:3] {
			a.Fail()
		}
		if n := places(g, busy); n != 7 {
			t.Fatalf("%d places free after 3 late failures, want 7", n)
		}

		blocked := addr("192.0.2.31")
		rush(g, blocked, 20, wrong)
		g.Begin(blocked, "refused")
		if _, err := be.open(t, Config{}).Unblock(ctx, "cli", netip.MustParsePrefix("192.0.2.31/32"), clk.Now()); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "the CLI unblock to reach the guard", func() bool { return !g.Blocked(blocked) })
		if n := places(g, blocked); n != 10 {
			t.Fatalf("%d places free after the CLI unblock, want 10", n)
		}
	})
}

// TestBlockedAllocFree: the check every connection and every read makes
// allocates nothing, blocked or not.
func TestBlockedAllocFree(t *testing.T) {
	clk := newFakeClock()
	g := newGuard(t, clk, nil, Config{})
	blocked := addr("2001:db8::7")
	rush(g, blocked, 10, wrong)
	g.Begin(addr("192.0.2.1"), "in flight")
	for _, ip := range []netip.Addr{blocked, addr("192.0.2.1"), addr("192.0.2.2")} {
		if n := testing.AllocsPerRun(100, func() { g.Blocked(ip) }); n != 0 {
			t.Errorf("Blocked(%s) allocates %.1f times", ip, n)
		}
	}
}

// BenchmarkAttempt measures an AUTH attempt's guard steps: Begin and Fail
// (each on a key of its own, memory only and with the SQLite write), and
// Begin and Succeed on one key, also from many sessions at once.
func BenchmarkAttempt(b *testing.B) {
	clk := newFakeClock()
	for _, store := range allBackends {
		be := backendOf(b, store)
		// One AUTH failure: a place taken and the failure recorded, each a
		// round trip with Redis, a commit with SQLite.
		b.Run("fail/"+store, func(b *testing.B) {
			g := newGuard(b, clk, be.open(b, Config{}), Config{})
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				a, ok := g.Begin(v6Client(i), "sessionidsessionid0000")
				if !ok {
					b.Fatal("no place")
				}
				a.Fail()
			}
		})
		// One connection from a blocked client: the check at connect and
		// the AUTH refused without a place, neither waiting on the store.
		b.Run("refuse/"+store, func(b *testing.B) {
			g := newGuard(b, clk, be.open(b, Config{MaxFailures: 1}), Config{MaxFailures: 1})
			ip := addr("198.51.100.200")
			g.Failure(ip, "sessionidsessionid0000")
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if !g.Blocked(ip) {
					b.Fatal("not blocked")
				}
				if _, ok := g.Begin(ip, "sessionidsessionid0000"); ok {
					b.Fatal("a blocked client got a place")
				}
			}
		})
	}
	b.Run("succeed", func(b *testing.B) {
		g := newGuard(b, clk, nil, Config{})
		ip := addr("192.0.2.1")
		b.ReportAllocs()
		for range b.N {
			a, ok := g.Begin(ip, "sessionidsessionid0000")
			if !ok {
				b.Fatal("no place")
			}
			a.Succeed()
		}
	})
	b.Run("succeed-parallel", func(b *testing.B) {
		g := newGuard(b, clk, nil, Config{MaxFailures: 1 << 20})
		ip := addr("192.0.2.1")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				a, ok := g.Begin(ip, "sessionidsessionid0000")
				if !ok {
					b.Fatal("no place")
				}
				a.Succeed()
			}
		})
	})
}

// TestClean: a key is clean until it fails, and again once its failures
// have left the window.
func TestClean(t *testing.T) {
	clk := testutil.NewClock(time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC))
	g := newGuard(t, clk, nil, Config{})
	ip := netip.MustParseAddr("192.0.2.7")
	if !g.Clean(g.Key(ip)) {
		t.Fatal("a new key is not clean")
	}
	g.Failure(ip, "s1")
	if g.Clean(g.Key(ip)) {
		t.Fatal("a key with a failure is clean")
	}
	clk.Advance(61 * time.Minute)
	if !g.Clean(g.Key(ip)) {
		t.Fatal("a key whose failure left the window is not clean")
	}
}

// TestOpen: Open, asked for a password answered from the credential cache,
// takes no place and says yes while the key is below its limit, and no once
// the failures in the window and the attempts in flight make the limit or
// the key is blocked, as Begin would (SPEC R11); an exempt client is always
// let in.
func TestOpen(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		cfg := Config{Exempt: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
		g := newGuard(t, clk, be.open(t, cfg), cfg)
		ip := addr("198.51.100.4")
		var held []*Attempt
		for i := range DefaultMaxFailures - 1 {
			a, ok := g.Begin(ip, fmt.Sprintf("held%d", i))
			if !ok {
				t.Fatalf("attempt %d got no place", i)
			}
			held = append(held, a)
		}
		for range 2 {
			if !g.Open(ip) {
				t.Fatal("not open with one place left")
			}
		}
		if s := g.Stats(); s.InFlight != DefaultMaxFailures-1 || s.AtLimit != 0 {
			t.Fatalf("stats = %+v after Open: it took a place or was refused", s)
		}
		last, ok := g.Begin(ip, "last")
		if !ok {
			t.Fatal("Open took the last place")
		}
		if g.Open(ip) {
			t.Fatal("open while the attempts in flight make the limit")
		}
		if s := g.Stats(); s.AtLimit != 1 {
			t.Fatalf("stats = %+v, want 1 refused at the limit", s)
		}
		last.Succeed()
		if !g.Open(ip) {
			t.Fatal("not open after a place was given back")
		}
		for _, a := range held {
			a.Fail()
		}
		// Nine failures and nothing in flight: still below the limit.
		if !g.Open(ip) {
			t.Fatal("not open with nine failures in the window")
		}
		last, _ = g.Begin(ip, "tenth")
		if !last.Fail() || g.Open(ip) {
			t.Fatal("open after the tenth failure blocked the key")
		}
		clk.Advance(DefaultBlockFor)
		if !g.Open(ip) {
			t.Fatal("not open after the block and the window ran out")
		}
		exempt := addr("10.1.2.3")
		rush(g, exempt, 20, wrong)
		if !g.Open(exempt) || !g.Open(netip.Addr{}) {
			t.Fatal("an exempt client or one without an address is not let in")
		}
	})
}
