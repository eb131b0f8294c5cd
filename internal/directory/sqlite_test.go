package directory

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"submitd/internal/sqlitedb"
	"submitd/internal/testutil"
)

// newStore opens a fresh SQLite directory in a temporary data_dir.
func newStore(t *testing.T) *SQLite {
	t.Helper()
	st, err := NewSQLite(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// dump returns every row of the directory's tables as text, to compare the
// store before and after a refused change.
func dump(t *testing.T, st *SQLite) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT name, created FROM domains ORDER BY name`,
		`SELECT name, domain, created FROM aliases ORDER BY name`,
		`SELECT address, domain, password_hash, smtp_access, created FROM accounts ORDER BY address`,
		`SELECT account, address FROM identities ORDER BY account, address`,
	} {
		rows, err := st.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		rows.Close()
		b.WriteString("--\n")
	}
	return b.String()
}

// fixture is the directory most tests start from:
//
//	firma.cz (hosted), aliases firma.com and firma.eu
//	jiný.cz (hosted, stored as xn--jin-noa.cz), no aliases
//	jan@firma.cz with identity jan.novak@gmail.com, eva@firma.cz disabled
func fixture(t *testing.T) *SQLite {
	t.Helper()
	st := newStore(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.AddDomain(ctx, "firma.cz"))
	must(st.AddDomain(ctx, "Jiný.CZ."))
	must(st.AddAlias(ctx, "firma.com", "firma.cz"))
	must(st.AddAlias(ctx, "FIRMA.EU", "firma.cz"))
	must(st.AddAccount(ctx, "Jan@Firma.cz", "{BLF-CRYPT}$2y$10$hash-jan"))
	must(st.AddAccount(ctx, "eva@firma.cz", "{BLF-CRYPT}$2y$10$hash-eva"))
	must(st.SetSMTPAccess(ctx, "eva@firma.cz", false))
	must(st.AddIdentity(ctx, "jan@firma.cz", "Jan.Novak@Gmail.com"))
	return st
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, sqlitedb.FileName)

	db, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Opening again keeps the data and applies nothing twice.
	db, err = sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err = NewSQLite(ctx, db)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	if ds, _ := st.Domains(ctx); !reflect.DeepEqual(ds, []string{"firma.cz"}) {
		t.Fatalf("Domains after reopen = %q", ds)
	}
	var v int
	if err := db.QueryRow(`SELECT version FROM schema_version WHERE component = 'directory'`).Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("recorded version = %d, %v; want %d", v, err, len(migrations))
	}

	// A database written by a newer binary is refused, not downgraded.
	if _, err := db.Exec(`UPDATE schema_version SET version = ? WHERE component = 'directory'`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	_, err = NewSQLite(ctx, db)
	if err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("NewSQLite on a future schema: %v; want a refusal", err)
	}
}
