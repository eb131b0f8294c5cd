package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/term"

	"submitd/internal/address"
	"submitd/internal/config"
	"submitd/internal/directory"
	"submitd/internal/node"
	"submitd/internal/password"
	"submitd/internal/sqlitedb"
)

func init() {
	register(&command{
		name:    "domain",
		summary: "manage hosted domains",
		usage:   "domain add DOMAIN\ndomain remove [-force] DOMAIN\ndomain list",
		run:     runDomain,
	})
	register(&command{
		name:    "alias",
		summary: "manage alias domains (each belongs to one hosted domain)",
		usage:   "alias add ALIAS DOMAIN\nalias remove ALIAS\nalias list [DOMAIN]",
		run:     runAlias,
	})
	register(&command{
		name:    "account",
		summary: "manage accounts (mailboxes that may send)",
		usage: `account add ADDRESS          (password: prompted on a terminal, else the first line of stdin)
			account passwd ADDRESS
			account disable ADDRESS
			account enable ADDRESS
			account remove ADDRESS
			account list [DOMAIN]
			account identity add ADDRESS EXTRA_ADDRESS
			account identity remove ADDRESS EXTRA_ADDRESS
			account identity list ADDRESS
			account import FILE          (lines "address<TAB>{SCHEME}hash"; "-" reads stdin)
			account twins                (names stored twice, differing only in Unicode normalization)
			account twins remove [ADDRESS] STORED   (remove one stored form of a twin: an account, or ADDRESS's identity)`,
		run: runAccount,
	})
}

// openDB opens the configured SQLite database. Unless e.createDB, it must
// exist: a command run from the wrong directory or with the wrong config
// would otherwise create an empty one and report no domains, no blocks and
// no sessions, as if that were the truth.
func (e *env) openDB() (*config.Config, *sql.DB, error) {
	cfg, err := e.config()
	if err != nil {
		return nil, nil, err
	}
	if !e.createDB {
		p := filepath.Join(cfg.DataDir, sqlitedb.FileName)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			from := "the built-in defaults"
			if f := config.Path(*e.configPath); f != "" {
				from = f
			}
			return nil, nil, fmt.Errorf("no database at %s (data_dir %q from %s); check -config, or create it with \"submitd domain add\"", p, cfg.DataDir, from)
		}
	}
	db, err := sqlitedb.OpenDir(cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	return cfg, db, nil
}

// stores opens the shared stores [store] names: in the SQLite database
// (which must exist, see openDB) or in PostgreSQL, where data_dir is not
// needed. done closes what was opened.
func (e *env) stores() (*config.Config, *node.Stores, func(), error) {
	cfg, err := e.config()
	if err != nil {
		return nil, nil, nil, err
	}
	var db *sql.DB
	if cfg.Store.Driver != "postgres" {
		if _, db, err = e.openDB(); err != nil {
			return nil, nil, nil, err
		}
	}
	st, err := node.OpenStores(context.Background(), cfg, db)
	done := func() {
		if db != nil {
			db.Close()
		}
	}
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return cfg, st, func() { st.Close(); done() }, nil
}

// directory opens the configured directory store.
func (e *env) directory() (*config.Config, directory.Store, func(), error) {
	cfg, st, done, err := e.stores()
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, st.Directory, done, nil
}

// verb splits "VERB ARGS..." and parses flags.
func (e *env) verb(args []string) (string, []string, error) {
	pos, err := e.parse(args)
	if err != nil {
		return "", nil, err
	}
	if len(pos) == 0 {
		return "", nil, usageError("missing verb")
	}
	return pos[0], pos[1:], nil
}

func runDomain(e *env, args []string) error {
	force := e.fs.Bool("force", false, "remove a domain even if it has accounts (they are removed too)")
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch verb {
	case "add", "remove":
		if err := want(args, 1, 1); err != nil {
			return err
		}
		if verb == "add" {
			// Adding the first domain is the first step of a setup.
			e.createDB = true
			return e.change("POST", "/api/v1/domains", map[string]string{"name": args[0]})
		}
		return e.change("DELETE", fmt.Sprintf("/api/v1/domains/%s?force=%t", p(args[0]), *force), nil)
	case "list":
		if err := want(args, 0, 0); err != nil {
			return err
		}
		_, st, done, err := e.directory()
		if err != nil {
			return err
		}
		defer done()
		ds, err := st.Domains(ctx)
		if err != nil {
			return err
		}
		for _, d := range ds {
			fmt.Fprintln(e.stdout, d)
		}
		return nil
	}
	return usageError(fmt.Sprintf("unknown verb %q", verb))
}

func runAlias(e *env, args []string) error {
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var n, max int
	switch verb {
	case "add":
		n, max = 2, 2
	case "remove":
		n, max = 1, 1
	case "list":
		n, max = 0, 1
	default:
		return usageError(fmt.Sprintf("unknown verb %q", verb))
	}
	if err := want(args, n, max); err != nil {
		return err
	}
	switch verb {
	case "add":
		return e.change("POST", "/api/v1/domains/"+p(args[1])+"/aliases", map[string]string{"alias": args[0]})
	case "remove":
		return e.change("DELETE", "/api/v1/aliases/"+p(args[0]), nil)
	}
	_, st, done, err := e.directory()
	if err != nil {
		return err
	}
	defer done()
	switch verb {
	case "list":
		dom := ""
		if len(args) == 1 {
			dom = args[0]
		}
		as, err := st.Aliases(ctx, dom)
		if err != nil {
			return err
		}
		for _, a := range as {
			fmt.Fprintf(e.stdout, "%s\t%s\n", a.Name, a.Domain)
		}
	}
	return nil
}

func runAccount(e *env, args []string) error {
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	withStore := func(min, max int, f func(cfg *config.Config, st directory.Store) error) error {
		if err := want(args, min, max); err != nil {
			return err
		}
		cfg, st, done, err := e.directory()
		if err != nil {
			return err
		}
		defer done()
		return f(cfg, st)
	}
	norm := func(s string) string {
		if a, err := address.Parse(s); err == nil {
			return a.String()
		}
		return s
	}
	switch verb {
	case "add", "passwd":
		return withStore(1, 1, func(cfg *config.Config, st directory.Store) error {
			a, err := address.Parse(args[0])
			if err != nil {
				return err
			}
			// Fail before asking for a password that cannot be used.
			_, err = st.Account(ctx, args[0])
			switch {
			case verb == "passwd" && err != nil:
				return err
			case verb == "add" && err == nil:
				return directory.ExistsError("account "+a.String(), args[0])
			case verb == "add" && !errors.Is(err, directory.ErrNotFound):
				return err
			case verb == "add":
				// Accounts checks that the domain is hosted, and says what it
				// is instead (an alias of …, unknown).
				if _, err := st.Accounts(ctx, a.Domain); err != nil {
					return fmt.Errorf("account %s: %w", a, err)
				}
			}
			pw, err := e.readPassword()
			if err != nil {
				return err
			}
			if verb == "add" {
				return e.change("POST", "/api/v1/accounts", map[string]string{"address": args[0], "password": pw})
			}
			return e.change("POST", "/api/v1/accounts/"+p(a.String())+"/password", map[string]string{"password": pw})
		})
	case "disable", "enable":
		if err := want(args, 1, 1); err != nil {
			return err
		}
		return e.change("POST", "/api/v1/accounts/"+p(norm(args[0]))+"/smtp_access", map[string]bool{"enabled": verb == "enable"})
	case "remove":
		if err := want(args, 1, 1); err != nil {
			return err
		}
		return e.change("DELETE", "/api/v1/accounts/"+p(norm(args[0])), nil)
	case "list":
		return withStore(0, 1, func(_ *config.Config, st directory.Store) error {
			dom := ""
			if len(args) == 1 {
				dom = args[0]
			}
			accts, err := st.Accounts(ctx, dom)
			if err != nil {
				return err
			}
			for _, a := range accts {
				state := "enabled"
				if !a.SMTPAccess {
					state = "disabled"
				}
				ids := "-"
				if len(a.Identities) > 0 {
					q := make([]string, len(a.Identities))
					for i, id := range a.Identities {
						q[i] = showStored(id)
					}
					ids = strings.Join(q, ",")
				}
				fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", showStored(a.Address), state, ids)
			}
			return nil
		})
	case "identity":
		if len(args) == 0 {
			return usageError("missing identity verb (add, remove, list)")
		}
		sub := args[0]
		args = args[1:]
		switch sub {
		case "add", "remove":
			if err := want(args, 2, 2); err != nil {
				return err
			}
			if sub == "add" {
				return e.change("POST", "/api/v1/accounts/"+p(norm(args[0]))+"/identities", map[string]string{"identity": args[1]})
			}
			return e.change("DELETE", "/api/v1/accounts/"+p(norm(args[0]))+"/identities/"+p(norm(args[1])), nil)
		case "list":
			return withStore(1, 1, func(_ *config.Config, st directory.Store) error {
				a, err := st.Account(ctx, args[0])
				if err != nil {
					return err
				}
				for _, id := range a.Identities {
					fmt.Fprintln(e.stdout, showStored(id))
				}
				return nil
			})
		}
		return usageError(fmt.Sprintf("unknown identity verb %q", sub))
	case "import":
		return withStore(1, 1, func(_ *config.Config, st directory.Store) error {
			return e.importAccounts(ctx, st, args[0])
		})
	case "twins":
		if len(args) == 0 {
			return withStore(0, 0, func(_ *config.Config, st directory.Store) error {
				twins, err := st.Twins(ctx)
				if err != nil {
					return err
				}
				for _, t := range twins {
					fmt.Fprintln(e.stdout, t)
				}
				return nil
			})
		}
		if args[0] != "remove" {
			return usageError(fmt.Sprintf("unknown twins verb %q", args[0]))
		}
		args = args[1:]
		return withStore(1, 2, func(_ *config.Config, st directory.Store) error {
			owner, stored := "", args[len(args)-1]
			if len(args) == 2 {
				owner = args[0]
			}
			// The stored form is given as "account twins" prints it, quoted
			// with escapes, or as is.
			if u, err := strconv.Unquote(stored); err == nil {
				stored = u
			}
			if err := st.RemoveTwin(ctx, owner, stored); err != nil {
				return err
			}
			if owner != "" {
				fmt.Fprintf(e.stdout, "removed identity %s from %s\n", directory.Quote(stored), norm(owner))
				return nil
			}
			fmt.Fprintf(e.stdout, "removed account %s\n", directory.Quote(stored))
			return nil
		})
	}
	return usageError(fmt.Sprintf("unknown verb %q", verb))
}

// showStored returns a stored address for a listing: as it is when it is in
// normalized form, else quoted with escapes and marked, since it would look
// the same as its normalized twin (see "account twins").
func showStored(stored string) string {
	if a, err := address.Parse(stored); err == nil && a.String() == stored {
		return stored
	}
	return directory.Quote(stored) + " (twin)"
}

// readPassword prompts twice on a terminal, else reads the first line of
// stdin. The password never comes from argv (SPEC R2).
func (e *env) readPassword() (string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", fmt.Errorf("reading password: %w", err)
		}
		fmt.Fprint(e.stderr, "Repeat password: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", fmt.Errorf("reading password: %w", err)
		}
		if string(p1) != string(p2) {
			return "", fmt.Errorf("the passwords do not match")
		}
		return checkPassword(string(p1))
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading password from stdin: %w", err)
	}
	return checkPassword(strings.TrimRight(line, "\r\n"))
}

func checkPassword(pw string) (string, error) {
	if pw == "" {
		return "", fmt.Errorf("empty password (give it on the first line of stdin, or run on a terminal to be prompted)")
	}
	return pw, nil
}

// maxImportLine bounds one import line: an address (at most 254 bytes),
// a tab and a hash (password.Check refuses more than 1024) fit many times.
const maxImportLine = 16 << 10

// importAccounts reads "address<TAB>{SCHEME}hash" lines, imports each good
// line and reports each bad one with its line number; the hash itself is
// never printed.
func (e *env) importAccounts(ctx context.Context, st directory.Store, file string) error {
	var r io.Reader = e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	br := bufio.NewReaderSize(r, maxImportLine)
	n, ok, bad := 0, 0, 0
	for {
		b, more, err := br.ReadLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: line %d: %w", file, n+1, err)
		}
		n++
		if more {
			// One overlong line is one bad line; the rest of the file
			// is still imported.
			for more && err == nil {
				_, more, err = br.ReadLine()
			}
			if err != nil && err != io.EOF {
				return fmt.Errorf("%s: line %d: %w", file, n, err)
			}
			bad++
			fmt.Fprintf(e.stderr, "%s:%d: line longer than %d bytes\n", file, n, maxImportLine)
			continue
		}
		line := strings.TrimRight(string(b), "\r")
		if n == 1 {
			// A UTF-8 byte order mark (Windows editors, spreadsheet
			// exports) is not part of the first address.
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		addr, hash, found := strings.Cut(line, "\t")
		hash = strings.TrimSpace(hash)
		err = func() error {
			if !found || strings.TrimSpace(addr) == "" || hash == "" {
				return fmt.Errorf("expected \"address<TAB>{SCHEME}hash\"")
			}
			if err := password.Check(hash); err != nil {
				return err
			}
			return st.AddAccount(ctx, strings.TrimSpace(addr), hash)
		}()
		if err != nil {
			bad++
			fmt.Fprintf(e.stderr, "%s:%d: %v\n", file, n, err)
			continue
		}
		ok++
	}
	fmt.Fprintf(e.stdout, "imported %d account(s), %d line(s) failed\n", ok, bad)
	if bad > 0 {
		return errSilent
	}
	return nil
}
