package directory

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"submitd/internal/sqlitedb"
	"submitd/internal/testutil"
)

// jiří@firma.cz in the two spellings that look the same: precomposed
// letters (NFC, as stored) and combining accents (NFD, as some keyboards,
// macOS file names and copy-and-paste produce it).
const (
	jiriNFC = "ji\u0159\u00ed@firma.cz"
	jiriNFD = "jir\u030ci\u0301@firma.cz"
)

// TestNFDIsNFC: every way into the directory treats the NFD spelling as the
// NFC account (SPEC §1), and adding the other spelling of an existing name
// is refused with a message that names the stored one.
func TestNFDIsNFC(t *testing.T) {
	ctx := context.Background()
	st := fixture(t)
	if err := st.AddAccount(ctx, jiriNFC, "{X}nfc"); err != nil {
		t.Fatal(err)
	}
	before := dump(t, st)
	err := st.AddAccount(ctx, jiriNFD, "{X}nfd")
	if !errors.Is(err, ErrExists) {
		t.Fatalf("AddAccount(NFD) = %v; want ErrExists", err)
	}
	for _, m := range []string{"account " + jiriNFC, `"jir\u030ci\u0301@firma.cz"`, "another Unicode normalization form"} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not say %q", err, m)
		}
	}
	if after := dump(t, st); after != before {
		t.Fatalf("refused add changed the store:\n%s", after)
	}

	// Login lookup, password change and access go to the NFC account.
	acc, err := st.Account(ctx, strings.ToUpper(jiriNFD))
	if err != nil || acc.Address != jiriNFC || acc.PasswordHash != "{X}nfc" {
		t.Fatalf("Account(NFD) = %+v, %v; want the NFC account", acc, err)
	}
	if err := st.SetPassword(ctx, jiriNFD, "{X}new"); err != nil {
		t.Fatal(err)
	}

	// Identities are stored in NFC and refused in the other spelling.
	if err := st.AddIdentity(ctx, jiriNFD, "Zdene\u030ck@seznam.cz"); err != nil {
		t.Fatal(err)
	}
	err = st.AddIdentity(ctx, jiriNFC, "zden\u011bk@seznam.cz")
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "identity zden\u011bk@seznam.cz of "+jiriNFC) {
		t.Fatalf("AddIdentity(NFC twin of an identity) = %v; want ErrExists naming it", err)
	}
	acc, _ = st.Account(ctx, jiriNFC)
	if want := []string{"zden\u011bk@seznam.cz"}; !reflect.DeepEqual(acc.Identities, want) || acc.PasswordHash != "{X}new" {
		t.Fatalf("account after changes = %+v; want hash {X}new, identities %+q", acc, want)
	}
	if err := st.RemoveIdentity(ctx, jiriNFC, "zdene\u030ck@seznam.cz"); err != nil {
		t.Fatalf("RemoveIdentity(NFD): %v", err)
	}
	if err := st.RemoveAccount(ctx, jiriNFD); err != nil {
		t.Fatalf("RemoveAccount(NFD): %v", err)
	}
	if _, err := st.Account(ctx, jiriNFC); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Account after RemoveAccount(NFD) = %v; want ErrNotFound", err)
	}
	if twins, err := st.Twins(ctx); err != nil || len(twins) != 0 {
		t.Fatalf("Twins = %v, %v; want none", twins, err)
	}
}

// oldDirectory returns a database as a version that stored local parts as
// given left it: the first schema version, and rows written by raw SQL.
func oldDirectory(t *testing.T, rows ...string) *SQLite {
	t.Helper()
	ctx := context.Background()
	db := testutil.OpenDB(t)
	if err := sqlitedb.Migrate(ctx, db, "directory", []string{migrations[0].SQL}); err != nil {
		t.Fatal(err)
	}
	for _, q := range rows {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return &SQLite{db: db}
}

// TestMigrateNFC: the migration brings names to NFC where that form is free,
// and leaves twins exactly as they were, reported by Twins.
func TestMigrateNFC(t *testing.T) {
	ctx := context.Background()
	old := oldDirectory(t,
		`INSERT INTO domains VALUES ('firma.cz', 1)`,
		// Twins: one account created in each spelling, each with its own
		// password and identity.
		`INSERT INTO accounts VALUES ('`+jiriNFC+`', 'firma.cz', '{X}nfc', 1, 1)`,
		`INSERT INTO accounts VALUES ('`+jiriNFD+`', 'firma.cz', '{X}nfd', 0, 2)`,
		`INSERT INTO identities VALUES ('`+jiriNFD+`', 'jiri@gmail.com')`,
		// Identity twins of one account.
		`INSERT INTO identities VALUES ('`+jiriNFC+"', 'ji\u0159\u00ed@seznam.cz')",
		`INSERT INTO identities VALUES ('`+jiriNFC+"', 'jir\u030ci\u0301@seznam.cz')",
		// An NFD account alone, with an NFD identity: both are renamed.
		"INSERT INTO accounts VALUES ('zdene\u030ck@firma.cz', 'firma.cz', '{X}zd', 1, 3)",
		"INSERT INTO identities VALUES ('zdene\u030ck@firma.cz', 'zdene\u030ck@seznam.cz')",
		"INSERT INTO identities VALUES ('zdene\u030ck@firma.cz', 'zdenek@gmail.com')",
		// U+1FEF (Greek varia) is canonically U+0060 (grave accent), so
		// this twin's normalized form is plain ASCII.
		"INSERT INTO accounts VALUES ('a`@firma.cz', 'firma.cz', '{X}ascii', 1, 4)",
		"INSERT INTO accounts VALUES ('a\u1fef@firma.cz', 'firma.cz', '{X}varia', 1, 5)",
		`INSERT INTO accounts VALUES ('jan@firma.cz', 'firma.cz', '{X}jan', 1, 6)`,
	)
	before := dump(t, old)
	st, err := NewSQLite(ctx, old.db)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := st.db.QueryRow(`SELECT version FROM schema_version WHERE component = 'directory'`).Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("version %d, %v; want %d", v, err, len(migrations))
	}
	twins, err := st.Twins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Twin{
		{Address: "a`@firma.cz", Stored: []string{"a`@firma.cz", "a\u1fef@firma.cz"}},
		{Address: jiriNFC, Stored: []string{jiriNFD, jiriNFC}},
		{Account: jiriNFC, Address: "ji\u0159\u00ed@seznam.cz", Stored: []string{"jir\u030ci\u0301@seznam.cz", "ji\u0159\u00ed@seznam.cz"}},
	}
	if !reflect.DeepEqual(twins, want) {
		t.Fatalf("Twins =\n%+q\nwant\n%+q", twins, want)
	}
	if got, w := twins[1].String(), `account jiří@firma.cz is stored 2 times: "jir\u030ci\u0301@firma.cz" "ji\u0159\u00ed@firma.cz"`; got != w {
		t.Errorf("Twin.String() = %s; want %s", got, w)
	}

	// Nothing was merged: the twins' rows are as they were, and only the
	// lone NFD account and identity changed, to NFC.
	after := dump(t, st)
	wantAfter := strings.NewReplacer("zdene\u030ck", "zden\u011bk").Replace(before)
	if after != wantAfter {
		t.Fatalf("after migration:\n%s\nwant:\n%s", after, wantAfter)
	}
	zd, err := st.Account(ctx, "zdene\u030ck@firma.cz")
	if err != nil || zd.Address != "zden\u011bk@firma.cz" || zd.PasswordHash != "{X}zd" ||
		!reflect.DeepEqual(zd.Identities, []string{"zdenek@gmail.com", "zden\u011bk@seznam.cz"}) {
		t.Fatalf("renamed account = %+v, %v", zd, err)
	}
	// Of a twin, the NFC one is the account a login reaches.
	if acc, err := st.Account(ctx, jiriNFD); err != nil || acc.PasswordHash != "{X}nfc" {
		t.Fatalf("Account(NFD) = %+v, %v; want the NFC twin", acc, err)
	}

	// Opening again finds the same twins and changes nothing.
	if _, err := NewSQLite(ctx, st.db); err != nil {
		t.Fatal(err)
	}
	if again, _ := st.Twins(ctx); !reflect.DeepEqual(again, want) || dump(t, st) != after {
		t.Fatalf("second open changed the twins or the store: %+q", again)
	}
}

// TestRemoveTwin: support removes the unwanted spelling of a twin; the one
// left takes the normalized form with its password and identities.
func TestRemoveTwin(t *testing.T) {
	ctx := context.Background()
	old := oldDirectory(t,
		`INSERT INTO domains VALUES ('firma.cz', 1)`,
		`INSERT INTO accounts VALUES ('`+jiriNFC+`', 'firma.cz', '{X}nfc', 1, 1)`,
		`INSERT INTO accounts VALUES ('`+jiriNFD+`', 'firma.cz', '{X}nfd', 1, 2)`,
		`INSERT INTO identities VALUES ('`+jiriNFD+"', 'jir\u030ci\u0301@gmail.com')",
		`INSERT INTO identities VALUES ('`+jiriNFD+`', 'jiri@seznam.cz')`,
		`INSERT INTO identities VALUES ('`+jiriNFD+"', 'jiri\u0301@seznam.cz')",
		`INSERT INTO accounts VALUES ('jan@firma.cz', 'firma.cz', '{X}jan', 1, 3)`,
	)
	st, err := NewSQLite(ctx, old.db)
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, st)
	for _, bad := range [][2]string{{"", "jan@firma.cz"}, {"", "jir\u030ci\u0301@firma.com"}, {jiriNFC, "jiri@seznam.cz"}} {
		if err := st.RemoveTwin(ctx, bad[0], bad[1]); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "submitd account twins") {
			t.Errorf("RemoveTwin(%+q, %+q) = %v; want ErrNotFound", bad[0], bad[1], err)
		}
	}
	// Removing a twin by its normalized name, in either spelling, would
	// leave the other one behind, unreachable: it is refused.
	for _, a := range []string{jiriNFC, jiriNFD} {
		err := st.RemoveAccount(ctx, a)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "account "+jiriNFC+" is stored 2 times") ||
			!strings.Contains(err.Error(), "submitd account twins remove") {
			t.Errorf("RemoveAccount(%+q) = %v; want ErrConflict naming the twin", a, err)
		}
	}
	if dump(t, st) != before {
		t.Fatal("refused RemoveTwin or RemoveAccount changed the store")
	}
	// The NFC account is the one nobody uses: it goes, and the NFD one
	// becomes jiří@firma.cz in NFC, keeping its password and identities.
	if err := st.RemoveTwin(ctx, "", jiriNFC); err != nil {
		t.Fatal(err)
	}
	acc, err := st.Account(ctx, jiriNFC)
	wantIDs := []string{"jiri@seznam.cz", "jir\u00ed@seznam.cz", "ji\u0159\u00ed@gmail.com"}
	if err != nil || acc.Address != jiriNFC || acc.PasswordHash != "{X}nfd" || !reflect.DeepEqual(acc.Identities, wantIDs) {
		t.Fatalf("account left = %+v, %v; want the NFD one under its NFC name with identities %+q", acc, err, wantIDs)
	}
	if twins, err := st.Twins(ctx); err != nil || len(twins) != 0 {
		t.Fatalf("Twins after removal = %+q, %v", twins, err)
	}
}

// TestRemoveIdentityTwin: identity twins are resolved the same way.
func TestRemoveIdentityTwin(t *testing.T) {
	ctx := context.Background()
	old := oldDirectory(t,
		`INSERT INTO domains VALUES ('firma.cz', 1)`,
		`INSERT INTO accounts VALUES ('jan@firma.cz', 'firma.cz', '{X}jan', 1, 3)`,
		"INSERT INTO identities VALUES ('jan@firma.cz', 'jir\u030ci\u0301@gmail.com')",
		"INSERT INTO identities VALUES ('jan@firma.cz', 'ji\u0159\u00ed@gmail.com')",
	)
	st, err := NewSQLite(ctx, old.db)
	if err != nil {
		t.Fatal(err)
	}
	if twins, _ := st.Twins(ctx); len(twins) != 1 || twins[0].Account != "jan@firma.cz" {
		t.Fatalf("Twins = %+q; want the identity twin of jan@firma.cz", twins)
	}
	if err := st.RemoveIdentity(ctx, "jan@firma.cz", "ji\u0159\u00ed@gmail.com"); !errors.Is(err, ErrConflict) {
		t.Fatalf("RemoveIdentity of a twin = %v; want ErrConflict", err)
	}
	if err := st.RemoveTwin(ctx, "JAN@firma.cz", "jir\u030ci\u0301@gmail.com"); err != nil {
		t.Fatal(err)
	}
	acc, _ := st.Account(ctx, "jan@firma.cz")
	if want := []string{"ji\u0159\u00ed@gmail.com"}; !reflect.DeepEqual(acc.Identities, want) {
		t.Fatalf("identities = %+q; want %+q", acc.Identities, want)
	}
	if twins, _ := st.Twins(ctx); len(twins) != 0 {
		t.Fatalf("Twins after removal = %+q", twins)
	}
}
