package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"submitd/internal/testutil"
)

// jiří@firma.cz with precomposed letters (NFC) and with combining accents
// (NFD, as a Mac keyboard or a pasted address may produce it).
const (
	jiriNFC = "ji\u0159\u00ed@firma.cz"
	jiriNFD = "jir\u030ci\u0301@firma.cz"
)

// TestNFDLogin: a client that sends the login in NFD logs in to the account
// created in NFC, and may send as it (SPEC §1, R2, R5).
func TestNFDLogin(t *testing.T) {
	s := newServer(t, "")
	s.mustCLI("", "domain", "add", "firma.cz")
	s.mustCLI(e2ePassword+"\n", "account", "add", jiriNFC)
	s.start()

	for _, login := range []string{jiriNFD, strings.ToUpper(jiriNFD), jiriNFC} {
		c := openRaw(t, s.subs, nil, true)
		c.expect(authPlain(login, e2ePassword), "235 ")
		c.expect("MAIL FROM:<"+jiriNFD+"> SMTPUTF8", "250 ")
		c.expect("QUIT", "221 ")
	}
	// AUTH LOGIN sends the login on its own line.
	c := openRaw(t, s.subs, nil, true)
	c.expect("AUTH LOGIN", "334 ")
	c.expect(b64(jiriNFD), "334 ")
	c.expect(b64(e2ePassword), "235 ")
	c.expect("QUIT", "221 ")
	// A wrong password is still "failed", not "rejected": the login is
	// known in either spelling (R4).
	c = openRaw(t, s.subs, nil, true)
	if got := c.cmd(authPlain(jiriNFD, "spatne")); !strings.HasPrefix(got, "535 5.1.0 ") || !strings.HasSuffix(got, " authentication failed") {
		t.Fatalf("wrong password for the NFD login: %q", got)
	}
	// The NFD spelling cannot become a second account.
	out, errOut, code := s.cli(e2ePassword+"\n", "account", "add", jiriNFD)
	if code != 1 || !strings.Contains(errOut, "account "+jiriNFC+": already exists") {
		t.Fatalf("account add of the NFD spelling: exit %d\n%s%s", code, out, errOut)
	}
}

// TestTwinsWarning: a directory an older version left with an account stored
// in both spellings is not merged on upgrade; serve warns of it at start,
// and a login in either spelling reaches the NFC account.
func TestTwinsWarning(t *testing.T) {
	s := newServer(t, "")
	s.mustCLI("", "domain", "add", "firma.cz")
	s.mustCLI(e2ePassword+"\n", "account", "add", jiriNFC)
	const nfdPassword = "heslo NFD dvojcete"
	s.mustCLI(nfdPassword+"\n", "account", "add", "dvojce@firma.cz")
	// As an older version would have stored it; the schema is the same,
	// only the data migration is pending.
	db := testutil.OpenDBIn(t, filepath.Join(s.dir, "data"))
	for _, q := range []string{
		`UPDATE schema_version SET version = 1 WHERE component = 'directory'`,
		"UPDATE accounts SET address = '" + jiriNFD + "' WHERE address = 'dvojce@firma.cz'",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s.start()
	log := s.log.String()
	for _, want := range []string{"level=WARN", "twin.address=" + jiriNFC, `twin.stored=jir\u030ci\u0301@firma.cz,ji\u0159\u00ed@firma.cz`, "submitd account twins"} {
		if !strings.Contains(log, want) {
			t.Fatalf("start log lacks %q:\n%s", want, log)
		}
	}
	c := openRaw(t, s.subs, nil, true)
	c.expect(authPlain(jiriNFD, e2ePassword), "235 ")
	c = openRaw(t, s.subs, nil, true)
	if got := c.cmd(authPlain(jiriNFD, nfdPassword)); !strings.HasSuffix(got, " authentication failed") {
		t.Fatalf("the NFD twin's password: %q; want failed (the login is the NFC account)", got)
	}
	out := s.mustCLI("", "account", "twins")
	if want := `account jiří@firma.cz is stored 2 times: "jir\u030ci\u0301@firma.cz" "ji\u0159\u00ed@firma.cz"` + "\n"; out != want {
		t.Fatalf("account twins:\n%s\nwant\n%s", out, want)
	}
}
