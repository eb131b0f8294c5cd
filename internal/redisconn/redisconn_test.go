package redisconn

import (
	"context"
	"fmt"
	"strings"
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

// TestOpenForms: each URL form gives the client of its kind, and a bad URL's
// error names it without its password.
func TestOpenForms(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want string
	}{
		{"redis://127.0.0.1:6379/0", "*redis.Client"},
		{"unix:///run/redis.sock?db=2", "*redis.Client"},
		{"redis://127.0.0.1:26379/0?master_name=guard&addr=127.0.0.1:26380", "*redis.Client"},
		{"redis+cluster://127.0.0.1:7000?addr=127.0.0.1:7001", "*redis.ClusterClient"},
		{"rediss+cluster://u:p@127.0.0.1:7000", "*redis.ClusterClient"},
	} {
		c, err := Open(tc.url)
		if err != nil {
			t.Errorf("Open(%q): %v", tc.url, err)
			continue
		}
		if got := fmt.Sprintf("%T", c); got != tc.want {
			t.Errorf("Open(%q) = %s, want %s", tc.url, got, tc.want)
		}
		c.Close()
	}
	for _, bad := range []string{
		"redis://u:hunter2@h:x/0",
		"redis://u:hunter2@h:6379/0?master_name=",
		"redis+cluster://u:hunter2@h:6379?frob=1",
		"redis://u:hunter2@h:6379/0?nonsense=1",
	} {
		_, err := Open(bad)
		if err == nil {
			t.Errorf("Open(%q) accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q): error %q shows the password", bad, err)
		}
	}
}
