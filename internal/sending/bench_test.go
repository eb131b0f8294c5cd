package sending

import (
	"context"
	"fmt"
	"testing"

	"submitd/internal/redisconn"
	"submitd/internal/testutil"
)

// BenchmarkMessage is what the limiter adds to one accepted message with
// one recipient, all four limits on for the account and its domain: the
// MAIL check, the RCPT check with its history lookup, and the history
// write. known sends to the same recipient every time; new to a
// different one each time (a first-time recipient, a new history row);
// redis is known with the windows in a redis-server on loopback.
func BenchmarkMessage(b *testing.B) {
	for _, tc := range []struct {
		name  string
		rcpt  func(i int) string
		redis bool
	}{
		{"known", func(int) string { return "eva@example.org" }, false},
		{"new", func(i int) string { return fmt.Sprintf("r%d@example.org", i) }, false},
		{"redis", func(int) string { return "eva@example.org" }, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h, err := NewSQLiteHistory(context.Background(), testutil.OpenDB(b))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { h.Close() })
			all := Limits{MaxValue, MaxValue, MaxValue, MaxValue}
			var c Counter
			if tc.redis {
				cl, err := redisconn.Open(testutil.StartRedis(b).URL())
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cl.Close() })
				c = NewRedis(cl)
			}
			l := New(Config{Account: all, Domain: all, History: h, Counter: c})
			b.ResetTimer()
			for i := range b.N {
				tx, hit := l.Begin("jan@firma.cz", "firma.cz")
				if hit != nil {
					b.Fatal(hit.Text())
				}
				if hit := tx.Recipient(tc.rcpt(i)); hit != nil {
					b.Fatal(hit.Text())
				}
				tx.Accepted()
			}
		})
	}
}
