package redisconn

import (
	"context"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// TestOpen checks a client opened from the URL talks to a real redis-server
// and that malformed URLs are refused with the URL in the message.
func TestOpen(t *testing.T) {
	r := testutil.StartRedis(t)
	c, err := Open(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
	for _, bad := range []string{"", "http://x", "redis://h:notaport"} {
		if _, err := Open(bad); err == nil {
			t.Errorf("Open(%q) accepted", bad)
		}
	}
}
