package sessionlog_test

import (
	"context"
	"testing"

	"submitd/internal/pgdb"
	"submitd/internal/sessionlog"
	"submitd/internal/sessionlog/storetest"
	"submitd/internal/testutil"
)

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		st, err := sessionlog.NewSQLite(context.Background(), testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		ctx := context.Background()
		pool, err := pgdb.Open(ctx, pgdb.Options{DSN: testutil.PostgresDSN(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		st, err := sessionlog.NewPostgres(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}
