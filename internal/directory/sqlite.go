package directory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/address"
	"submitd/internal/sqlitedb"
)

// migrations are the directory's schema steps (sqlitedb.MigrateSteps).
var migrations = []sqlitedb.Step{
	{SQL: `CREATE TABLE domains (
		name    TEXT PRIMARY KEY,
		created INTEGER NOT NULL
	);
	CREATE TABLE aliases (
		name    TEXT PRIMARY KEY,
		domain  TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
		created INTEGER NOT NULL
	);
	CREATE INDEX aliases_domain ON aliases(domain);
	CREATE TABLE accounts (
		address       TEXT PRIMARY KEY,
		domain        TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
		password_hash TEXT NOT NULL,
		smtp_access   INTEGER NOT NULL DEFAULT 1,
		created       INTEGER NOT NULL
	);
	CREATE INDEX accounts_domain ON accounts(domain);
	CREATE TABLE identities (
		account TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE,
		address TEXT NOT NULL,
		PRIMARY KEY (account, address)
	);`},
	// SPEC §1: local parts are stored in NFC. Older versions stored them as
	// given, so an account may be stored in NFD, or twice (twins, which
	// are reported, not merged; see Twins).
	{Run: normalizeNames},
	// SPEC R20: a hold is kept apart from smtp_access, which support sets.
	{Run: addHeldColumns},
}

// addHeldColumns adds the hold's columns to accounts, those it lacks only:
// a database whose recorded version was set back by hand, to run an
// earlier step again, already has them.
func addHeldColumns(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info('accounts')`)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		have[n] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range []struct{ name, def string }{
		{"held", "INTEGER NOT NULL DEFAULT 0"},
		{"held_reason", "TEXT NOT NULL DEFAULT ''"},
		{"held_since", "INTEGER NOT NULL DEFAULT 0"},
	} {
		if have[c.name] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `ALTER TABLE accounts ADD COLUMN `+c.name+` `+c.def); err != nil {
			return err
		}
	}
	return nil
}

// SQLite is the Store kept in the embedded SQLite database.
type SQLite struct {
	// db is the database; now the clock.
	db  *sql.DB
	now func() time.Time
	// account is the lookup of Account, prepared once: it runs for every
	// AUTH, and parsing its SQL each time cost more than running it.
	accountOnce sync.Once
	account     *sql.Stmt
	accountErr  error
	// committed, when set, runs after every write transaction commits; see
	// OnCommit.
	committed atomic.Pointer[func()]
}

var _ Store = (*SQLite)(nil)

// NewSQLite migrates the directory tables in db and returns a Store on it.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	if err := sqlitedb.MigrateSteps(ctx, db, "directory", migrations); err != nil {
		return nil, err
	}
	if err := migrateChanges(ctx, db); err != nil {
		return nil, err
	}
	if err := migrateSending(ctx, db); err != nil {
		return nil, err
	}
	return &SQLite{db: db, now: time.Now}, nil
}

func normDomain(name string) (string, error) {
	d, err := address.Domain(name)
	if err != nil {
		return "", err
	}
	return d, nil
}

func normAddress(s string) (string, string, error) {
	a, err := address.Parse(s)
	if err != nil {
		return "", "", err
	}
	return a.String(), a.Domain, nil
}

// inTx runs f in a write transaction.
func (s *SQLite) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if f := s.committed.Load(); f != nil {
		(*f)()
	}
	return nil
}

// OnCommit makes f run after each write transaction of this store commits,
// before the write returns. A server hands its own changes (made through the
// admin API or the web) to the change feed this way, so the cache and the
// credential cache have dropped what changed by the time the change is
// reported done; changes made by another process still arrive by polling.
func (s *SQLite) OnCommit(f func()) { s.committed.Store(&f) }

func exists(ctx context.Context, q querier, query string, args ...any) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("directory: %w", err)
	}
	return true, nil
}

// aliasOf returns the hosted domain name is an alias of, or "".
func aliasOf(ctx context.Context, tx *sql.Tx, name string) (string, error) {
	var d string
	err := tx.QueryRowContext(ctx, `SELECT domain FROM aliases WHERE name = ?`, name).Scan(&d)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("directory: %w", err)
	}
	return d, nil
}

// requireHosted fails unless name is a hosted domain, explaining what it is
// instead.
func requireHosted(ctx context.Context, tx *sql.Tx, name string) error {
	ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, name)
	if err != nil || ok {
		return err
	}
	if d, err := aliasOf(ctx, tx, name); err != nil {
		return err
	} else if d != "" {
		return fmt.Errorf("%s is an alias of %s, not a hosted domain: %w", name, d, ErrConflict)
	}
	return fmt.Errorf("domain %s: %w", name, ErrNotFound)
}

// AddDomain implements Store.
func (s *SQLite) AddDomain(ctx context.Context, name string) error {
	d, err := normDomain(name)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, d); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("domain %s: %w", d, ErrExists)
		}
		if of, err := aliasOf(ctx, tx, d); err != nil {
			return err
		} else if of != "" {
			return fmt.Errorf("%s is already an alias of %s; an alias cannot also be a hosted domain: %w", d, of, ErrConflict)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO domains (name, created) VALUES (?, ?)`, d, s.now().Unix())
		if err != nil {
			return fmt.Errorf("directory: add domain %s: %w", d, err)
		}
		return s.logChange(ctx, tx, ChangeDomainAdded, d, d)
	})
}

// RemoveDomain implements Store.
func (s *SQLite) RemoveDomain(ctx context.Context, name string, force bool) error {
	d, err := normDomain(name)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if err := requireHosted(ctx, tx, d); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM accounts WHERE domain = ?`, d).Scan(&n); err != nil {
			return fmt.Errorf("directory: %w", err)
		}
		if n > 0 && !force {
			return fmt.Errorf("domain %s has %d account(s); remove them first or use -force: %w", d, n, ErrConflict)
		}
		if err := s.logAccountsRemoved(ctx, tx, d); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM domains WHERE name = ?`, d); err != nil {
			return fmt.Errorf("directory: remove domain %s: %w", d, err)
		}
		return s.logChange(ctx, tx, ChangeDomainRemoved, d, d)
	})
}

// Domains implements Store.
func (s *SQLite) Domains(ctx context.Context) ([]string, error) {
	return s.strings(ctx, `SELECT name FROM domains ORDER BY name`)
}

// AddAlias implements Store.
func (s *SQLite) AddAlias(ctx context.Context, alias, domain string) error {
	a, err := normDomain(alias)
	if err != nil {
		return err
	}
	d, err := normDomain(domain)
	if err != nil {
		return err
	}
	if a == d {
		return fmt.Errorf("%s cannot be an alias of itself: %w", a, ErrConflict)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if err := requireHosted(ctx, tx, d); err != nil {
			return err
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, a); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%s is a hosted domain; an alias cannot also be a hosted domain: %w", a, ErrConflict)
		}
		if of, err := aliasOf(ctx, tx, a); err != nil {
			return err
		} else if of != "" {
			return fmt.Errorf("alias %s (of %s): %w", a, of, ErrExists)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO aliases (name, domain, created) VALUES (?, ?, ?)`, a, d, s.now().Unix())
		if err != nil {
			return fmt.Errorf("directory: add alias %s: %w", a, err)
		}
		return s.logChange(ctx, tx, ChangeAliasAdded, a, d)
	})
}

// RemoveAlias implements Store.
func (s *SQLite) RemoveAlias(ctx context.Context, alias string) error {
	a, err := normDomain(alias)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if d, err := aliasOf(ctx, tx, a); err != nil {
			return err
		} else if d != "" {
			if _, err := tx.ExecContext(ctx, `DELETE FROM aliases WHERE name = ?`, a); err != nil {
				return fmt.Errorf("directory: remove alias %s: %w", a, err)
			}
			return s.logChange(ctx, tx, ChangeAliasRemoved, a, d)
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, a); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%s is a hosted domain, not an alias (use domain remove): %w", a, ErrConflict)
		}
		return fmt.Errorf("alias %s: %w", a, ErrNotFound)
	})
}

// Aliases implements Store.
func (s *SQLite) Aliases(ctx context.Context, domain string) ([]Alias, error) {
	q, args := `SELECT name, domain FROM aliases ORDER BY domain, name`, []any{}
	if domain != "" {
		d, err := normDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := s.inTx(ctx, func(tx *sql.Tx) error { return requireHosted(ctx, tx, d) }); err != nil {
			return nil, err
		}
		q, args = `SELECT name, domain FROM aliases WHERE domain = ? ORDER BY name`, []any{d}
	}
	return query(ctx, s.db, q, args, func(rows *sql.Rows, a *Alias) error {
		return rows.Scan(&a.Name, &a.Domain)
	})
}

// AddAccount implements Store.
func (s *SQLite) AddAccount(ctx context.Context, addr, passwordHash string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	if passwordHash == "" {
		return fmt.Errorf("account %s: empty password hash: %w", a, ErrConflict)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if err := requireHosted(ctx, tx, d); err != nil {
			return fmt.Errorf("account %s: %w", a, err)
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM accounts WHERE address = ?`, a); err != nil {
			return err
		} else if ok {
			return ExistsError("account "+a, addr)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO accounts (address, domain, password_hash, smtp_access, created)
			VALUES (?, ?, ?, 1, ?)`, a, d, passwordHash, s.now().Unix())
		if err != nil {
			return fmt.Errorf("directory: add account %s: %w", a, err)
		}
		return s.logChange(ctx, tx, ChangeAccountAdded, a, d)
	})
}

// updateAccount runs an UPDATE on one account, recording kind in the change
// log, and reports ErrNotFound when no row matched.
func (s *SQLite) updateAccount(ctx context.Context, addr, set string, arg any, kind ChangeKind) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE accounts SET `+set+` = ? WHERE address = ?`, arg, a)
		if err != nil {
			return fmt.Errorf("directory: update account %s: %w", a, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		return s.logChange(ctx, tx, kind, a, d)
	})
}

// SetPassword implements Store.
func (s *SQLite) SetPassword(ctx context.Context, addr, passwordHash string) error {
	if passwordHash == "" {
		return fmt.Errorf("account %s: empty password hash: %w", addr, ErrConflict)
	}
	return s.updateAccount(ctx, addr, "password_hash", passwordHash, ChangePassword)
}

// SetSMTPAccess implements Store.
func (s *SQLite) SetSMTPAccess(ctx context.Context, addr string, enabled bool) error {
	return s.updateAccount(ctx, addr, "smtp_access", enabled, ChangeAccess)
}

// RemoveAccount implements Store.
func (s *SQLite) RemoveAccount(ctx context.Context, addr string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if err := refuseTwin(ctx, tx, "", a); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM accounts WHERE address = ?`, a)
		if err != nil {
			return fmt.Errorf("directory: remove account %s: %w", a, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		return s.logChange(ctx, tx, ChangeAccountRemoved, a, d)
	})
}

// Account implements Store.
func (s *SQLite) Account(ctx context.Context, addr string) (*Account, error) {
	a, _, err := normAddress(addr)
	if err != nil {
		return nil, err
	}
	s.accountOnce.Do(func() {
		// Aliases and identities are joined by newlines, which neither a
		// domain nor an address can hold.
		s.account, s.accountErr = s.db.PrepareContext(context.Background(), `SELECT a.address, a.domain,
			a.password_hash, a.smtp_access, a.created, a.held, a.held_reason, a.held_since,
			coalesce((SELECT group_concat(name, char(10)) FROM (SELECT name FROM aliases
				WHERE domain = a.domain ORDER BY name)), ''),
			coalesce((SELECT group_concat(address, char(10)) FROM (SELECT address FROM identities
				WHERE account = a.address ORDER BY address)), '')
			FROM accounts a WHERE a.address = ?`)
	})
	if s.accountErr != nil {
		return nil, fmt.Errorf("directory: account %s: %w", a, s.accountErr)
	}
	acc := &Account{}
	var created, heldSince int64
	var aliases, ids string
	err = s.account.QueryRowContext(ctx, a).Scan(&acc.Address, &acc.Domain, &acc.PasswordHash, &acc.SMTPAccess, &created,
		&acc.Held, &acc.HeldReason, &heldSince, &aliases, &ids)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("account %s: %w", a, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("directory: account %s: %w", a, err)
	}
	acc.Created = time.Unix(created, 0)
	acc.HeldSince = heldTime(acc.Held, heldSince)
	if aliases != "" {
		acc.Aliases = strings.Split(aliases, "\n")
	}
	if ids != "" {
		acc.Identities = strings.Split(ids, "\n")
	}
	return acc, nil
}

func (s *SQLite) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	return query(ctx, s.db, q, args, func(rows *sql.Rows, v *string) error { return rows.Scan(v) })
}

// query runs q and scans each row into a new T.
func query[T any](ctx context.Context, db *sql.DB, q string, args []any, scan func(*sql.Rows, *T) error) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := scan(rows, &v); err != nil {
			return nil, fmt.Errorf("directory: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	return out, nil
}

// heldTime is the time of a hold as stored, zero when not held.
func heldTime(held bool, unix int64) time.Time {
	if !held {
		return time.Time{}
	}
	return time.Unix(unix, 0)
}

// accountColumns are the columns scanAccount reads, in its order.
const accountColumns = `a.address, a.domain, a.password_hash, a.smtp_access, a.created,
		a.held, a.held_reason, a.held_since,
		coalesce((SELECT group_concat(address, char(10)) FROM (SELECT address FROM identities i
			WHERE i.account = a.address ORDER BY address)), '')`

// scanAccount reads one row of accountColumns.
func scanAccount(rows *sql.Rows, acc *Account) error {
	var created, heldSince int64
	var ids string
	if err := rows.Scan(&acc.Address, &acc.Domain, &acc.PasswordHash, &acc.SMTPAccess, &created,
		&acc.Held, &acc.HeldReason, &heldSince, &ids); err != nil {
		return err
	}
	acc.Created = time.Unix(created, 0)
	acc.HeldSince = heldTime(acc.Held, heldSince)
	// Identities are joined by newlines, which an address cannot hold
	// (a quoted local part may hold a space).
	if ids != "" {
		acc.Identities = strings.Split(ids, "\n")
	}
	return nil
}

// SetHeld implements Store.
func (s *SQLite) SetHeld(ctx context.Context, addr string, held bool, reason string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	if !held {
		reason = ""
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE accounts SET held = ?, held_reason = ?, held_since = ? WHERE address = ?`,
			held, reason, s.now().Unix(), a)
		if err != nil {
			return fmt.Errorf("directory: hold account %s: %w", a, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		return s.logChange(ctx, tx, ChangeAccess, a, d)
	})
}

// HeldAccounts implements Store.
func (s *SQLite) HeldAccounts(ctx context.Context) ([]Account, error) {
	return query(ctx, s.db, `SELECT `+accountColumns+` FROM accounts a WHERE a.held <> 0 ORDER BY a.held_since, a.address`,
		nil, scanAccount)
}

// Accounts implements Store.
func (s *SQLite) Accounts(ctx context.Context, domain string) ([]Account, error) {
	q := `SELECT ` + accountColumns + ` FROM accounts a`
	var args []any
	if domain != "" {
		d, err := normDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := s.inTx(ctx, func(tx *sql.Tx) error { return requireHosted(ctx, tx, d) }); err != nil {
			return nil, err
		}
		q += ` WHERE a.domain = ?`
		args = append(args, d)
	}
	q += ` ORDER BY a.domain, a.address`
	return query(ctx, s.db, q, args, scanAccount)
}

// AddIdentity implements Store.
func (s *SQLite) AddIdentity(ctx context.Context, addr, identity string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	id, _, err := normAddress(identity)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if ok, err := exists(ctx, tx, `SELECT 1 FROM accounts WHERE address = ?`, a); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM identities WHERE account = ? AND address = ?`, a, id); err != nil {
			return err
		} else if ok {
			return ExistsError("identity "+id+" of "+a, identity)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO identities (account, address) VALUES (?, ?)`, a, id); err != nil {
			return fmt.Errorf("directory: add identity %s: %w", id, err)
		}
		return s.logChange(ctx, tx, ChangeIdentities, a, d)
	})
}

// RemoveIdentity implements Store.
func (s *SQLite) RemoveIdentity(ctx context.Context, addr, identity string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	id, _, err := normAddress(identity)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if err := refuseTwin(ctx, tx, a, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM identities WHERE account = ? AND address = ?`, a, id)
		if err != nil {
			return fmt.Errorf("directory: remove identity %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("identity %s of %s: %w", id, a, ErrNotFound)
		}
		return s.logChange(ctx, tx, ChangeIdentities, a, d)
	})
}

// DomainOf implements Store.
func (s *SQLite) DomainOf(ctx context.Context, name string) (string, error) {
	d, err := normDomain(name)
	if err != nil {
		return "", err
	}
	var out string
	err = s.db.QueryRowContext(ctx, `SELECT name FROM domains WHERE name = ?
		UNION ALL SELECT domain FROM aliases WHERE name = ? LIMIT 1`, d, d).Scan(&out)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("domain %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("directory: %w", err)
	}
	return out, nil
}
