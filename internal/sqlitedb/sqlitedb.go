// Package sqlitedb opens submitd's embedded SQLite store (modernc.org/sqlite,
// no cgo) and applies each component's schema migrations.
//
// One database file in data_dir holds the directory, session records, guard
// state, DKIM keys and the rest; each component owns its tables and migrates
// them under its own name, so components stay independent of one another.
package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// FileName is the database file's name inside data_dir.
const FileName = "submitd.db"

// Open opens (creating if needed) the database at path with the settings every
// component relies on: WAL so readers never wait for the writer, a busy
// timeout so the CLI and a running server can share the file, foreign keys on.
func Open(path string) (*sql.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create directory for %s: %w", path, err)
	}
	q := url.Values{}
	for _, p := range []string{
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		"synchronous(NORMAL)",
		"foreign_keys(1)",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+uriPath.Replace(path)+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// uriPath escapes what a file path may hold that a "file:" URI reads as
// its own syntax (RFC 8089, RFC 3986 §2.1): SQLite would end the path at a
// '?' or '#' and decode a '%'. A data_dir such as /srv/mail#2 (or a test's
// temporary directory, named after a fuzz seed like "seed#0") would
// otherwise open /srv/mail, another server's database.
var uriPath = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// OpenDir opens the database in dataDir.
func OpenDir(dataDir string) (*sql.DB, error) {
	return Open(filepath.Join(dataDir, FileName))
}

// Step is one schema step: SQL, or Go code for a change SQL cannot express
// (such as Unicode normalization of stored names).
type Step struct {
	// SQL is the step's statements; it is run when Run is nil.
	SQL string
	// Run makes the step's changes inside the step's transaction.
	Run func(ctx context.Context, tx *sql.Tx) error
}

// Migrate brings component's tables up to date: steps[i] is the SQL that takes
// the schema from version i to i+1 (see MigrateSteps).
func Migrate(ctx context.Context, db *sql.DB, component string, steps []string) error {
	st := make([]Step, len(steps))
	for i, q := range steps {
		st[i] = Step{SQL: q}
	}
	return MigrateSteps(ctx, db, component, st)
}

// MigrateSteps brings component's tables up to date: steps[i] takes the schema
// from version i to i+1. Steps already applied are skipped; each new step runs
// in its own transaction together with the version bump, so a crash never
// leaves a half-applied step.
func MigrateSteps(ctx context.Context, db *sql.DB, component string, steps []Step) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		component TEXT PRIMARY KEY,
		version   INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	for {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", component, err)
		}
		var v int
		err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE component = ?`, component).Scan(&v)
		if err != nil && err != sql.ErrNoRows {
			tx.Rollback()
			return fmt.Errorf("migrate %s: %w", component, err)
		}
		if v > len(steps) {
			tx.Rollback()
			return fmt.Errorf("migrate %s: database is at version %d, newer than this binary knows (%d)", component, v, len(steps))
		}
		if v == len(steps) {
			return tx.Rollback()
		}
		if err := runStep(ctx, tx, steps[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to version %d: %w", component, v+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (component, version) VALUES (?, ?)
			ON CONFLICT (component) DO UPDATE SET version = excluded.version`, component, v+1); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s: %w", component, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s: %w", component, err)
		}
	}
}

func runStep(ctx context.Context, tx *sql.Tx, st Step) error {
	if st.Run != nil {
		return st.Run(ctx, tx)
	}
	_, err := tx.ExecContext(ctx, st.SQL)
	return err
}
