package directory

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"submitd/internal/address"
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

// TestRefused runs each change that the directory rules forbid against the
// fixture and checks that it fails with the right error and message and that
// the store is left exactly as it was.
func TestRefused(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		op   func(st Store) error
		is   error
		// msg are substrings the error must contain.
		msg []string
	}{
		{"domain add duplicate", func(st Store) error { return st.AddDomain(ctx, "FIRMA.cz.") },
			ErrExists, []string{"firma.cz"}},
		{"domain add duplicate IDNA", func(st Store) error { return st.AddDomain(ctx, "xn--jin-noa.cz") },
			ErrExists, []string{"xn--jin-noa.cz"}},
		{"domain add invalid", func(st Store) error { return st.AddDomain(ctx, "fir_ma.cz") },
			address.ErrInvalid, []string{"fir_ma.cz", "'_'"}},
		{"domain add single label", func(st Store) error { return st.AddDomain(ctx, "localhost") },
			address.ErrInvalid, []string{"two labels"}},
		{"domain add existing alias", func(st Store) error { return st.AddDomain(ctx, "firma.com") },
			ErrConflict, []string{"firma.com", "alias of firma.cz"}},
		{"domain remove with accounts", func(st Store) error { return st.RemoveDomain(ctx, "firma.cz", false) },
			ErrConflict, []string{"firma.cz", "2 account", "-force"}},
		{"domain remove unknown", func(st Store) error { return st.RemoveDomain(ctx, "neznama.cz", true) },
			ErrNotFound, []string{"neznama.cz"}},
		{"domain remove alias", func(st Store) error { return st.RemoveDomain(ctx, "firma.com", true) },
			ErrConflict, []string{"firma.com is an alias of firma.cz"}},
		{"alias of unknown domain", func(st Store) error { return st.AddAlias(ctx, "firma.de", "neznama.cz") },
			ErrNotFound, []string{"neznama.cz"}},
		{"alias of an alias", func(st Store) error { return st.AddAlias(ctx, "firma.de", "firma.com") },
			ErrConflict, []string{"firma.com is an alias of firma.cz"}},
		{"alias equal to hosted domain", func(st Store) error { return st.AddAlias(ctx, "jiný.cz", "firma.cz") },
			ErrConflict, []string{"xn--jin-noa.cz is a hosted domain"}},
		{"alias of itself", func(st Store) error { return st.AddAlias(ctx, "FIRMA.cz", "firma.cz") },
			ErrConflict, []string{"firma.cz", "itself"}},
		{"alias already alias of another", func(st Store) error { return st.AddAlias(ctx, "firma.com", "jiný.cz") },
			ErrExists, []string{"firma.com", "of firma.cz"}},
		{"alias invalid", func(st Store) error { return st.AddAlias(ctx, "firma..de", "firma.cz") },
			address.ErrInvalid, []string{"firma..de", "empty label"}},
		{"alias remove unknown", func(st Store) error { return st.RemoveAlias(ctx, "firma.de") },
			ErrNotFound, []string{"firma.de"}},
		{"alias remove of a hosted domain", func(st Store) error { return st.RemoveAlias(ctx, "firma.cz") },
			ErrConflict, []string{"firma.cz is a hosted domain"}},
		{"account on alias domain", func(st Store) error { return st.AddAccount(ctx, "petr@firma.com", "{X}y") },
			ErrConflict, []string{"petr@firma.com", "alias of firma.cz"}},
		{"account on unknown domain", func(st Store) error { return st.AddAccount(ctx, "petr@neznama.cz", "{X}y") },
			ErrNotFound, []string{"petr@neznama.cz", "neznama.cz"}},
		{"account on subdomain", func(st Store) error { return st.AddAccount(ctx, "petr@praha.firma.cz", "{X}y") },
			ErrNotFound, []string{"praha.firma.cz"}},
		{"account duplicate case-insensitive", func(st Store) error { return st.AddAccount(ctx, "JAN@firma.CZ", "{X}y") },
			ErrExists, []string{"jan@firma.cz"}},
		{"account duplicate quoted", func(st Store) error { return st.AddAccount(ctx, `"jan"@firma.cz`, "{X}y") },
			ErrExists, []string{"jan@firma.cz"}},
		{"account not an address", func(st Store) error { return st.AddAccount(ctx, "firma.cz", "{X}y") },
			address.ErrInvalid, []string{"not a full address"}},
		{"account empty hash", func(st Store) error { return st.AddAccount(ctx, "petr@firma.cz", "") },
			ErrConflict, []string{"empty password hash"}},
		{"passwd unknown", func(st Store) error { return st.SetPassword(ctx, "petr@firma.cz", "{X}y") },
			ErrNotFound, []string{"petr@firma.cz"}},
		{"passwd empty hash", func(st Store) error { return st.SetPassword(ctx, "jan@firma.cz", "") },
			ErrConflict, []string{"empty password hash"}},
		{"disable unknown", func(st Store) error { return st.SetSMTPAccess(ctx, "petr@firma.cz", false) },
			ErrNotFound, []string{"petr@firma.cz"}},
		{"account remove unknown", func(st Store) error { return st.RemoveAccount(ctx, "jan@firma.com") },
			ErrNotFound, []string{"jan@firma.com"}},
		{"identity of unknown account", func(st Store) error { return st.AddIdentity(ctx, "petr@firma.cz", "p@gmail.com") },
			ErrNotFound, []string{"petr@firma.cz"}},
		{"identity duplicate", func(st Store) error { return st.AddIdentity(ctx, "jan@firma.cz", "JAN.NOVAK@gmail.com") },
			ErrExists, []string{"jan.novak@gmail.com"}},
		{"identity invalid", func(st Store) error { return st.AddIdentity(ctx, "jan@firma.cz", "jan@gmail") },
			address.ErrInvalid, []string{"jan@gmail"}},
		{"identity remove unknown", func(st Store) error { return st.RemoveIdentity(ctx, "jan@firma.cz", "x@gmail.com") },
			ErrNotFound, []string{"x@gmail.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := fixture(t)
			before := dump(t, st)
			err := tt.op(st)
			if err == nil {
				t.Fatal("succeeded; want an error")
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if after := dump(t, st); after != before {
				t.Errorf("store changed by a refused change:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func TestDomains(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	for _, d := range []string{"Firma.CZ", "příklad.cz.", "xn--jin-noa.cz", "b.cz"} {
		if err := st.AddDomain(ctx, d); err != nil {
			t.Fatalf("AddDomain(%q): %v", d, err)
		}
	}
	got, err := st.Domains(ctx)
	want := []string{"b.cz", "firma.cz", "xn--jin-noa.cz", "xn--pklad-zsa96e.cz"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Domains = %q, %v; want %q", got, err, want)
	}
	// Removing by the Unicode form removes the A-label entry.
	if err := st.RemoveDomain(ctx, "PŘÍKLAD.cz", false); err != nil {
		t.Fatal(err)
	}
	got, _ = st.Domains(ctx)
	if want := []string{"b.cz", "firma.cz", "xn--jin-noa.cz"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after remove, Domains = %q; want %q", got, want)
	}
}

func TestAliases(t *testing.T) {
	ctx := context.Background()
	st := fixture(t)
	if err := st.AddAlias(ctx, "JINÝ.eu", "jiný.cz"); err != nil {
		t.Fatal(err)
	}
	all, err := st.Aliases(ctx, "")
	want := []Alias{{"firma.com", "firma.cz"}, {"firma.eu", "firma.cz"}, {"xn--jin-noa.eu", "xn--jin-noa.cz"}}
	if err != nil || !reflect.DeepEqual(all, want) {
		t.Fatalf("Aliases(\"\") = %v, %v; want %v", all, err, want)
	}
	one, err := st.Aliases(ctx, "Firma.CZ")
	if err != nil || !reflect.DeepEqual(one, want[:2]) {
		t.Fatalf("Aliases(firma.cz) = %v, %v; want %v", one, err, want[:2])
	}
	if _, err := st.Aliases(ctx, "firma.com"); !errors.Is(err, ErrConflict) {
		t.Errorf("Aliases(alias) error = %v; want ErrConflict", err)
	}
	if _, err := st.Aliases(ctx, "neznama.cz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Aliases(unknown) error = %v; want ErrNotFound", err)
	}
	if err := st.RemoveAlias(ctx, "FIRMA.COM."); err != nil {
		t.Fatal(err)
	}
	one, _ = st.Aliases(ctx, "firma.cz")
	if want := []Alias{{"firma.eu", "firma.cz"}}; !reflect.DeepEqual(one, want) {
		t.Fatalf("after remove, Aliases = %v; want %v", one, want)
	}
	// A removed alias may become a hosted domain.
	if err := st.AddDomain(ctx, "firma.com"); err != nil {
		t.Fatalf("AddDomain of a removed alias: %v", err)
	}
}

func TestDomainOf(t *testing.T) {
	ctx := context.Background()
	st := fixture(t)
	tests := []struct {
		name, want string
		err        error
	}{
		{"firma.cz", "firma.cz", nil},
		{"FIRMA.COM.", "firma.cz", nil},
		{"firma.eu", "firma.cz", nil},
		{"jiný.cz", "xn--jin-noa.cz", nil},
		{"praha.firma.cz", "", ErrNotFound}, // SPEC R6: no implied subdomains
		{"gmail.com", "", ErrNotFound},
		{"bad..name", "", address.ErrInvalid},
	}
	for _, tt := range tests {
		got, err := st.DomainOf(ctx, tt.name)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("DomainOf(%q) = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestAccounts(t *testing.T) {
	ctx := context.Background()
	st := fixture(t)
	created := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	st.now = func() time.Time { return created }
	if err := st.AddAccount(ctx, "Petr@JINÝ.cz", "{ARGON2ID}petr"); err != nil {
		t.Fatal(err)
	}

	acc, err := st.Account(ctx, "PETR@xn--jin-noa.cz")
	if err != nil {
		t.Fatal(err)
	}
	want := &Account{Address: "petr@xn--jin-noa.cz", Domain: "xn--jin-noa.cz", PasswordHash: "{ARGON2ID}petr",
		SMTPAccess: true, Created: created}
	if !acc.Created.Equal(created) {
		t.Errorf("Created = %v; want %v", acc.Created, created)
	}
	acc.Created = created
	if !reflect.DeepEqual(acc, want) {
		t.Errorf("Account = %+v; want %+v", acc, want)
	}

	// Account returns the domain's aliases and the identities.
	jan, err := st.Account(ctx, "jan@firma.cz")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"firma.com", "firma.eu"}; !reflect.DeepEqual(jan.Aliases, want) {
		t.Errorf("Aliases = %q; want %q", jan.Aliases, want)
	}
	if want := []string{"jan.novak@gmail.com"}; !reflect.DeepEqual(jan.Identities, want) || !jan.SMTPAccess {
		t.Errorf("Identities = %q, SMTPAccess %v; want %q, true", jan.Identities, jan.SMTPAccess, want)
	}

	// Password, access and identities change in place.
	if err := st.SetPassword(ctx, "JAN@firma.cz", "{BLF-CRYPT}new"); err != nil {
		t.Fatal(err)
	}
	if err := st.SetSMTPAccess(ctx, "jan@firma.cz", false); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{`"Jan Novák"@Seznam.cz`, "jan@příklad.cz"} {
		if err := st.AddIdentity(ctx, "jan@firma.cz", id); err != nil {
			t.Fatal(err)
		}
	}
	jan, _ = st.Account(ctx, "jan@firma.cz")
	wantIDs := []string{`"jan novák"@seznam.cz`, "jan.novak@gmail.com", "jan@xn--pklad-zsa96e.cz"}
	if jan.PasswordHash != "{BLF-CRYPT}new" || jan.SMTPAccess || !reflect.DeepEqual(jan.Identities, wantIDs) {
		t.Errorf("after changes: hash %q access %v identities %q; want {BLF-CRYPT}new false %q",
			jan.PasswordHash, jan.SMTPAccess, jan.Identities, wantIDs)
	}

	// Accounts lists all or one domain's, with identities; an identity whose
	// local part has a space stays one identity.
	list, err := st.Accounts(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range list {
		got = append(got, fmt.Sprintf("%s %s %v %q", a.Address, a.Domain, a.SMTPAccess, a.Identities))
	}
	wantList := []string{
		`eva@firma.cz firma.cz false []`,
		fmt.Sprintf("jan@firma.cz firma.cz false %q", wantIDs),
		`petr@xn--jin-noa.cz xn--jin-noa.cz true []`,
	}
	if !reflect.DeepEqual(got, wantList) {
		t.Errorf("Accounts(\"\") =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantList, "\n"))
	}
	list, err = st.Accounts(ctx, "jiný.cz")
	if err != nil || len(list) != 1 || list[0].Address != "petr@xn--jin-noa.cz" {
		t.Errorf("Accounts(jiný.cz) = %v, %v; want petr only", list, err)
	}
	if _, err := st.Accounts(ctx, "firma.com"); !errors.Is(err, ErrConflict) {
		t.Errorf("Accounts(alias) error = %v; want ErrConflict", err)
	}

	if err := st.RemoveIdentity(ctx, "jan@firma.cz", "JAN.NOVAK@GMAIL.COM"); err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveAccount(ctx, "Petr@Jiný.cz"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Account(ctx, "petr@jiný.cz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Account after remove: %v; want ErrNotFound", err)
	}
	jan, _ = st.Account(ctx, "jan@firma.cz")
	if want := []string{wantIDs[0], wantIDs[2]}; !reflect.DeepEqual(jan.Identities, want) {
		t.Errorf("Identities after remove = %q; want %q", jan.Identities, want)
	}
}

func TestRemoveDomainForce(t *testing.T) {
	ctx := context.Background()
	st := fixture(t)
	if err := st.RemoveDomain(ctx, "firma.cz", true); err != nil {
		t.Fatal(err)
	}
	// Aliases, accounts and identities go with the domain.
	if got := dump(t, st); !strings.HasPrefix(got, "xn--jin-noa.cz") || strings.Count(got, "\n") != 5 {
		t.Errorf("after forced remove the store holds:\n%s", got)
	}
	if _, err := st.DomainOf(ctx, "firma.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("alias survived its domain: %v", err)
	}
	// The names are free again, also as aliases.
	if err := st.AddAlias(ctx, "firma.cz", "jiný.cz"); err != nil {
		t.Errorf("reuse of a removed domain as alias: %v", err)
	}

	// A domain without accounts goes without -force, taking its aliases.
	if err := st.RemoveDomain(ctx, "jiný.cz", false); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, st); got != "--\n--\n--\n--\n" {
		t.Errorf("store not empty:\n%s", got)
	}
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
