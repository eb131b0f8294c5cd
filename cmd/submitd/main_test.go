package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"submitd/internal/config"
	"submitd/internal/directory"
	"submitd/internal/password"
	"submitd/internal/sqlitedb"
	"submitd/internal/testutil"
)

// sha512Vector is the SHA-crypt reference vector for "Hello world!" (glibc's
// crypt(3) test suite; also what `openssl passwd -6 -salt saltstring` prints).
const sha512Vector = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"

// cli runs the submitd command line in-process against one data_dir.
type cli struct {
	t       *testing.T
	dataDir string
	cfg     string
	// secrets must never appear in any output.
	secrets []string
}

// newCLI writes a config whose data_dir is a fresh temporary directory.
// bcrypt at its default cost keeps the many password hashes fast; argon2id
// is exercised by TestAccountPasswordSchemes.
func newCLI(t *testing.T, scheme string) *cli {
	t.Helper()
	dir := t.TempDir()
	c := &cli{t: t, dataDir: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "submitd.toml")}
	body := fmt.Sprintf("data_dir = %q\n[auth]\npassword_scheme = %q\n", c.dataDir, scheme)
	if err := os.WriteFile(c.cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs "submitd args[0] -config CFG args[1:]..." with stdin.
func (c *cli) run(stdin string, args ...string) (code int, stdout, stderr string) {
	c.t.Helper()
	full := append([]string{args[0], "-config", c.cfg}, args[1:]...)
	var out, errb bytes.Buffer
	code = run(full, strings.NewReader(stdin), &out, &errb)
	for _, s := range c.secrets {
		if strings.Contains(out.String(), s) || strings.Contains(errb.String(), s) {
			c.t.Errorf("submitd %s: a password or hash appears in the output:\nstdout: %s\nstderr: %s",
				strings.Join(args, " "), out.String(), errb.String())
		}
	}
	return code, out.String(), errb.String()
}

// state is what the listing verbs show: it must not change when a command
// is refused.
func (c *cli) state() string {
	c.t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"domain", "list"}, {"alias", "list"}, {"account", "list"}} {
		code, out, errOut := c.run("", args...)
		if code != 0 {
			c.t.Fatalf("submitd %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		b.WriteString(out + "--\n")
	}
	return b.String()
}

// store opens the directory the CLI writes, to check what it stored.
func (c *cli) store() directory.Store {
	c.t.Helper()
	st, err := directory.NewSQLite(context.Background(), testutil.OpenDBIn(c.t, c.dataDir))
	if err != nil {
		c.t.Fatal(err)
	}
	return st
}

// checkPassword asserts that addr's stored hash verifies pw.
func (c *cli) checkPassword(addr, pw string) {
	c.t.Helper()
	acc, err := c.store().Account(context.Background(), addr)
	if err != nil {
		c.t.Fatalf("account %s: %v", addr, err)
	}
	if ok, err := password.Verify(acc.PasswordHash, pw); !ok || err != nil {
		c.t.Errorf("stored hash of %s does not verify %q: %v", addr, pw, err)
	}
}

// step is one command of a scripted session.
type step struct {
	args  []string
	stdin string
	code  int
	// out is the exact stdout.
	out string
	// errHas are substrings of stderr; a successful step must print nothing
	// there.
	errHas []string
	// check runs after the step.
	check func(c *cli)
}

func args(s string) []string { return strings.Fields(s) }

// play runs the steps in order. After each refused one it checks that the
// listings are unchanged.
func (c *cli) play(steps []step) {
	t := c.t
	t.Helper()
	for i, s := range steps {
		var before string
		if s.code != 0 {
			before = c.state()
		}
		code, out, errOut := c.run(s.stdin, s.args...)
		name := fmt.Sprintf("step %d: submitd %s", i+1, strings.Join(s.args, " "))
		if code != s.code {
			t.Errorf("%s: exit %d; want %d\nstdout: %s\nstderr: %s", name, code, s.code, out, errOut)
		}
		if out != s.out {
			t.Errorf("%s: stdout\n%q\nwant\n%q", name, out, s.out)
		}
		if s.code == 0 && errOut != "" {
			t.Errorf("%s: unexpected stderr %q", name, errOut)
		}
		for _, w := range s.errHas {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr %q does not mention %q", name, errOut, w)
			}
		}
		if s.code != 0 {
			if !strings.HasPrefix(errOut, "submitd ") {
				t.Errorf("%s: stderr %q does not start with the command name", name, errOut)
			}
			if after := c.state(); after != before {
				t.Errorf("%s: refused, but the listings changed:\nbefore:\n%s\nafter:\n%s", name, before, after)
			}
		}
		if s.check != nil {
			s.check(c)
		}
	}
}

func TestDomainAndAliasVerbs(t *testing.T) {
	c := newCLI(t, "bcrypt")
	c.play([]step{
		{args: args("domain add firma.cz"), out: "added domain firma.cz\n"},
		{args: args("domain add PŘÍKLAD.cz."), out: "added domain xn--pklad-zsa96e.cz\n"},
		{args: args("domain add Firma.CZ"), code: 1, errHas: []string{"firma.cz", "already exists"}},
		{args: args("domain add xn--pklad-zsa96e.cz"), code: 1, errHas: []string{"already exists"}},
		{args: args("domain add fir_ma.cz"), code: 1, errHas: []string{"fir_ma.cz", "'_'"}},
		{args: args("domain add localhost"), code: 1, errHas: []string{"localhost", "two labels"}},
		{args: args("domain add 192.0.2.1"), code: 1, errHas: []string{"IP addresses are not domain names"}},
		{args: args("domain add"), code: 2, errHas: []string{"missing argument", "Usage:"}},
		{args: args("domain add a.cz b.cz"), code: 2, errHas: []string{`unexpected argument "b.cz"`}},
		{args: args("domain rename a.cz"), code: 2, errHas: []string{`unknown verb "rename"`}},
		{args: args("domain"), code: 2, errHas: []string{"missing verb"}},
		{args: args("domain list extra"), code: 2, errHas: []string{`unexpected argument "extra"`}},
		{args: args("domain list"), out: "firma.cz\nxn--pklad-zsa96e.cz\n"},

		{args: args("alias add firma.com firma.cz"), out: "added alias firma.com of firma.cz\n"},
		{args: args("alias add Příklad.EU příklad.cz"), out: "added alias xn--pklad-zsa96e.eu of xn--pklad-zsa96e.cz\n"},
		{args: args("alias add firma.de neznama.cz"), code: 1, errHas: []string{"neznama.cz", "not found"}},
		{args: args("alias add firma.de firma.com"), code: 1, errHas: []string{"firma.com is an alias of firma.cz"}},
		{args: args("alias add příklad.cz firma.cz"), code: 1, errHas: []string{"xn--pklad-zsa96e.cz is a hosted domain"}},
		{args: args("alias add firma.com příklad.cz"), code: 1, errHas: []string{"firma.com", "already exists"}},
		{args: args("alias add firma.cz firma.cz"), code: 1, errHas: []string{"itself"}},
		{args: args("alias add firma..de firma.cz"), code: 1, errHas: []string{"empty label"}},
		{args: args("alias add firma.de"), code: 2, errHas: []string{"missing argument"}},
		{args: args("domain add firma.com"), code: 1, errHas: []string{"firma.com is already an alias of firma.cz"}},
		{args: args("alias list"), out: "firma.com\tfirma.cz\nxn--pklad-zsa96e.eu\txn--pklad-zsa96e.cz\n"},
		{args: args("alias list FIRMA.cz"), out: "firma.com\tfirma.cz\n"},
		{args: args("alias list neznama.cz"), code: 1, errHas: []string{"neznama.cz", "not found"}},
		{args: args("alias list firma.com"), code: 1, errHas: []string{"not a hosted domain"}},
		{args: args("alias remove firma.cz"), code: 1, errHas: []string{"firma.cz is a hosted domain"}},
		{args: args("alias remove firma.com"), out: "removed alias firma.com\n"},
		{args: args("alias remove firma.com"), code: 1, errHas: []string{"firma.com", "not found"}},
		{args: args("alias list"), out: "xn--pklad-zsa96e.eu\txn--pklad-zsa96e.cz\n"},

		// A domain without accounts goes without -force, and takes its aliases.
		{args: args("domain remove příklad.cz"), out: "removed domain xn--pklad-zsa96e.cz\n"},
		{args: args("alias list")},
		{args: args("domain remove příklad.cz"), code: 1, errHas: []string{"not found"}},
		{args: args("domain list"), out: "firma.cz\n"},
	})
}

func TestAccountVerbs(t *testing.T) {
	c := newCLI(t, "bcrypt")
	const janPw, evaPw, newPw = "Heslo jan 7Q!", "eva-Σ-heslo", "nové heslo 99"
	c.secrets = []string{janPw, evaPw, newPw, "second line"}
	c.play([]step{
		{args: args("domain add firma.cz"), out: "added domain firma.cz\n"},
		{args: args("domain add jiný.cz"), out: "added domain xn--jin-noa.cz\n"},
		{args: args("alias add firma.com firma.cz"), out: "added alias firma.com of firma.cz\n"},

		{args: args("account add Jan@Firma.cz"), stdin: janPw + "\n", out: "added account jan@firma.cz\n",
			check: func(c *cli) { c.checkPassword("jan@firma.cz", janPw) }},
		// Only the first line is the password; CRLF is not part of it.
		{args: args("account add eva@firma.cz"), stdin: evaPw + "\r\nsecond line\n", out: "added account eva@firma.cz\n",
			check: func(c *cli) { c.checkPassword("eva@firma.cz", evaPw) }},
		{args: args("account add JAN@firma.CZ"), stdin: "x\n", code: 1, errHas: []string{"jan@firma.cz", "already exists"}},
		{args: args(`account add "jan"@firma.cz`), stdin: "x\n", code: 1, errHas: []string{"already exists"}},
		{args: args("account add petr@firma.com"), stdin: "x\n", code: 1, errHas: []string{"petr@firma.com", "alias of firma.cz"}},
		{args: args("account add petr@neznama.cz"), stdin: "x\n", code: 1, errHas: []string{"petr@neznama.cz", "neznama.cz", "not found"}},
		{args: args("account add petr@praha.firma.cz"), stdin: "x\n", code: 1, errHas: []string{"praha.firma.cz", "not found"}},
		{args: args("account add firma.cz"), stdin: "x\n", code: 1, errHas: []string{"not a full address"}},
		{args: args("account add .petr@firma.cz"), stdin: "x\n", code: 1, errHas: []string{"leading, trailing or double dot"}},
		{args: args("account add petr@firma.cz"), stdin: "", code: 1, errHas: []string{"empty password"}},
		{args: args("account add petr@firma.cz"), stdin: "\nsecond line\n", code: 1, errHas: []string{"empty password"}},
		{args: args("account add"), code: 2, errHas: []string{"missing argument"}},
		{args: args("account add petr@firma.cz -force"), stdin: "x\n", code: 2, errHas: []string{"-force"}},
		{args: args("account list"), out: "eva@firma.cz\tenabled\t-\njan@firma.cz\tenabled\t-\n"},

		{args: args("account disable EVA@firma.cz"), out: "disabled SMTP access of eva@firma.cz\n"},
		{args: args("account disable nikdo@firma.cz"), code: 1, errHas: []string{"nikdo@firma.cz", "not found"}},
		{args: args("account disable"), code: 2, errHas: []string{"missing argument"}},
		{args: args("account identity add jan@firma.cz Jan.Novak@Gmail.com"), out: "added identity jan.novak@gmail.com to jan@firma.cz\n"},
		{args: args("account identity add jan@firma.cz jan@příklad.cz"), out: "added identity jan@xn--pklad-zsa96e.cz to jan@firma.cz\n"},
		{args: args("account identity add jan@firma.cz JAN.NOVAK@gmail.com"), code: 1, errHas: []string{"jan.novak@gmail.com", "already exists"}},
		{args: args("account identity add jan@firma.cz gmail.com"), code: 1, errHas: []string{"not a full address"}},
		{args: args("account identity add nikdo@firma.cz x@gmail.com"), code: 1, errHas: []string{"nikdo@firma.cz", "not found"}},
		{args: args("account identity add jan@firma.cz"), code: 2, errHas: []string{"missing argument"}},
		{args: args("account identity rename jan@firma.cz"), code: 2, errHas: []string{`unknown identity verb "rename"`}},
		{args: args("account identity"), code: 2, errHas: []string{"missing identity verb"}},
		{args: args("account identity list jan@firma.cz"), out: "jan.novak@gmail.com\njan@xn--pklad-zsa96e.cz\n"},
		{args: args("account identity list eva@firma.cz")},
		{args: args("account identity list nikdo@firma.cz"), code: 1, errHas: []string{"not found"}},
		{args: args("account list firma.cz"),
			out: "eva@firma.cz\tdisabled\t-\njan@firma.cz\tenabled\tjan.novak@gmail.com,jan@xn--pklad-zsa96e.cz\n"},
		{args: args("account list jiný.cz")},
		{args: args("account list firma.com"), code: 1, errHas: []string{"firma.com is an alias of firma.cz"}},
		{args: args("account list neznama.cz"), code: 1, errHas: []string{"not found"}},
		{args: args("account enable eva@firma.cz"), out: "enabled SMTP access of eva@firma.cz\n"},

		{args: args("account passwd Jan@firma.cz"), stdin: newPw + "\n", out: "changed password of jan@firma.cz\n",
			check: func(c *cli) { c.checkPassword("jan@firma.cz", newPw) }},
		{args: args("account passwd nikdo@firma.cz"), stdin: "x\n", code: 1, errHas: []string{"not found"}},
		{args: args("account passwd jan@firma.cz"), stdin: "", code: 1, errHas: []string{"empty password"},
			check: func(c *cli) { c.checkPassword("jan@firma.cz", newPw) }},

		{args: args("account identity remove jan@firma.cz JAN.NOVAK@gmail.com"), out: "removed identity jan.novak@gmail.com from jan@firma.cz\n"},
		{args: args("account identity remove jan@firma.cz x@gmail.com"), code: 1, errHas: []string{"x@gmail.com", "not found"}},
		{args: args("account identity list jan@firma.cz"), out: "jan@xn--pklad-zsa96e.cz\n"},

		{args: args("domain remove firma.cz"), code: 1, errHas: []string{"firma.cz has 2 account(s)", "-force"}},
		{args: args("account remove eva@firma.cz"), out: "removed account eva@firma.cz\n"},
		{args: args("account remove eva@firma.cz"), code: 1, errHas: []string{"eva@firma.cz", "not found"}},
		{args: args("account frobnicate"), code: 2, errHas: []string{`unknown verb "frobnicate"`}},
		{args: args("domain remove firma.cz -force"), out: "removed domain firma.cz\n"},
		{args: args("account list")},
		{args: args("alias list")},
		{args: args("domain list"), out: "xn--jin-noa.cz\n"},
	})
}

// TestAccountPasswordSchemes checks that new passwords are hashed with the
// configured scheme.
func TestAccountPasswordSchemes(t *testing.T) {
	for _, tt := range []struct{ scheme, prefix string }{
		{"argon2id", "{ARGON2ID}$argon2id$"},
		{"bcrypt", "{BLF-CRYPT}$2"},
	} {
		t.Run(tt.scheme, func(t *testing.T) {
			c := newCLI(t, tt.scheme)
			c.secrets = []string{"pw-" + tt.scheme}
			c.play([]step{
				{args: args("domain add firma.cz"), out: "added domain firma.cz\n"},
				{args: args("account add jan@firma.cz"), stdin: "pw-" + tt.scheme + "\n", out: "added account jan@firma.cz\n"},
			})
			c.checkPassword("jan@firma.cz", "pw-"+tt.scheme)
			acc, _ := c.store().Account(context.Background(), "jan@firma.cz")
			if !strings.HasPrefix(acc.PasswordHash, tt.prefix) {
				t.Errorf("hash %q does not start with %q", acc.PasswordHash, tt.prefix)
			}
		})
	}
}

func TestAccountImport(t *testing.T) {
	c := newCLI(t, "bcrypt")
	argon, err := password.Hash("argon2id", "pw-jan")
	if err != nil {
		t.Fatal(err)
	}
	bcr, err := password.Hash("bcrypt", "pw-eva")
	if err != nil {
		t.Fatal(err)
	}
	bcrAnna, err := password.Hash("bcrypt", "pw-anna")
	if err != nil {
		t.Fatal(err)
	}
	badHash := "{SHA512-CRYPT}$6$saltstring$tooshort"
	c.secrets = []string{argon, bcr, bcrAnna, sha512Vector, badHash, "$6$saltstring"}
	c.play([]step{
		{args: args("domain add firma.cz"), out: "added domain firma.cz\n"},
		{args: args("domain add příklad.cz"), out: "added domain xn--pklad-zsa96e.cz\n"},
		{args: args("alias add firma.com firma.cz"), out: "added alias firma.com of firma.cz\n"},
		{args: args("account add eva@firma.cz"), stdin: "pw-old\n", out: "added account eva@firma.cz\n"},
	})

	lines := []string{
		"# exported from the old server", // 1
		"jan@firma.cz\t" + argon,         // 2 ok
		"",                               // 3
		"Petr@Firma.cz\t{SHA512-CRYPT}" + sha512Vector,      // 4 ok
		"anna@příklad.cz\t" + bcrAnna + "  ",                // 5 ok, trailing blanks
		"missing-tab@firma.cz " + bcr,                       // 6 no tab
		"x@firma.cz\t{MD5}1a1dc91c907325c69271ddf0c944bc72", // 7 unknown scheme
		"y@firma.cz\t" + badHash,                            // 8 malformed
		"z@neznama.cz\t" + bcr,                              // 9 unknown domain
		"JAN@firma.cz\t" + bcr,                              // 10 duplicate of line 2
		"w@firma.com\t" + bcr,                               // 11 alias domain
		"eva@firma.cz\t" + bcr,                              // 12 existing account
		"q@firma.cz\t",                                      // 13 no hash
		"not-an-address\t" + bcr,                            // 14
	}
	file := filepath.Join(t.TempDir(), "accounts.tsv")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := c.run("", "account", "import", file)
	if code != 1 {
		t.Errorf("import exit %d; want 1", code)
	}
	if want := "imported 3 account(s), 9 line(s) failed\n"; out != want {
		t.Errorf("import stdout %q; want %q", out, want)
	}
	wantErr := map[int]string{
		6:  "address<TAB>{SCHEME}hash",
		7:  "unknown password scheme",
		8:  "malformed",
		9:  "neznama.cz",
		10: "already exists",
		11: "alias of firma.cz",
		12: "already exists",
		13: "address<TAB>{SCHEME}hash",
		14: "not a full address",
	}
	errLines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if len(errLines) != len(wantErr) {
		t.Errorf("stderr has %d lines; want one per bad line (%d):\n%s", len(errLines), len(wantErr), errOut)
	}
	for n, why := range wantErr {
		prefix := fmt.Sprintf("%s:%d: ", file, n)
		found := false
		for _, l := range errLines {
			if strings.HasPrefix(l, prefix) {
				found = true
				if !strings.Contains(l, why) {
					t.Errorf("line %d reported as %q; want it to mention %q", n, l, why)
				}
			}
		}
		if !found {
			t.Errorf("line %d not reported; stderr:\n%s", n, errOut)
		}
	}
	c.play([]step{{args: args("account list"), out: "eva@firma.cz\tenabled\t-\njan@firma.cz\tenabled\t-\n" +
		"petr@firma.cz\tenabled\t-\nanna@xn--pklad-zsa96e.cz\tenabled\t-\n"}})
	c.checkPassword("jan@firma.cz", "pw-jan")
	c.checkPassword("petr@firma.cz", "Hello world!")
	c.checkPassword("anna@příklad.cz", "pw-anna")
	c.checkPassword("eva@firma.cz", "pw-old") // not overwritten by line 12

	// "-" reads stdin; a clean file exits 0.
	code, out, errOut = c.run("# only good lines\r\nola@firma.cz\t"+bcr+"\r\n", "account", "import", "-")
	if code != 0 || out != "imported 1 account(s), 0 line(s) failed\n" || errOut != "" {
		t.Errorf("import - = %d, %q, %q", code, out, errOut)
	}
	c.checkPassword("ola@firma.cz", "pw-eva")

	// A file that cannot be read changes nothing.
	before := c.state()
	code, _, errOut = c.run("", "account", "import", filepath.Join(t.TempDir(), "missing.tsv"))
	if code != 1 || !strings.Contains(errOut, "missing.tsv") {
		t.Errorf("import of a missing file = %d, %q", code, errOut)
	}
	if c.state() != before {
		t.Error("import of a missing file changed the directory")
	}
}

// importFile writes body to a file, imports it, and returns the result.
func (c *cli) importFile(body string) (file string, code int, out, errOut string) {
	c.t.Helper()
	file = filepath.Join(c.t.TempDir(), "accounts.tsv")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		c.t.Fatal(err)
	}
	code, out, errOut = c.run("", "account", "import", file)
	return file, code, out, errOut
}

// TestAccountImportBOM imports a file as Windows editors and Excel's "UTF-8"
// CSV write it: a byte order mark, then CRLF lines. The mark is not part of
// the first address (it was stored in it, an account nobody could log in to
// and that "account list | grep ^jan@" did not find).
func TestAccountImportBOM(t *testing.T) {
	c := newCLI(t, "bcrypt")
	bcr, err := password.Hash("bcrypt", "pw-x")
	if err != nil {
		t.Fatal(err)
	}
	c.secrets = []string{bcr}
	c.play([]step{{args: args("domain add firma.cz"), out: "added domain firma.cz\n"}})
	_, code, out, errOut := c.importFile("\ufeffjan@firma.cz\t" + bcr + "\r\neva@firma.cz\t" + bcr + "\r\n")
	if code != 0 || out != "imported 2 account(s), 0 line(s) failed\n" || errOut != "" {
		t.Errorf("import = %d, %q, %q", code, out, errOut)
	}
	c.play([]step{{args: args("account list"), out: "eva@firma.cz\tenabled\t-\njan@firma.cz\tenabled\t-\n"}})
	c.checkPassword("jan@firma.cz", "pw-x")
}

// TestAccountImportLongLine checks that one line far longer than any hash is
// one bad line: reported with its number, briefly, and the lines after it
// are still imported (it stopped the import there, without a line number or
// the summary).
func TestAccountImportLongLine(t *testing.T) {
	c := newCLI(t, "bcrypt")
	bcr, err := password.Hash("bcrypt", "pw-x")
	if err != nil {
		t.Fatal(err)
	}
	c.secrets = []string{bcr}
	c.play([]step{{args: args("domain add firma.cz"), out: "added domain firma.cz\n"}})
	file, code, out, errOut := c.importFile("jan@firma.cz\t" + bcr + "\n" +
		"long@firma.cz\t" + strings.Repeat("x", 2<<20) + "\n" +
		"eva@firma.cz\t" + bcr + "\n")
	if code != 1 || out != "imported 2 account(s), 1 line(s) failed\n" {
		t.Errorf("import = %d, %q, %q; want 1, 2 imported, 1 failed", code, out, errOut)
	}
	if !strings.HasPrefix(errOut, file+":2: ") || strings.Count(errOut, "\n") != 1 || len(errOut) > 500 {
		t.Errorf("stderr %.300q; want one short line reporting line 2", errOut)
	}
	c.play([]step{{args: args("account list"), out: "eva@firma.cz\tenabled\t-\njan@firma.cz\tenabled\t-\n"}})
}

// TestNoDatabase runs the commands against a data_dir that holds no
// database, as support does from the wrong directory or with the wrong
// config: they fail and say where they looked, instead of creating an empty
// database there and reporting an empty directory, no blocks and unknown
// sessions. Only "domain add", the first step of a setup, creates it.
func TestNoDatabase(t *testing.T) {
	c := newCLI(t, "bcrypt")
	for _, a := range []string{
		"domain list", "domain remove firma.cz", "alias list", "alias add firma.com firma.cz",
		"account list", "account add jan@firma.cz", "account disable jan@firma.cz",
		"account identity list jan@firma.cz", "account import -",
		"blocked", "unblock 192.0.2.1", "session piWs1j0010jifNx01iWsdh", "dkim list",
	} {
		code, out, errOut := c.run("pw\n", args(a)...)
		if code != 1 || out != "" || !strings.Contains(errOut, "no database") || !strings.Contains(errOut, c.dataDir) {
			t.Errorf("submitd %s = %d, %q, %q; want 1 and a message naming %s", a, code, out, errOut, c.dataDir)
		}
		if _, err := os.Stat(c.dataDir); err == nil {
			t.Fatalf("submitd %s created %s", a, c.dataDir)
		}
	}
	c.play([]step{
		{args: args("domain add firma.cz"), out: "added domain firma.cz\n"},
		{args: args("blocked")},
		{args: args("domain list"), out: "firma.cz\n"},
	})
}

// TestConfigSelection checks which config file the CLI reads: -config, else
// $SUBMITD_CONFIG, else ./submitd.toml, else the built-in defaults.
func TestConfigSelection(t *testing.T) {
	root := t.TempDir()
	t.Chdir(root)
	write := func(name, dataDir string) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("data_dir = %q\n", dataDir)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flagCfg := write("flag.toml", filepath.Join(root, "flag-data"))
	envCfg := write("env.toml", filepath.Join(root, "env-data"))
	sub := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(args, strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	exists := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, sqlitedb.FileName))
		return err == nil
	}

	// No flag, no variable, no ./submitd.toml: the defaults (data_dir ./data).
	t.Setenv(config.EnvVar, "")
	if code, _, errOut := sub("domain", "add", "default.cz"); code != 0 {
		t.Fatalf("with defaults: exit %d: %s", code, errOut)
	}
	if !exists(filepath.Join(root, "data")) {
		t.Errorf("defaults did not use ./data")
	}

	// ./submitd.toml beats the defaults.
	write(config.DefaultFile, filepath.Join(root, "cwd-data"))
	if code, _, errOut := sub("domain", "add", "cwd.cz"); code != 0 {
		t.Fatalf("with ./submitd.toml: exit %d: %s", code, errOut)
	}
	// $SUBMITD_CONFIG beats ./submitd.toml.
	t.Setenv(config.EnvVar, envCfg)
	if code, _, errOut := sub("domain", "add", "env.cz"); code != 0 {
		t.Fatalf("with $%s: exit %d: %s", config.EnvVar, code, errOut)
	}
	// -config beats $SUBMITD_CONFIG, before or after the arguments.
	if code, _, errOut := sub("domain", "-config", flagCfg, "add", "flag.cz"); code != 0 {
		t.Fatalf("with -config: exit %d: %s", code, errOut)
	}
	if code, _, errOut := sub("domain", "add", "flag2.cz", "-config", flagCfg); code != 0 {
		t.Fatalf("with -config last: exit %d: %s", code, errOut)
	}

	for cfg, want := range map[string]string{
		filepath.Join(root, "missing-so-unused.toml"): "",
		flagCfg:            "flag.cz\nflag2.cz\n",
		envCfg:             "env.cz\n",
		config.DefaultFile: "cwd.cz\n",
	} {
		if want == "" {
			continue
		}
		code, out, errOut := sub("domain", "list", "-config", cfg)
		if code != 0 || out != want {
			t.Errorf("domain list -config %s = %d, %q, %q; want %q", cfg, code, out, errOut, want)
		}
	}
	t.Setenv(config.EnvVar, "")
	if code, out, _ := sub("domain", "list"); code != 0 || out != "cwd.cz\n" {
		t.Errorf("domain list with ./submitd.toml = %d, %q", code, out)
	}
	os.Remove(config.DefaultFile)
	if code, out, _ := sub("domain", "list"); code != 0 || out != "default.cz\n" {
		t.Errorf("domain list with defaults = %d, %q", code, out)
	}

	// A bad file stops every command with a message naming the key, and a
	// missing one named by the variable is an error, not the defaults.
	bad := filepath.Join(root, "bad.toml")
	os.WriteFile(bad, []byte("data_dir = \"x\"\nlisten.smtpp = \"127.0.0.1:25\"\n"), 0o600)
	if code, out, errOut := sub("domain", "list", "-config", bad); code != 1 || out != "" ||
		!strings.Contains(errOut, "unknown key listen.smtpp") {
		t.Errorf("bad config: %d, %q, %q", code, out, errOut)
	}
	t.Setenv(config.EnvVar, filepath.Join(root, "nope.toml"))
	if code, _, errOut := sub("domain", "list"); code != 1 || !strings.Contains(errOut, "nope.toml") {
		t.Errorf("missing $%s file: %d, %q", config.EnvVar, code, errOut)
	}
}

func TestHelp(t *testing.T) {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, want := range []string{"account", "alias", "domain", "serve", "session"} {
		if commands[want] == nil {
			t.Errorf("command %q is not registered", want)
		}
	}

	for _, h := range []string{"help", "-h", "--help"} {
		var out, errb bytes.Buffer
		if code := run([]string{h}, strings.NewReader(""), &out, &errb); code != 0 {
			t.Errorf("submitd %s: exit %d", h, code)
		}
		for _, n := range names {
			if !strings.Contains(out.String(), "\n  "+n+" ") {
				t.Errorf("submitd %s does not list %q:\n%s", h, n, out.String())
			}
		}
	}
	var out, errb bytes.Buffer
	if code := run(nil, strings.NewReader(""), &out, &errb); code != 2 || !strings.Contains(errb.String(), "Commands:") || out.Len() != 0 {
		t.Errorf("submitd with no command: exit %d, stdout %q, stderr %q; want 2 and help on stderr", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"frobnicate"}, strings.NewReader(""), &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, errb.String())
	}

	// Every command has -h, exits 0 and prints its usage and the -config flag.
	for _, n := range names {
		for _, a := range [][]string{{n, "-h"}, {n, "--help"}, {"help", n}} {
			var out, errb bytes.Buffer
			code := run(a, strings.NewReader(""), &out, &errb)
			all := out.String() + errb.String()
			if code != 0 || !strings.Contains(all, "Usage:\n  submitd "+n) {
				t.Errorf("submitd %s: exit %d, output:\n%s", strings.Join(a, " "), code, all)
			}
			if a[0] == n && !strings.Contains(all, "-config") {
				t.Errorf("submitd %s does not describe -config:\n%s", strings.Join(a, " "), all)
			}
		}
	}
	// The usage of the directory commands names every verb of the issue.
	for n, verbs := range map[string][]string{
		"domain":  {"domain add DOMAIN", "domain remove [-force] DOMAIN", "domain list"},
		"alias":   {"alias add ALIAS DOMAIN", "alias remove ALIAS", "alias list [DOMAIN]"},
		"account": {"account add ADDRESS", "account passwd ADDRESS", "account disable ADDRESS", "account enable ADDRESS", "account identity add ADDRESS EXTRA_ADDRESS", "account identity remove ADDRESS EXTRA_ADDRESS", "account identity list ADDRESS", "account list [DOMAIN]", "account remove ADDRESS", "account import FILE"},
	} {
		var out, errb bytes.Buffer
		run([]string{n, "-h"}, strings.NewReader(""), &out, &errb)
		for _, v := range verbs {
			if !strings.Contains(errb.String(), "submitd "+v) {
				t.Errorf("submitd %s -h does not show %q", n, v)
			}
		}
	}
}
