package testutil

import (
	"database/sql"
	"testing"

	"submitd/internal/sqlitedb"
)

// OpenDB opens a fresh submitd database in a temporary data_dir, with the
// settings the server uses (sqlitedb.OpenDir), and closes it when the test
// ends. Each component's tests migrate their own tables into it.
func OpenDB(t testing.TB) *sql.DB {
	t.Helper()
	return OpenDBIn(t, t.TempDir())
}

// OpenDBIn opens the submitd database in dataDir (creating it if needed) and
// closes it when the test ends. Tests call it more than once on one dataDir
// to stand for separate processes sharing the file, such as a running server
// and the command line, or to look at what a command stored.
func OpenDBIn(t testing.TB, dataDir string) *sql.DB {
	t.Helper()
	db, err := sqlitedb.OpenDir(dataDir)
	if err != nil {
		t.Fatalf("open test database in %s: %v", dataDir, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
