package guard

import (
	"net/netip"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// SetConfig puts a new policy in force on the failures already counted:
// a key with three failures is blocked at its fourth under a lowered
// max_failures of four, for the new block_for; a new exempt network is
// exempt at once; the prefix lengths stay.
func TestSetConfig(t *testing.T) {
	clk := testutil.NewClock(time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC))
	g := newGuard(t, clk, openStore(t, ""), Config{})
	ip := addr("198.51.100.7")
	if fail(g, clk, ip, 3) {
		t.Fatal("blocked after 3 failures under the default of 10")
	}
	if err := g.SetConfig(Config{MaxFailures: 4, Window: time.Hour, BlockFor: 10 * time.Minute,
		Exempt: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, IPv4Prefix: 24}); err != nil {
		t.Fatal(err)
	}
	if c := g.Config(); c.IPv4Prefix != DefaultIPv4Prefix || c.MaxFailures != 4 {
		t.Errorf("config after SetConfig: %+v", c)
	}
	if !fail(g, clk, ip, 1) || !g.Blocked(ip) {
		t.Fatal("not blocked at the fourth failure under max_failures = 4")
	}
	clk.Advance(11 * time.Minute)
	if g.Blocked(ip) {
		t.Error("still blocked after the new block_for")
	}
	if fail(g, clk, addr("192.0.2.9"), 5) || !g.Exempt(addr("192.0.2.9")) {
		t.Error("the new exempt network is counted")
	}
}

// SetConfig reaches the scripts of a shared Redis store, which count and
// block there: a lowered max_failures blocks at once on the node that
// reloaded.
func TestSetConfigRedis(t *testing.T) {
	clk := newFakeClock()
	g := redisNode(t, clk, testutil.StartRedis(t).URL(), "guard", Config{}, nil)
	ip := addr("198.51.100.7")
	if fail(g, clk, ip, 3) {
		t.Fatal("blocked after 3 failures under the default of 10")
	}
	if err := g.SetConfig(Config{MaxFailures: 4, Window: time.Hour, BlockFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if !fail(g, clk, ip, 1) {
		t.Fatal("the fourth failure did not block under max_failures = 4")
	}
}
