// Package pgtest opens the connection pools the PostgreSQL store tests work
// on: a fresh, empty database each, on the cluster internal/testutil runs.
package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
	"submitd/internal/testutil"
)

// Pool returns a pool on a fresh database (testutil.PostgresDSN), closed
// when the test ends. The test is skipped without PostgreSQL, and fails
// without it under CI=true.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return PoolOn(t, testutil.PostgresDSN(t))
}

// PoolOn returns a pool on dsn, closed when the test ends.
func PoolOn(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgdb.Open(context.Background(), pgdb.Options{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
