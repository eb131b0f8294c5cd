package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	steps := []string{`CREATE TABLE a (x INTEGER)`, `ALTER TABLE a ADD COLUMN y TEXT`}
	for i := 0; i < 2; i++ {
		if err := Migrate(ctx, db, "test", steps); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if _, err := db.Exec(`INSERT INTO a (x, y) VALUES (1, 'b')`); err != nil {
		t.Fatal(err)
	}
	// Components are versioned apart.
	if err := Migrate(ctx, db, "other", []string{`CREATE TABLE b (z INTEGER)`}); err != nil {
		t.Fatal(err)
	}
	// A failing step leaves the version where it was.
	bad := append(steps, `CREATE TABLE a (x INTEGER)`)
	if err := Migrate(ctx, db, "test", bad); err == nil || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("failing step: %v", err)
	}
	var v int
	db.QueryRow(`SELECT version FROM schema_version WHERE component = 'test'`).Scan(&v)
	if v != 2 {
		t.Fatalf("version %d after a failed step", v)
	}
	// An older binary refuses a newer database.
	if err := Migrate(ctx, db, "test", steps[:1]); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("older binary: %v", err)
	}
	// A Go step runs in the step's transaction: its failure undoes what it
	// wrote, and its success is recorded like an SQL step's.
	goSteps := []Step{{SQL: steps[0]}, {SQL: steps[1]}, {Run: func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE a SET y = 'c'`); err != nil {
			return err
		}
		return errors.New("step failed")
	}}}
	if err := MigrateSteps(ctx, db, "test", goSteps); err == nil || !strings.Contains(err.Error(), "step failed") {
		t.Fatalf("failing Go step: %v", err)
	}
	var y string
	db.QueryRow(`SELECT y FROM a`).Scan(&y)
	if y != "b" {
		t.Fatalf("failed Go step left y = %q", y)
	}
	goSteps[2].Run = func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE a SET y = 'd'`)
		return err
	}
	if err := MigrateSteps(ctx, db, "test", goSteps); err != nil {
		t.Fatal(err)
	}
	db.QueryRow(`SELECT y FROM a`).Scan(&y)
	db.QueryRow(`SELECT version FROM schema_version WHERE component = 'test'`).Scan(&v)
	if y != "d" || v != 3 {
		t.Fatalf("after the Go step: y = %q, version %d", y, v)
	}
	var mode string
	db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	if mode != "wal" {
		t.Fatalf("journal mode %q", mode)
	}
}

// TestOpenDirNamesURISyntax: a data directory whose name holds what a
// "file:" URI reads as its own syntax ('#', '?', '%') gets its own database
// file inside it, not one at the name cut short that other directories
// would share.
func TestOpenDirNamesURISyntax(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	for i, name := range []string{"seed#0", "seed#1", "a?b=c", "x%41y", "p%3fq#r"} {
		dir := filepath.Join(base, name)
		db, err := OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := Migrate(ctx, db, "test", []string{`CREATE TABLE t (n INTEGER)`}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO t (n) VALUES (?)`, i); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%s: %d rows (%v), want its own one", name, n, err)
		}
		db.Close()
		if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if es, err := os.ReadDir(base); err != nil || len(es) != 5 {
		t.Fatalf("%d entries in the parent directory (%v), want the 5 data directories", len(es), err)
	}
}
