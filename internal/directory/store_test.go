package directory_test

import (
	"context"
	"log/slog"
	"testing"

	"submitd/internal/directory"
	"submitd/internal/directory/storetest"
	"submitd/internal/pgdb/pgtest"
	"submitd/internal/testutil"
)

func openSQLite(t *testing.T) *directory.SQLite {
	t.Helper()
	st, err := directory.NewSQLite(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openPostgres opens a directory on a fresh PostgreSQL database.
func openPostgres(t *testing.T) *directory.Postgres {
	t.Helper()
	st, err := directory.NewPostgres(context.Background(), pgtest.Pool(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) directory.Store { return openSQLite(t) })
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) directory.Store { return openPostgres(t) })
}

func TestSQLiteChanges(t *testing.T) {
	storetest.Changes(t, func(t *testing.T) (directory.Store, directory.Feed) {
		st := openSQLite(t)
		w, err := directory.NewWatcher(context.Background(), st, directory.WatcherConfig{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return st, w
	})
}

func TestPostgresChanges(t *testing.T) {
	storetest.Changes(t, func(t *testing.T) (directory.Store, directory.Feed) {
		st := openPostgres(t)
		return st, directory.NewListener(st.Pool(), slog.New(slog.DiscardHandler))
	})
}
