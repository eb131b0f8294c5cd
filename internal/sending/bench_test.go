package sending

import (
	"context"
	"fmt"
	"testing"

	"submitd/internal/testutil"
)

// BenchmarkMessage is what the limiter adds to one accepted message with
// one recipient, all four limits on for the account and its domain: the
// MAIL check, the RCPT check with its history lookup, and the history
// write. known sends to the same recipient every time; new to a
// different one each time (a first-time recipient, a new history row).
func BenchmarkMessage(b *testing.B) {
	for _, tc := range []struct {
		name string
		rcpt func(i int) string
	}{
		{"known", func(int) string { return "eva@example.org" }},
		{"new", func(i int) string { return fmt.Sprintf("r%d@example.org", i) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h, err := NewSQLiteHistory(context.Background(), testutil.OpenDB(b))
			if err != nil {
				b.Fatal(err)
			}
			all := Limits{MaxValue, MaxValue, MaxValue, MaxValue}
			l := New(Config{Account: all, Domain: all, History: h})
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
