package testutil

import (
	"testing"
)

// TestOpenDB: each OpenDB gives a separate, writable database with foreign
// keys on (the setting every component relies on); OpenDBIn on one data_dir
// gives handles on the same file.
func TestOpenDB(t *testing.T) {
	a, b := OpenDB(t), OpenDB(t)
	if _, err := a.Exec(`CREATE TABLE t (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(`INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := a.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows in t = %d, %v; want 1", n, err)
	}
	if _, err := b.Exec(`SELECT x FROM t`); err == nil {
		t.Fatal("second database sees the first one's table")
	}
	var fk int
	if err := a.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign_keys = %d, %v; want 1", fk, err)
	}

	dir := t.TempDir()
	if _, err := OpenDBIn(t, dir).Exec(`CREATE TABLE shared (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDBIn(t, dir).Exec(`INSERT INTO shared VALUES (1)`); err != nil {
		t.Fatalf("second handle on %s: %v", dir, err)
	}
}
