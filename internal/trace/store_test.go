package trace_test

import (
	"context"
	"testing"

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
