package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"submitd/internal/guard"
	"submitd/internal/redisconn"
	"submitd/internal/testutil"
)

// TestCLIGuardOnRedis: with [guard] store = "redis" and no server on this
// machine, "submitd blocked" lists what the nodes blocked in Redis, and
// "submitd unblock" lifts it on a running node elsewhere at once.
func TestCLIGuardOnRedis(t *testing.T) {
	r := testutil.StartRedis(t)
	c := newCLI(t, "bcrypt")
	body := fmt.Sprintf("data_dir = %q\n[auth]\npassword_scheme = \"bcrypt\"\n[guard]\nstore = \"redis\"\nredis_url = %q\n", c.dataDir, r.URL())
	if err := os.WriteFile(c.cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c.must("", "domain", "add", "firma.cz")
	rc, err := redisconn.Open(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	st, err := guard.NewRedis(rc, "guard", guard.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, err := guard.New(ctx, guard.Config{PollInterval: 10 * time.Millisecond}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { other.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	ip := netip.MustParseAddr("192.0.2.44")
	for i := range 10 {
		other.Failure(ip, fmt.Sprintf("sess%018d", i))
	}
	out := c.must("", "blocked")
	if f := strings.Split(strings.TrimSpace(out), "\t"); len(f) != 5 || f[0] != "192.0.2.44" || f[1] != "10" || strings.Count(f[4], ",") != 9 {
		t.Fatalf("blocked = %q, want 192.0.2.44 with 10 failures and their 10 sessions", out)
	}
	if out := c.must("", "unblock", "192.0.2.44"); out != "unblocked 192.0.2.44\n" {
		t.Errorf("unblock: %q", out)
	}
	testutil.WaitFor(t, 10*time.Second, "the CLI's unblock to reach the running node", func() bool { return !other.Blocked(ip) })
	if out := c.must("", "blocked", "-all"); out != "" {
		t.Errorf("blocked -all after the unblock = %q", out)
	}
}
