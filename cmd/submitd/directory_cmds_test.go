package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"submitd/internal/testutil"
)

// jiří@firma.cz with precomposed letters (NFC) and with combining accents
// (NFD): the two look the same on a terminal.
const (
	jiriNFC = "ji\u0159\u00ed@firma.cz"
	jiriNFD = "jir\u030ci\u0301@firma.cz"
)

// TestAccountUnicodeForms: every verb takes the NFD spelling as the NFC
// account (SPEC §1), and adding the other spelling of an existing address is
// refused with a message naming the existing one.
func TestAccountUnicodeForms(t *testing.T) {
	c := newCLI(t, "bcrypt")
	const pw = "Heslo jiri 5"
	c.secrets = []string{pw}
	imp := filepath.Join(t.TempDir(), "accounts.tsv")
	if err := os.WriteFile(imp, []byte("zdene\u030ck@firma.cz\t"+sha512Vector+"\n"+jiriNFD+"\t"+sha512Vector+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.play([]step{
		{args: args("domain add firma.cz"), out: "added domain firma.cz\n"},
		{args: []string{"account", "add", jiriNFC}, stdin: pw + "\n", out: "added account " + jiriNFC + "\n"},
		{args: []string{"account", "add", jiriNFD}, stdin: pw + "\n", code: 1,
			errHas: []string{"account " + jiriNFC + ": already exists", `"jir\u030ci\u0301@firma.cz" is the same address in another Unicode normalization form`}},
	})
	// An import goes on after a bad line, so it is not one refused change.
	code, out, errOut := c.run("", "account", "import", imp)
	if want := imp + ":2: account " + jiriNFC + ": already exists"; code != 1 ||
		out != "imported 1 account(s), 1 line(s) failed\n" || !strings.Contains(errOut, want) {
		t.Fatalf("account import: exit %d\nstdout: %s\nstderr: %s\nwant a failed line 2 saying %q", code, out, errOut, want)
	}
	c.play([]step{
		{args: []string{"account", "identity", "add", jiriNFD, "JIR\u030cI\u0301@seznam.cz"},
			out: "added identity ji\u0159\u00ed@seznam.cz to " + jiriNFC + "\n"},
		{args: []string{"account", "identity", "add", jiriNFC, "ji\u0159\u00ed@seznam.cz"}, code: 1,
			errHas: []string{"identity ji\u0159\u00ed@seznam.cz of " + jiriNFC + ": already exists"}},
		{args: []string{"account", "disable", jiriNFD}, out: "disabled SMTP access of " + jiriNFC + "\n"},
		{args: args("account list"), out: jiriNFC + "\tdisabled\tji\u0159\u00ed@seznam.cz\n" +
			"zden\u011bk@firma.cz\tenabled\t-\n"},
		{args: args("account twins")},
	})
	c.checkPassword(jiriNFD, pw)
}

// TestAccountTwins: a directory an older version left with twins is migrated
// without merging them; support sees them marked in the listing and in
// "account twins", and removes the unwanted spelling.
func TestAccountTwins(t *testing.T) {
	c := newCLI(t, "bcrypt")
	const pw, pwNFD = "Heslo NFC 1", "Heslo NFD 2"
	c.secrets = []string{pw, pwNFD}
	c.play([]step{
		{args: args("domain add firma.cz"), out: "added domain firma.cz\n"},
		{args: []string{"account", "add", jiriNFC}, stdin: pw + "\n", out: "added account " + jiriNFC + "\n"},
		{args: args("account add nfd@firma.cz"), stdin: pwNFD + "\n", out: "added account nfd@firma.cz\n"},
	})
	// What an older version stored: the NFD spelling as given, next to the
	// NFC one. The schema was the same; only the data migration is pending.
	db := testutil.OpenDBIn(t, c.dataDir)
	for _, q := range []string{
		`UPDATE schema_version SET version = 1 WHERE component = 'directory'`,
		"UPDATE accounts SET address = '" + jiriNFD + "' WHERE address = 'nfd@firma.cz'",
		"INSERT INTO identities VALUES ('" + jiriNFD + "', 'jir\u030ci\u0301@seznam.cz')",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	const twinLine = `account jiří@firma.cz is stored 2 times: "jir\u030ci\u0301@firma.cz" "ji\u0159\u00ed@firma.cz"` + "\n"
	c.play([]step{
		{args: args("account list"), out: `"jir\u030ci\u0301@firma.cz" (twin)` + "\tenabled\t" + `"jir\u030ci\u0301@seznam.cz" (twin)` + "\n" +
			jiriNFC + "\tenabled\t-\n"},
		{args: args("account twins"), out: twinLine},
		// The migration ran once; the twins are still reported, and a login
		// reaches the NFC account.
		{args: args("account twins"), out: twinLine, check: func(c *cli) { c.checkPassword(jiriNFD, pw) }},
		{args: args("account twins remove jan@firma.cz"), code: 1, errHas: []string{`account "jan@firma.cz" is not one of two names`, "not found"}},
		{args: []string{"account", "remove", jiriNFD}, code: 1, errHas: []string{"account " + jiriNFC + " is stored 2 times", "account twins remove"}},
		{args: args("account twins list"), code: 2, errHas: []string{`unknown twins verb "list"`}},
		{args: args("account twins remove a b c"), code: 2, errHas: []string{"unexpected argument"}},
		// Support keeps the NFD account (its owner's password) under the NFC
		// name, with its identity.
		{args: []string{"account", "twins", "remove", `"ji\u0159\u00ed@firma.cz"`}, out: `removed account "ji\u0159\u00ed@firma.cz"` + "\n",
			check: func(c *cli) { c.checkPassword(jiriNFC, pwNFD) }},
		{args: args("account twins")},
		{args: args("account list"), out: jiriNFC + "\tenabled\tji\u0159\u00ed@seznam.cz\n"},
	})
}
