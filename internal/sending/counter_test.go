package sending

import (
	"context"
	"testing"
	"time"

	"submitd/internal/redisconn"
	"submitd/internal/testutil"
)

// counterSuite is what every Counter must do: the in-memory one and the
// Redis one pass the same tests.
func counterSuite(t *testing.T, newCounter func(t *testing.T) Counter) {
	ctx := context.Background()
	at := func(h, m, s int) time.Time { return time.Date(2026, 3, 2, h, m, s, 0, time.UTC) }
	req := func(key string, max int64) Request { return Request{Key: key, Window: time.Hour, Max: max, N: 1} }

	t.Run("edge and slide", func(t *testing.T) {
		c := newCounter(t)
		for i := range 3 {
			if _, r, _, err := c.Take(ctx, at(13, 7, 30+i), []Request{req("k", 3)}); err != nil || r != -1 {
				t.Fatalf("take %d: refused %d, %v", i+1, r, err)
			}
		}
		_, r, until, err := c.Take(ctx, at(13, 50, 0), []Request{req("k", 3)})
		if err != nil || r != 0 || !until.Equal(at(14, 7, 0)) {
			t.Fatalf("4th: refused %d until %v, %v; want 0 until 14:07", r, until, err)
		}
		if _, r, _, _ := c.Take(ctx, at(14, 6, 59), []Request{req("k", 3)}); r != 0 {
			t.Fatal("a slot freed before 14:07")
		}
		if _, r, _, _ := c.Take(ctx, at(14, 7, 0), []Request{req("k", 3)}); r != -1 {
			t.Fatal("no slot at 14:07")
		}
		if n, err := c.Count(ctx, at(14, 7, 0), "k", time.Hour); err != nil || n != 1 {
			t.Fatalf("count %d, %v; want 1", n, err)
		}
	})

	t.Run("all or nothing", func(t *testing.T) {
		c := newCounter(t)
		c.Take(ctx, at(10, 0, 0), []Request{req("full", 1)})
		_, r, _, err := c.Take(ctx, at(10, 1, 0), []Request{req("free", 5), req("full", 1)})
		if err != nil || r != 1 {
			t.Fatalf("refused %d, %v; want 1", r, err)
		}
		if n, _ := c.Count(ctx, at(10, 1, 0), "free", time.Hour); n != 0 {
			t.Fatalf("a refused take added %d to the other window", n)
		}
	})

	t.Run("give back", func(t *testing.T) {
		c := newCounter(t)
		first, _, _, _ := c.Take(ctx, at(9, 0, 0), []Request{req("g", 2)})
		c.Take(ctx, at(9, 1, 0), []Request{req("g", 2)})
		if _, r, until, _ := c.Take(ctx, at(9, 2, 0), []Request{req("g", 2)}); r != 0 || !until.Equal(at(10, 0, 0)) {
			t.Fatalf("refused %d until %v", r, until)
		}
		if err := c.Give(ctx, at(9, 2, 0), first); err != nil {
			t.Fatal(err)
		}
		// What 9:01 took still counts: the next refusal names 10:01.
		if _, r, _, _ := c.Take(ctx, at(9, 2, 0), []Request{req("g", 2)}); r != -1 {
			t.Fatal("the given-back slot is not free")
		}
		if _, r, until, _ := c.Take(ctx, at(9, 3, 0), []Request{req("g", 2)}); r != 0 || !until.Equal(at(10, 1, 0)) {
			t.Fatalf("refused %d until %v, want 10:01", r, until)
		}
		// Giving back what already left the window does nothing.
		old, _, _, _ := c.Take(ctx, at(7, 0, 0), []Request{req("h", 0)})
		c.Take(ctx, at(9, 0, 0), []Request{req("h", 0)})
		c.Give(ctx, at(9, 0, 0), old)
		if n, _ := c.Count(ctx, at(9, 0, 0), "h", time.Hour); n != 1 {
			t.Fatalf("count %d after giving back an expired take, want 1", n)
		}
	})

	t.Run("day window", func(t *testing.T) {
		c := newCounter(t)
		day := Request{Key: "d", Window: 24 * time.Hour, Max: 2, N: 1}
		c.Take(ctx, at(8, 15, 10), []Request{day})
		c.Take(ctx, at(20, 0, 0), []Request{day})
		_, r, until, _ := c.Take(ctx, at(23, 0, 0), []Request{day})
		if r != 0 || !until.Equal(at(8, 15, 0).Add(24*time.Hour)) {
			t.Fatalf("refused %d until %v, want 08:15 next day", r, until)
		}
	})

	t.Run("lowered limit", func(t *testing.T) {
		// An override lowered below what the window holds: the refusal
		// names when enough has left for one more.
		c := newCounter(t)
		for m := range 4 {
			c.Take(ctx, at(12, m, 0), []Request{req("l", 10)})
		}
		_, r, until, _ := c.Take(ctx, at(12, 30, 0), []Request{req("l", 2)})
		if r != 0 || !until.Equal(at(13, 2, 0)) {
			t.Fatalf("refused %d until %v, want 13:02", r, until)
		}
	})
}

func TestMemoryCounter(t *testing.T) {
	counterSuite(t, func(*testing.T) Counter { return NewMemory() })
}

// TestRedisCounter runs the suite against a real redis-server.
func TestRedisCounter(t *testing.T) {
	r := testutil.StartRedis(t)
	counterSuite(t, func(t *testing.T) Counter {
		cl, err := redisconn.Open(r.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.FlushDB(context.Background()); cl.Close() })
		return NewRedis(cl)
	})
}

// TestMemorySweep: windows of accounts that stopped sending are dropped,
// so memory follows the accounts that send.
func TestMemorySweep(t *testing.T) {
	m := NewMemory()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		m.Take(ctx, t0, []Request{{Key: "a" + string(rune('0'+i%10)) + string(rune(i)), Window: time.Hour, Max: 5, N: 1}})
	}
	if m.Len() != 1000 {
		t.Fatalf("%d windows", m.Len())
	}
	m.Take(ctx, t0.Add(time.Hour+sweepEvery), []Request{{Key: "b", Window: time.Hour, Max: 5, N: 1}})
	if m.Len() != 1 {
		t.Fatalf("%d windows after they all emptied, want 1", m.Len())
	}
}
