package node

import (
	"context"
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// wrongAUTH makes one SMTP session on addr that tries a wrong password, and
// returns the error of the first step that failed: the greeting of a blocked
// client, or the AUTH itself.
func wrongAUTH(addr string) error {
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Auth(sasl.NewPlainClient("", "jan@firma.test", "wrong-pw"))
}

// TestNodesShareGuardOnRedis: two nodes with [guard] store = "redis" on one
// redis-server: 5 wrong passwords on each from one IP block it on both with
// the R11 refusal, and an unblock on one lets it in on the other at once.
func TestNodesShareGuardOnRedis(t *testing.T) {
	r := testutil.StartRedis(t)
	var nodes [2]*Node
	for i := range nodes {
		cfg := testConfig(t, "127.0.0.1:9")
		cfg.Guard.Store, cfg.Guard.RedisURL = "redis", r.URL()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		nodes[i] = startNode(t, cfg)
	}
	a, b := nodes[0], nodes[1]
	for i := range 10 {
		n := a
		if i%2 == 1 {
			n = b
		}
		err := wrongAUTH(n.Addr("submission"))
		if err == nil || !strings.Contains(err.Error(), "authentication failed") {
			t.Fatalf("wrong password %d: %v, want authentication failed", i+1, err)
		}
	}
	ip := netip.MustParseAddr("127.0.0.1")
	testutil.WaitFor(t, 10*time.Second, "both nodes to block the IP", func() bool { return a.Guard.Blocked(ip) && b.Guard.Blocked(ip) })
	for _, n := range nodes {
		err := wrongAUTH(n.Addr("submission"))
		const want = "Connection refused from 127.0.0.1. Too many authorization failures from this IP, try again later."
		if err == nil || !strings.Contains(err.Error(), "554") || !strings.Contains(err.Error(), want) {
			t.Fatalf("connection after 10 failures on two nodes: %v, want the 554 refusal", err)
		}
	}
	if _, err := a.Guard.Unblock(context.Background(), netip.MustParsePrefix("127.0.0.1/32")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the unblock on A to reach B", func() bool { return !b.Guard.Blocked(ip) })
	if err := wrongAUTH(b.Addr("submission")); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("after the unblock, node B answered %v, want the password checked again", err)
	}
}
