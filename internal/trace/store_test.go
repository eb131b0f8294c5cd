package trace_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"submitd/internal/pgdb/pgtest"
	"submitd/internal/testutil"
	"submitd/internal/trace"
	"submitd/internal/trace/storetest"
)

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) trace.Store {
		st, err := trace.NewSQLite(context.Background(), testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) trace.Store {
		st, err := trace.NewPostgres(context.Background(), pgtest.Pool(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

// BenchmarkFind is a search that lists a page of messages, each with its
// recipients, as support's trace does.
func BenchmarkFind(b *testing.B) {
	for _, c := range []struct {
		name string
		open func(b *testing.B) trace.Store
	}{
		{"SQLite", func(b *testing.B) trace.Store {
			st, err := trace.NewSQLite(context.Background(), testutil.OpenDB(b))
			if err != nil {
				b.Fatal(err)
			}
			return st
		}},
		{"Postgres", func(b *testing.B) trace.Store {
			st, err := trace.NewPostgres(context.Background(), pgtest.Pool(b))
			if err != nil {
				b.Fatal(err)
			}
			return st
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			st := c.open(b)
			batch := &trace.Batch{}
			t0 := time.Now().Add(-time.Hour)
			for i := range trace.DefaultLimit {
				batch.Messages = append(batch.Messages, &trace.Message{QueueID: fmt.Sprintf("%024d", i), Received: t0.Add(time.Duration(i) * time.Second),
					Account: "jan@firma.cz", From: "jan@firma.cz", Rcpts: []trace.Rcpt{{Addr: "eva@example.org"}, {Addr: "petr@example.net"}}})
			}
			if err := st.Save(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if ms, err := st.Find(context.Background(), trace.Query{Sender: "jan@firma.cz"}); err != nil || len(ms) != trace.DefaultLimit {
					b.Fatalf("%d messages, %v", len(ms), err)
				}
			}
		})
	}
}
