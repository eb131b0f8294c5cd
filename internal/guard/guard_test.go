package guard

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// newFakeClock returns a clock the test moves by hand.
func newFakeClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC))
}

// openStore opens the guard tables in a fresh database, or in the one in
// dataDir when it is given.
func openStore(t testing.TB, dataDir string) *SQLite {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	st, err := NewSQLite(context.Background(), testutil.OpenDBIn(t, dataDir))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// newGuard makes a guard with the default policy on clk and st (nil: memory
// only), with cfg's non-zero fields applied.
func newGuard(t testing.TB, clk *testutil.Clock, st Store, cfg Config) *Guard {
	t.Helper()
	cfg.Now = clk.Now
	g, err := New(context.Background(), cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// sidSeq numbers the session ids fail makes up.
var sidSeq atomic.Int64

// fail records n failures from ip, one second apart, each in a session of
// its own, and returns what the last one reported.
func fail(g *Guard, clk *testutil.Clock, ip netip.Addr, n int) bool {
	var blocked bool
	for i := range n {
		if i > 0 {
			clk.Advance(time.Second)
		}
		blocked = g.Failure(ip, fmt.Sprintf("sid%06d", sidSeq.Add(1)))
	}
	return blocked
}

// TestBlockAtLimit: nine failures leave the client alone (a success in
// between changes nothing, since it is not reported); the tenth blocks, and
// the block ends exactly BlockFor after the tenth failure (SPEC R11, R11a).
func TestBlockAtLimit(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		ip := addr("112.67.35.229")
		if fail(g, clk, ip, 9) {
			t.Fatal("blocked after 9 failures")
		}
		if g.Blocked(ip) {
			t.Fatal("Blocked after 9 failures")
		}
		clk.Advance(time.Minute)
		if !g.Failure(ip, "tenth") {
			t.Fatal("10th failure did not block")
		}
		if !g.Blocked(ip) {
			t.Fatal("not Blocked after the 10th failure")
		}
		if g.Blocked(addr("112.67.35.230")) {
			t.Fatal("a neighbouring IPv4 address is blocked too")
		}
		clk.Advance(DefaultBlockFor - time.Nanosecond)
		if !g.Blocked(ip) {
			t.Fatal("block lifted before one hour")
		}
		clk.Advance(time.Nanosecond)
		if g.Blocked(ip) {
			t.Fatal("block still in force one hour after it was made")
		}
		s := g.Stats()
		if s.Failures != 10 || s.Blocks != 1 || s.Refusals != 2 || s.BlockedKeys != 0 {
			t.Errorf("stats = %+v, want 10 failures, 1 block, 2 refusals, 0 blocked now", s)
		}
	})
}

// TestFailuresWhileBlocked: a failure from a session that was already in
// AUTH when the block came reports the client blocked, without a new block;
// the key's log keeps only the newest MaxFailures failures.
func TestFailuresWhileBlocked(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		ip := addr("192.0.2.1")
		fail(g, clk, ip, 10)
		first := g.List()[0]
		clk.Advance(time.Minute)
		if !g.Failure(ip, "late") {
			t.Fatal("failure of a blocked client reported not blocked")
		}
		e := g.List()[0]
		if !e.Until.Equal(first.Until) || e.Failures != 10 || g.Stats().Blocks != 1 || g.Stats().Failures != 11 {
			t.Fatalf("entry after late failure = %+v (was %+v), stats = %+v; want the same block, 10 failures listed, 11 counted", e, first, g.Stats())
		}
	})
}

// TestWindow: failures older than the window do not count (SPEC R11).
func TestWindow(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		a, b := addr("198.51.100.1"), addr("198.51.100.2")
		// Nine failures each, 59 minutes ago and one hour ago.
		g.Failure(a, "a-old")
		clk.Advance(time.Minute)
		g.Failure(b, "b-old")
		fail(g, clk, a, 8)
		fail(g, clk, b, 8)
		// Now exactly one hour after a's first failure: it has left the window.
		clk.Advance(time.Hour - time.Minute - 14*time.Second)
		if g.Failure(a, "a-new") {
			t.Fatal("a failure exactly one window old was counted")
		}
		// b's first failure is 59 minutes old.
		if !g.Failure(b, "b-new") {
			t.Fatal("ten failures within the hour did not block")
		}
		if g.Blocked(a) || !g.Blocked(b) {
			t.Fatalf("blocked: a=%v b=%v, want a=false b=true", g.Blocked(a), g.Blocked(b))
		}
		// Long after, a has only its recent failures.
		clk.Advance(2 * time.Hour)
		if fail(g, clk, a, 9) {
			t.Fatal("failures from hours ago still counted")
		}
	})
}

// TestKeys: IPv6 clients are counted by /64, IPv4 by address, and
// IPv4-mapped IPv6 addresses as the IPv4 address (SPEC R11, decided).
func TestKeys(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{}), Config{})
		same1, same2 := addr("2001:db8:1:2::1"), addr("2001:db8:1:2:ffff:ffff:ffff:fffe")
		other := addr("2001:db8:1:3::1")
		fail(g, clk, same1, 5)
		fail(g, clk, other, 5)
		if fail(g, clk, same2, 4) {
			t.Fatal("blocked after 9 failures in one /64")
		}
		if !g.Failure(same2, "tenth") {
			t.Fatal("10 failures from two addresses of one /64 did not block")
		}
		if !g.Blocked(same1) || !g.Blocked(same2) || !g.Blocked(addr("2001:db8:1:2:1234::5")) {
			t.Fatal("the /64 is not blocked for all its addresses")
		}
		if g.Blocked(other) {
			t.Fatal("an address in another /64 is blocked")
		}
		if got := FormatKey(g.Key(same2)); got != "2001:db8:1:2::/64" {
			t.Errorf("key = %s, want 2001:db8:1:2::/64", got)
		}

		v4, mapped := addr("203.0.113.9"), addr("::ffff:203.0.113.9")
		fail(g, clk, v4, 5)
		if !fail(g, clk, mapped, 5) {
			t.Fatal("IPv4-mapped IPv6 failures not counted with the IPv4 address")
		}
		if !g.Blocked(v4) || !g.Blocked(mapped) {
			t.Fatal("IPv4 block does not hold for the mapped form")
		}
		if got := FormatKey(g.Key(mapped)); got != "203.0.113.9" {
			t.Errorf("key of mapped address = %s, want 203.0.113.9", got)
		}
		if g.Failure(netip.Addr{}, "none") || g.Blocked(netip.Addr{}) {
			t.Error("the zero address is counted")
		}
	})
}

// TestPrefixLengths: the prefix lengths are configuration.
func TestPrefixLengths(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{IPv4Prefix: 24, IPv6Prefix: 128, MaxFailures: 4}), Config{IPv4Prefix: 24, IPv6Prefix: 128, MaxFailures: 4})
		fail(g, clk, addr("192.0.2.1"), 2)
		if !fail(g, clk, addr("192.0.2.200"), 2) {
			t.Fatal("two addresses of one /24 do not share a count with ipv4_prefix = 24")
		}
		if g.Blocked(addr("192.0.3.1")) {
			t.Fatal("another /24 is blocked")
		}
		fail(g, clk, addr("2001:db8::1"), 2)
		if fail(g, clk, addr("2001:db8::2"), 2) {
			t.Fatal("two IPv6 addresses share a count with ipv6_prefix = 128")
		}
	})
}

// TestExempt: exempt networks are never blocked, but their failures are
// still noted (SPEC R11a).
func TestExempt(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{Exempt: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8:aaaa::/48")}}), Config{Exempt: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8:aaaa::/48")}})
		for _, ip := range []string{"10.1.2.3", "::ffff:10.1.2.4", "2001:db8:aaaa:1::1"} {
			if fail(g, clk, addr(ip), 25) || g.Blocked(addr(ip)) {
				t.Errorf("exempt %s blocked", ip)
			}
		}
		if !fail(g, clk, addr("10.2.0.1"), 10) {
			t.Error("a non-exempt address was not blocked")
		}
		if s := g.Stats(); s.ExemptFailures != 75 || s.Failures != 10 {
			t.Errorf("stats = %+v, want 75 exempt failures and 10 counted", s)
		}
	})
}

// TestExemptMappedNetwork: an exempt network written in IPv4-mapped IPv6
// form exempts the IPv4 clients in it; clients are compared unmapped.
func TestExemptMappedNetwork(t *testing.T) {
	clk := newFakeClock()
	g := newGuard(t, clk, nil, Config{Exempt: []netip.Prefix{netip.MustParsePrefix("::ffff:192.0.2.0/120")}})
	for _, ip := range []string{"192.0.2.5", "::ffff:192.0.2.6"} {
		if fail(g, clk, addr(ip), 10) || g.Blocked(addr(ip)) {
			t.Errorf("%s in exempt ::ffff:192.0.2.0/120 blocked", ip)
		}
	}
}

// TestUnblock: support lifts a block at once and clears the count, by
// address or by network (SPEC R11a).
func TestUnblock(t *testing.T) {
	eachBackend(t, durableBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		st := be.open(t, Config{})
		g := newGuard(t, clk, st, Config{})
		ip := addr("112.67.35.229")
		fail(g, clk, ip, 10)
		keys, err := g.Unblock(context.Background(), netip.MustParsePrefix("112.67.35.229/32"))
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || FormatKey(keys[0]) != "112.67.35.229" {
			t.Fatalf("unblocked keys = %v", keys)
		}
		if g.Blocked(ip) {
			t.Fatal("still blocked after unblock")
		}
		// The count was cleared: nine more failures do not block.
		if fail(g, clk, ip, 9) {
			t.Fatal("failure count survived the unblock")
		}
		if s := g.Stats(); s.Unblocks != 1 {
			t.Errorf("unblocks = %d, want 1", s.Unblocks)
		}

		// A network lifts every key inside it; one IPv6 address lifts its /64.
		fail(g, clk, addr("198.51.100.7"), 10)
		fail(g, clk, addr("198.51.100.99"), 10)
		fail(g, clk, addr("198.51.101.1"), 10)
		fail(g, clk, addr("2001:db8:5:6::1"), 10)
		if _, err := g.Unblock(context.Background(), netip.MustParsePrefix("198.51.100.0/24")); err != nil {
			t.Fatal(err)
		}
		if g.Blocked(addr("198.51.100.7")) || g.Blocked(addr("198.51.100.99")) || !g.Blocked(addr("198.51.101.1")) {
			t.Fatal("unblocking a /24 did not lift exactly the keys inside it")
		}
		if _, err := g.Unblock(context.Background(), netip.MustParsePrefix("2001:db8:5:6::abcd/128")); err != nil {
			t.Fatal(err)
		}
		if g.Blocked(addr("2001:db8:5:6::1")) {
			t.Fatal("unblocking one address of a /64 did not lift the /64")
		}
		// The store agrees, so a restart does not bring the blocks back.
		g2 := newGuard(t, clk, st, Config{})
		got := []string{}
		for _, e := range g2.List() {
			if e.Blocked {
				got = append(got, FormatKey(e.Key))
			}
		}
		if !slices.Equal(got, []string{"198.51.101.1"}) {
			t.Fatalf("blocked after restart = %v, want [198.51.101.1]", got)
		}
	})
}

// v6Client returns the i-th of a run of IPv6 clients, each in a /64 of its
// own inside 2001:db8::/32, as an attacker rotating prefixes would use.
func v6Client(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
}

// TestUnblockWide: lifting a network that covers many blocked and counting
// keys lifts each of them once, in memory and in the store.
func TestUnblockWide(t *testing.T) {
	eachBackend(t, durableBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		st := be.open(t, Config{MaxFailures: 2})
		g := newGuard(t, clk, st, Config{MaxFailures: 2})
		const n = 300
		for i := range n {
			g.Failure(v6Client(i), "s")
			if i%2 == 0 {
				g.Failure(v6Client(i), "s") // blocks every other key
			}
		}
		g.Failure(addr("2001:db9::1"), "outside")
		keys, err := g.Unblock(context.Background(), netip.MustParsePrefix("2001:db8::/32"))
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != n || !slices.IsSortedFunc(keys, comparePrefix) || len(slices.Compact(slices.Clone(keys))) != n {
			t.Fatalf("Unblock returned %d keys (sorted %v), want %d distinct", len(keys), slices.IsSortedFunc(keys, comparePrefix), n)
		}
		if s := g.Stats(); s.BlockedKeys != 0 || s.TrackedKeys != 1 || s.Unblocks != n/2 {
			t.Fatalf("stats after unblock = %+v, want nothing blocked, 1 key counting, %d unblocks", s, n/2)
		}
		loaded, err := st.Load(context.Background(), time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if len(loaded.Blocks) != 0 || len(loaded.Failures) != 1 {
			t.Fatalf("store after unblock: %d blocks, %d keys with failures; want 0 and 1", len(loaded.Blocks), len(loaded.Failures))
		}
	})
}

// TestKeyCap: an attacker rotating through more addresses than the guard
// keeps keys for (one failure each, never blocked) does not grow memory past
// the cap, and does not make the guard forget a client close to the limit:
// the keys forgotten are those with the fewest failures. After a restart the
// cap holds for the state loaded from the store too.
func TestKeyCap(t *testing.T) {
	eachBackend(t, durableBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		cfg := Config{MaxKeys: 100}
		g := newGuard(t, clk, be.open(t, cfg), cfg)
		guessing := addr("192.0.2.200")
		fail(g, clk, guessing, 9)
		for i := range 1000 {
			if g.Failure(v6Client(i), "rotating") {
				t.Fatalf("client %d blocked after one failure", i)
			}
		}
		if s := g.Stats(); s.TrackedKeys > 100 || s.Evicted != 1000+1-100 {
			t.Fatalf("stats after 1001 keys with a cap of 100: %+v", s)
		}
		if !g.Failure(guessing, "tenth") {
			t.Fatal("the client with nine failures was forgotten in the flood")
		}

		g2 := newGuard(t, clk, be.open(t, cfg), cfg)
		if s := g2.Stats(); s.TrackedKeys > 100 || s.BlockedKeys != 1 {
			t.Fatalf("stats after restart: %+v, want at most 100 keys, 1 blocked", s)
		}
		if !g2.Blocked(guessing) {
			t.Fatal("block lost in restart")
		}
	})
}

// TestConcurrentFailuresStored: failures recorded at the same time from many
// sessions, as a distributed attack makes them, are each on disk when
// Failure returns (they may share a commit): a guard started afterwards on
// the same database counts all of them, and so does the change log.
func TestConcurrentFailuresStored(t *testing.T) {
	clk := newFakeClock()
	dataDir := t.TempDir()
	st := openStore(t, dataDir)
	g := newGuard(t, clk, st, Config{})
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ip := v6Client(i)
			if i%20 == 0 {
				ip = addr("192.0.2.44") // ten failures: a block
			}
			g.Failure(ip, fmt.Sprintf("s%03d", i))
		})
	}
	wg.Wait()
	if s := g.Stats(); s.StoreErrors != 0 {
		t.Fatalf("%d store errors", s.StoreErrors)
	}
	g2 := newGuard(t, clk, openStore(t, dataDir), Config{})
	total := 0
	for _, e := range g2.List() {
		total += e.Failures
	}
	if total != n || !g2.Blocked(addr("192.0.2.44")) {
		t.Fatalf("after restart: %d failures counted (want %d), 192.0.2.44 blocked: %v", total, n, g2.Blocked(addr("192.0.2.44")))
	}
	chs, err := st.Changes(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	failures := 0
	for _, ch := range chs {
		if ch.Kind == ChangeFailure {
			failures++
		}
	}
	if failures != n {
		t.Fatalf("change log holds %d failures, want %d", failures, n)
	}

	// A commit that fails is reported to every failure in it.
	st.db.Close()
	if g.Failure(addr("198.51.100.1"), "late") {
		t.Fatal("blocked after one failure")
	}
	if s := g.Stats(); s.StoreErrors != 1 {
		t.Fatalf("store errors with the database closed = %d, want 1", s.StoreErrors)
	}
}

// TestRestart: blocks and counts survive a restart (SPEC R11a).
func TestRestart(t *testing.T) {
	eachBackend(t, durableBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		st := be.open(t, Config{})
		g := newGuard(t, clk, st, Config{})
		blocked, counted := addr("192.0.2.10"), addr("2001:db8:9::1")
		fail(g, clk, blocked, 10)
		until := clk.Now().Add(time.Hour)
		fail(g, clk, counted, 6)

		clk.Advance(10 * time.Minute)
		g2 := newGuard(t, clk, be.open(t, Config{}), Config{})
		if !g2.Blocked(blocked) {
			t.Fatal("block lost in restart")
		}
		if fail(g2, clk, counted, 3) {
			t.Fatal("blocked after 9 failures across a restart")
		}
		if !g2.Failure(counted, "tenth") {
			t.Fatal("failure count lost in restart")
		}
		es := g2.List()
		if len(es) != 2 || FormatKey(es[0].Key) != "2001:db8:9::/64" || es[0].Failures != 10 || len(es[0].SIDs) != 10 {
			t.Fatalf("entries after restart = %+v", es)
		}
		// The block still ends one hour after it was made.
		clk.Advance(until.Sub(clk.Now()) - time.Nanosecond)
		if !g2.Blocked(blocked) {
			t.Fatal("restored block ended early")
		}
		clk.Advance(time.Nanosecond)
		if g2.Blocked(blocked) {
			t.Fatal("restored block did not end on time")
		}
	})
}

// TestSyncFromOtherProcess: an unblock the CLI writes to the shared store
// reaches a running guard at its next poll, and so do blocks and failures
// another node writes.
func TestSyncFromOtherProcess(t *testing.T) {
	clk := newFakeClock()
	dataDir := t.TempDir()
	g := newGuard(t, clk, openStore(t, dataDir), Config{})
	cli := openStore(t, dataDir)
	ip := addr("112.67.35.229")
	fail(g, clk, ip, 10)
	ctx := context.Background()
	if err := g.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !g.Blocked(ip) {
		t.Fatal("the guard's own changes undid its block")
	}

	keys, err := cli.Unblock(ctx, "cli", netip.MustParsePrefix("112.67.35.229/32"), clk.Now())
	if err != nil || len(keys) != 1 {
		t.Fatalf("CLI unblock = %v, %v", keys, err)
	}
	if !g.Blocked(ip) {
		t.Fatal("unblock took effect before the poll (test is not testing the poll)")
	}
	if err := g.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if g.Blocked(ip) {
		t.Fatal("CLI unblock did not reach the running guard")
	}
	if fail(g, clk, ip, 9) {
		t.Fatal("CLI unblock did not clear the running guard's count")
	}

	// Another node's block and failures.
	other := addr("203.0.113.50")
	key := g.Key(other)
	for i := range 4 {
		if err := cli.AddFailure(ctx, "node-b", key, Failure{Time: clk.Now(), SID: fmt.Sprintf("b%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if fail(g, clk, other, 5) {
		t.Fatal("blocked after 9 failures on two nodes")
	}
	if !g.Failure(other, "local-tenth") {
		t.Fatal("failures seen by another node were not counted")
	}
	third := addr("203.0.113.51")
	if err := cli.Block(ctx, "node-b", Block{Key: g.Key(third), Since: clk.Now(), Until: clk.Now().Add(time.Hour), SIDs: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !g.Blocked(third) {
		t.Fatal("a block made by another node did not reach this one")
	}
}

// TestRunPolls: Run applies a CLI unblock by itself within a few poll
// intervals, with the real clock for the ticker.
func TestRunPolls(t *testing.T) {
	clk := newFakeClock()
	dataDir := t.TempDir()
	g := newGuard(t, clk, openStore(t, dataDir), Config{PollInterval: 5 * time.Millisecond})
	ip := addr("192.0.2.77")
	fail(g, clk, ip, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if _, err := openStore(t, dataDir).Unblock(ctx, "cli", netip.MustParsePrefix("192.0.2.77/32"), clk.Now()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "Run to apply the CLI unblock", func() bool { return !g.Blocked(ip) })
}

// TestPrune: pruning forgets what has run out, in memory and in the store,
// and a guard whose change-log position was pruned away reloads the state.
func TestPrune(t *testing.T) {
	clk := newFakeClock()
	dataDir := t.TempDir()
	st := openStore(t, dataDir)
	g := newGuard(t, clk, st, Config{})
	lagging := newGuard(t, clk, openStore(t, dataDir), Config{})
	ctx := context.Background()
	fail(g, clk, addr("192.0.2.1"), 10)
	fail(g, clk, addr("192.0.2.2"), 3)
	clk.Advance(2 * time.Hour)
	fail(g, clk, addr("192.0.2.3"), 10)
	if err := g.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if s := g.Stats(); s.Expired != 1 || s.TrackedKeys != 1 || s.BlockedKeys != 1 {
		t.Fatalf("stats after prune = %+v, want 1 expired, 1 key tracked, 1 blocked", s)
	}
	loaded, err := st.Load(ctx, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Failures) != 1 || len(loaded.Blocks) != 1 {
		t.Fatalf("store after prune holds %d keys with failures and %d blocks, want 1 and 1", len(loaded.Failures), len(loaded.Blocks))
	}
	if _, err := st.Changes(ctx, 0, 10); err == nil {
		t.Fatal("reading pruned change-log entries did not fail")
	}
	// The lagging guard has seen nothing since its start: it reloads.
	if err := lagging.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !lagging.Blocked(addr("192.0.2.3")) || lagging.Blocked(addr("192.0.2.1")) {
		t.Fatal("reload after pruned change log gave the wrong blocks")
	}
}

// TestEntries: the listing support sees, with the sessions of the failures.
func TestEntries(t *testing.T) {
	eachBackend(t, allBackends, func(t *testing.T, be backend) {
		clk := newFakeClock()
		g := newGuard(t, clk, be.open(t, Config{MaxFailures: 3}), Config{MaxFailures: 3})
		g.Failure(addr("192.0.2.5"), "s1")
		g.Failure(addr("192.0.2.5"), "s1")
		clk.Advance(time.Second)
		g.Failure(addr("192.0.2.5"), "s2")
		g.Failure(addr("192.0.2.9"), "s3")
		es := g.List()
		if len(es) != 2 {
			t.Fatalf("entries = %+v", es)
		}
		b, u := es[0], es[1]
		if FormatKey(b.Key) != "192.0.2.5" || !b.Blocked || b.Failures != 3 || !slices.Equal(b.SIDs, []string{"s1", "s2"}) ||
			!b.Since.Equal(clk.Now()) || !b.Until.Equal(clk.Now().Add(time.Hour)) {
			t.Errorf("blocked entry = %+v", b)
		}
		if FormatKey(u.Key) != "192.0.2.9" || u.Blocked || u.Failures != 1 || !slices.Equal(u.SIDs, []string{"s3"}) {
			t.Errorf("counting entry = %+v", u)
		}
	})
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"112.67.35.229", "112.67.35.229/32"},
		{" 112.67.35.229 ", "112.67.35.229/32"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"2001:db8:1:2::7", "2001:db8:1:2::7/128"},
		{"2001:db8:1:2::7/64", "2001:db8:1:2::/64"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{"fe80::1%eth0", "fe80::1/128"},
	} {
		p, err := ParseTarget(tc.in)
		if err != nil || p.String() != tc.want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	for _, in := range []string{"", "host.example", "1.2.3.4/33", "1.2.3", "::1/129", "fe80::%eth0/64", "1.2.3.4/"} {
		if p, err := ParseTarget(in); err == nil {
			t.Errorf("ParseTarget(%q) = %v, want an error", in, p)
		}
	}
}

// FuzzParseTarget: whatever support types, the parser answers with a valid,
// masked prefix or an error, and never panics.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"112.67.35.229", "10.0.0.0/8", "2001:db8::/64", "::ffff:1.2.3.4/104", "fe80::1%eth0", "", "/", "1.2.3.4/-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseTarget(s)
		if err != nil {
			if p.IsValid() {
				t.Fatalf("ParseTarget(%q) returned %v with error %v", s, p, err)
			}
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			t.Fatalf("ParseTarget(%q) = %v: not a masked, zone-free, unmapped prefix", s, p)
		}
		if q, err := ParseTarget(p.String()); err != nil || q != p {
			t.Fatalf("ParseTarget(%q) = %v does not round-trip: %v, %v", s, p, q, err)
		}
	})
}

// BenchmarkBlocked measures the check every connection makes, for a blocked
// and a free client, with 10 000 keys blocked.
func BenchmarkBlocked(b *testing.B) {
	clk := newFakeClock()
	g := newGuard(b, clk, nil, Config{MaxFailures: 1})
	for i := range 10000 {
		g.Failure(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "s")
	}
	for _, bc := range []struct {
		name string
		ip   netip.Addr
		want bool
	}{{"blocked", addr("10.0.0.77"), true}, {"free", addr("192.0.2.1"), false}} {
		b.Run(bc.name, func(b *testing.B) {
			for range b.N {
				if g.Blocked(bc.ip) != bc.want {
					b.Fatal("wrong answer")
				}
			}
		})
	}
}

// BenchmarkFailureParallel measures recording failures from 64 sessions at
// once, each from a key of its own, SQLite writes included.
func BenchmarkFailureParallel(b *testing.B) {
	clk := newFakeClock()
	g := newGuard(b, clk, openStore(b, ""), Config{MaxFailures: 1 << 30})
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Failure(v6Client(int(n.Add(1))), "sessionidsessionid0000")
		}
	})
}

// BenchmarkFailure measures recording one failure, SQLite write included.
func BenchmarkFailure(b *testing.B) {
	clk := newFakeClock()
	g := newGuard(b, clk, openStore(b, ""), Config{MaxFailures: 1 << 30})
	b.ResetTimer()
	for i := range b.N {
		g.Failure(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "sessionidsessionid0000")
	}
}

// BenchmarkUnblockWide measures lifting one network that covers 50 000
// counting keys and 5 000 blocked ones, as support does after a distributed
// attack from one provider's range. It runs under the guard's write lock, so
// every connection waits for it.
func BenchmarkUnblockWide(b *testing.B) {
	clk := newFakeClock()
	wide := netip.MustParsePrefix("2001:db8::/32")
	for range b.N {
		b.StopTimer()
		g := newGuard(b, clk, nil, Config{MaxFailures: 2})
		for i := range 50000 {
			g.Failure(v6Client(i), "s")
			if i%10 == 0 {
				g.Failure(v6Client(i), "s")
			}
		}
		b.StartTimer()
		if keys, err := g.Unblock(context.Background(), wide); err != nil || len(keys) != 50000 {
			b.Fatalf("unblocked %d keys, %v", len(keys), err)
		}
	}
}

// BenchmarkFailureFlood measures recording failures from ever new IPv6 /64s
// (memory only) once the guard holds MaxKeys keys, so each failure also
// forgets a key.
func BenchmarkFailureFlood(b *testing.B) {
	clk := newFakeClock()
	g := newGuard(b, clk, nil, Config{MaxKeys: 100000})
	for i := range 100000 {
		g.Failure(v6Client(i), "sessionidsessionid0000")
	}
	b.ResetTimer()
	for i := range b.N {
		g.Failure(v6Client(100000+i), "sessionidsessionid0000")
	}
	b.StopTimer()
	if s := g.Stats(); s.TrackedKeys > 100000 {
		b.Fatalf("%d keys kept, cap 100 000", s.TrackedKeys)
	}
}

// BenchmarkPruneStall measures how long Blocked, on the path of every
// connection, waits while Prune clears half of a million keys.
func BenchmarkPruneStall(b *testing.B) {
	clk := newFakeClock()
	g := newGuard(b, clk, nil, Config{})
	for i := range 1000000 {
		g.Failure(v6Client(i), "sessionidsessionid0000")
		if i == 500000 {
			clk.Advance(40 * time.Minute)
		}
	}
	clk.Advance(30 * time.Minute) // half the keys are stale
	var stop atomic.Bool
	var worst time.Duration
	done := make(chan struct{})
	go func() {
		for !stop.Load() {
			t0 := time.Now()
			g.Blocked(v6Client(7))
			if d := time.Since(t0); d > worst {
				worst = d
			}
		}
		close(done)
	}()
	time.Sleep(10 * time.Millisecond)
	t0 := time.Now()
	g.Prune(context.Background())
	total := time.Since(t0)
	stop.Store(true)
	<-done
	b.ReportMetric(float64(total.Milliseconds()), "ms-prune")
	b.ReportMetric(float64(worst.Microseconds()), "us-worst-Blocked")
	b.ReportMetric(float64(g.Stats().TrackedKeys), "keys-left")
}
