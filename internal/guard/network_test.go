package guard

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// TestBlockNetwork: support blocks a /24 by hand; every address in it is
// refused and others are not, the block survives a restart, reaches another
// process through the change log, runs out by itself, and an unblock of one
// address in it lifts it (SPEC R11a).
func TestBlockNetwork(t *testing.T) {
	eachBackend(t, durableBackends, func(t *testing.T, be backend) {
		ctx := context.Background()
		clk := newFakeClock()
		st := be.open(t, Config{})
		g := newGuard(t, clk, st, Config{})
		other := newGuard(t, clk, be.open(t, Config{}), Config{PollInterval: fastPoll})
		follow(t, other)

		p, err := g.BlockNetwork(ctx, netip.MustParsePrefix("198.51.100.0/24"), clk.Now().Add(2*time.Hour))
		if err != nil || p.String() != "198.51.100.0/24" {
			t.Fatalf("BlockNetwork = %v, %v", p, err)
		}
		for _, ip := range []string{"198.51.100.1", "198.51.100.254", "::ffff:198.51.100.9"} {
			if !g.Blocked(addr(ip)) {
				t.Errorf("%s not blocked by the /24", ip)
			}
		}
		if g.Blocked(addr("198.51.101.1")) {
			t.Error("198.51.101.1 blocked, outside the /24")
		}
		testutil.WaitFor(t, 10*time.Second, "the other process to see the network block", func() bool { return other.Blocked(addr("198.51.100.7")) })
		restarted := newGuard(t, clk, st, Config{})
		if !restarted.Blocked(addr("198.51.100.7")) {
			t.Error("the network block did not survive a restart")
		}
		if es := restarted.List(); len(es) != 1 || !es[0].Blocked || es[0].Key != p {
			t.Errorf("List = %+v, want the /24 blocked", es)
		}
		if _, err := g.BlockNetwork(ctx, netip.MustParsePrefix("192.0.2.1/32"), clk.Now()); err == nil {
			t.Error("a block ending now was accepted")
		}

		keys, err := g.Unblock(ctx, netip.MustParsePrefix("198.51.100.7/32"))
		if err != nil || len(keys) != 1 || keys[0] != p {
			t.Fatalf("Unblock = %v, %v; want the /24", keys, err)
		}
		if g.Blocked(addr("198.51.100.7")) {
			t.Error("still blocked after the unblock")
		}

		// A single IPv6 address blocks its /64; the block runs out by itself.
		p, err = g.BlockNetwork(ctx, netip.MustParsePrefix("2001:db8:1:2::7/128"), clk.Now().Add(time.Minute))
		if err != nil || p.String() != "2001:db8:1:2::/64" {
			t.Fatalf("BlockNetwork(v6 address) = %v, %v", p, err)
		}
		if !g.Blocked(addr("2001:db8:1:2::99")) {
			t.Error("another address of the /64 is not blocked")
		}
		clk.Advance(time.Minute)
		if g.Blocked(addr("2001:db8:1:2::99")) {
			t.Error("blocked after the block ran out")
		}
		if err := g.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		if s := g.Stats(); s.BlockedKeys != 0 {
			t.Errorf("BlockedKeys = %d after prune", s.BlockedKeys)
		}
	})
}

// TestSQLiteNamed: a guard on tables of its own name in the same database
// counts and blocks apart from the SMTP guard, and keeps its state over a
// restart.
func TestSQLiteNamed(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	db := testutil.OpenDBIn(t, t.TempDir())
	smtpStore, err := NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	loginStore, err := NewSQLiteNamed(ctx, db, "admin_login")
	if err != nil {
		t.Fatal(err)
	}
	smtp := newGuard(t, clk, smtpStore, Config{})
	login := newGuard(t, clk, loginStore, Config{MaxFailures: 3})
	ip := addr("192.0.2.50")
	if !fail(login, clk, ip, 3) {
		t.Fatal("3 login failures did not block")
	}
	if smtp.Blocked(ip) {
		t.Error("login failures blocked SMTP")
	}
	if es := newGuard(t, clk, smtpStore, Config{}).List(); len(es) != 0 {
		t.Errorf("SMTP store holds %+v", es)
	}
	again, err := NewSQLiteNamed(ctx, db, "admin_login")
	if err != nil {
		t.Fatal(err)
	}
	if !newGuard(t, clk, again, Config{MaxFailures: 3}).Blocked(ip) {
		t.Error("the login block did not survive a restart")
	}
}
