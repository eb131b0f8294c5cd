package sessionlog_test

import (
	"context"
	"testing"

	"submitd/internal/pgdb/pgtest"
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
		st, err := sessionlog.NewPostgres(context.Background(), pgtest.Pool(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}
