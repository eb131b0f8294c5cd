package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
)

// NotifyChannel is the PostgreSQL channel every directory change is
// announced on, in the transaction that makes it, so that each node drops
// what it cached of the change (Listener).
const NotifyChannel = "submitd_directory"

// pgMigrations are the directory's tables in PostgreSQL. Names compare and
// sort bytewise ("C"), as in SQLite, whatever the database's locale. Times
// are Unix seconds, as in SQLite.
var pgMigrations = []string{
	`CREATE TABLE domains (
		name    TEXT COLLATE "C" PRIMARY KEY,
		created BIGINT NOT NULL
	);
	CREATE TABLE aliases (
		name    TEXT COLLATE "C" PRIMARY KEY,
		domain  TEXT COLLATE "C" NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
		created BIGINT NOT NULL
	);
	CREATE INDEX aliases_domain ON aliases(domain);
	CREATE TABLE accounts (
		address       TEXT COLLATE "C" PRIMARY KEY,
		domain        TEXT COLLATE "C" NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
		password_hash TEXT NOT NULL,
		smtp_access   BOOLEAN NOT NULL DEFAULT true,
		created       BIGINT NOT NULL
	);
	CREATE INDEX accounts_domain ON accounts(domain);
	CREATE TABLE identities (
		account TEXT COLLATE "C" NOT NULL REFERENCES accounts(address) ON DELETE CASCADE,
		address TEXT COLLATE "C" NOT NULL,
		PRIMARY KEY (account, address)
	);`,
}

// writeLock is the advisory lock every directory change takes for its
// transaction. The rules span tables (an alias is never a hosted domain),
// so changes take turns, as they do in SQLite, on every node at once;
// changes are made by people and are few.
const writeLock = 0x73646972 // "sdir"

// Postgres is the Store kept in PostgreSQL, shared by the nodes of a
// cluster. Every change is announced on NotifyChannel.
//
// It has no Unicode twins: only versions that normalize every name on the
// way in (SPEC §1) ever wrote to it, so Twins is always empty.
type Postgres struct {
	// pool is the connection pool; now the clock.
	pool *pgxpool.Pool
	now  func() time.Time
	// committed, when set, gets the changes of each write transaction
	// after it commits; see OnCommit.
	committed atomic.Pointer[func([]Change)]
}

// OnCommit makes f receive the changes of each write transaction of this
// store after it commits, before the write returns. A server hands its own
// changes (made through the admin API or the web) to its change feed this
// way, so its caches have dropped what changed by the time the change is
// reported done; the NOTIFY that reaches the other nodes arrives here too a
// moment later, and handling a change twice only drops an entry twice.
func (s *Postgres) OnCommit(f func([]Change)) { s.committed.Store(&f) }

// announcingTx is the transaction pgTx hands to its function: announce
// collects the changes in it for OnCommit.
type announcingTx struct {
	pgx.Tx
	// changes are the changes announced in the transaction.
	changes []Change
}

var _ Store = (*Postgres)(nil)

// NewPostgres migrates the directory tables and returns a Store on pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	if err := pgdb.Migrate(ctx, pool, "directory", pgMigrations); err != nil {
		return nil, err
	}
	s := &Postgres{pool: pool, now: time.Now}
	if err := migratePgSending(ctx, s); err != nil {
		return nil, err
	}
	if err := migratePgHeld(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// notice is a change as NOTIFY carries it.
type notice struct {
	// Kind, Name and Domain are the Change's.
	Kind   ChangeKind `json:"k"`
	Name   string     `json:"n"`
	Domain string     `json:"d"`
	// Time is the change's time in Unix nanoseconds.
	Time int64 `json:"t"`
}

// pgTx runs f in a transaction holding writeLock.
func (s *Postgres) pgTx(ctx context.Context, f func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(writeLock)); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	atx := &announcingTx{Tx: tx}
	if err := f(atx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if f := s.committed.Load(); f != nil && len(atx.changes) > 0 {
		(*f)(atx.changes)
	}
	return nil
}

// announce sends a change in tx; PostgreSQL delivers it to the listeners
// when, and only if, the transaction commits.
func (s *Postgres) announce(ctx context.Context, tx pgx.Tx, kind ChangeKind, name, domain string) error {
	now := s.now()
	b, _ := json.Marshal(notice{Kind: kind, Name: name, Domain: domain, Time: now.UnixNano()})
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, string(b)); err != nil {
		return fmt.Errorf("directory: announce change: %w", err)
	}
	if atx, ok := tx.(*announcingTx); ok {
		atx.changes = append(atx.changes, Change{Kind: kind, Name: name, Domain: domain, Time: now})
	}
	return nil
}

// pgExists reports whether q returns a row.
func pgExists(ctx context.Context, tx pgx.Tx, q string, args ...any) (bool, error) {
	var one int
	err := tx.QueryRow(ctx, q, args...).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("directory: %w", err)
	}
	return true, nil
}

// pgAliasOf returns the hosted domain name is an alias of, or "".
func pgAliasOf(ctx context.Context, tx pgx.Tx, name string) (string, error) {
	var d string
	err := tx.QueryRow(ctx, `SELECT domain FROM aliases WHERE name = $1`, name).Scan(&d)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("directory: %w", err)
	}
	return d, nil
}

// pgRequireHosted fails unless name is a hosted domain, explaining what it
// is instead.
func pgRequireHosted(ctx context.Context, tx pgx.Tx, name string) error {
	ok, err := pgExists(ctx, tx, `SELECT 1 FROM domains WHERE name = $1`, name)
	if err != nil || ok {
		return err
	}
	if d, err := pgAliasOf(ctx, tx, name); err != nil {
		return err
	} else if d != "" {
		return fmt.Errorf("%s is an alias of %s, not a hosted domain: %w", name, d, ErrConflict)
	}
	return fmt.Errorf("domain %s: %w", name, ErrNotFound)
}

// AddDomain implements Store.
func (s *Postgres) AddDomain(ctx context.Context, name string) error {
	d, err := normDomain(name)
	if err != nil {
		return err
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		if ok, err := pgExists(ctx, tx, `SELECT 1 FROM domains WHERE name = $1`, d); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("domain %s: %w", d, ErrExists)
		}
		if of, err := pgAliasOf(ctx, tx, d); err != nil {
			return err
		} else if of != "" {
			return fmt.Errorf("%s is already an alias of %s; an alias cannot also be a hosted domain: %w", d, of, ErrConflict)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO domains (name, created) VALUES ($1, $2)`, d, s.now().Unix()); err != nil {
			return fmt.Errorf("directory: add domain %s: %w", d, err)
		}
		return s.announce(ctx, tx, ChangeDomainAdded, d, d)
	})
}

// RemoveDomain implements Store.
func (s *Postgres) RemoveDomain(ctx context.Context, name string, force bool) error {
	d, err := normDomain(name)
	if err != nil {
		return err
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		if err := pgRequireHosted(ctx, tx, d); err != nil {
			return err
		}
		accounts, err := pgStrings(ctx, tx, `SELECT address FROM accounts WHERE domain = $1 ORDER BY address`, d)
		if err != nil {
			return err
		}
		if len(accounts) > 0 && !force {
			return fmt.Errorf("domain %s has %d account(s); remove them first or use -force: %w", d, len(accounts), ErrConflict)
		}
		// One notice per account, as the change log has one entry each.
		for _, a := range accounts {
			if err := s.announce(ctx, tx, ChangeAccountRemoved, a, d); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM domains WHERE name = $1`, d); err != nil {
			return fmt.Errorf("directory: remove domain %s: %w", d, err)
		}
		return s.announce(ctx, tx, ChangeDomainRemoved, d, d)
	})
}

// Domains implements Store.
func (s *Postgres) Domains(ctx context.Context) ([]string, error) {
	return pgStrings(ctx, s.pool, `SELECT name FROM domains ORDER BY name`)
}

// AddAlias implements Store.
func (s *Postgres) AddAlias(ctx context.Context, alias, domain string) error {
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
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		if err := pgRequireHosted(ctx, tx, d); err != nil {
			return err
		}
		if ok, err := pgExists(ctx, tx, `SELECT 1 FROM domains WHERE name = $1`, a); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%s is a hosted domain; an alias cannot also be a hosted domain: %w", a, ErrConflict)
		}
		if of, err := pgAliasOf(ctx, tx, a); err != nil {
			return err
		} else if of != "" {
			return fmt.Errorf("alias %s (of %s): %w", a, of, ErrExists)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO aliases (name, domain, created) VALUES ($1, $2, $3)`, a, d, s.now().Unix()); err != nil {
			return fmt.Errorf("directory: add alias %s: %w", a, err)
		}
		return s.announce(ctx, tx, ChangeAliasAdded, a, d)
	})
}

// RemoveAlias implements Store.
func (s *Postgres) RemoveAlias(ctx context.Context, alias string) error {
	a, err := normDomain(alias)
	if err != nil {
		return err
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		if d, err := pgAliasOf(ctx, tx, a); err != nil {
			return err
		} else if d != "" {
			if _, err := tx.Exec(ctx, `DELETE FROM aliases WHERE name = $1`, a); err != nil {
				return fmt.Errorf("directory: remove alias %s: %w", a, err)
			}
			return s.announce(ctx, tx, ChangeAliasRemoved, a, d)
		}
		if ok, err := pgExists(ctx, tx, `SELECT 1 FROM domains WHERE name = $1`, a); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%s is a hosted domain, not an alias (use domain remove): %w", a, ErrConflict)
		}
		return fmt.Errorf("alias %s: %w", a, ErrNotFound)
	})
}

// Aliases implements Store.
func (s *Postgres) Aliases(ctx context.Context, domain string) ([]Alias, error) {
	q, args := `SELECT name, domain FROM aliases ORDER BY domain, name`, []any{}
	if domain != "" {
		d, err := normDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := s.readTx(ctx, func(tx pgx.Tx) error { return pgRequireHosted(ctx, tx, d) }); err != nil {
			return nil, err
		}
		q, args = `SELECT name, domain FROM aliases WHERE domain = $1 ORDER BY name`, []any{d}
	}
	return pgQuery(ctx, s.pool, q, args, func(rows pgx.Rows, a *Alias) error {
		return rows.Scan(&a.Name, &a.Domain)
	})
}

// readTx runs f in a transaction that changes nothing, without the lock.
func (s *Postgres) readTx(ctx context.Context, f func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	defer tx.Rollback(ctx)
	return f(tx)
}

// AddAccount implements Store.
func (s *Postgres) AddAccount(ctx context.Context, addr, passwordHash string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	if passwordHash == "" {
		return fmt.Errorf("account %s: empty password hash: %w", a, ErrConflict)
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		if err := pgRequireHosted(ctx, tx, d); err != nil {
			return fmt.Errorf("account %s: %w", a, err)
		}
		if ok, err := pgExists(ctx, tx, `SELECT 1 FROM accounts WHERE address = $1`, a); err != nil {
			return err
		} else if ok {
			return ExistsError("account "+a, addr)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (address, domain, password_hash, smtp_access, created)
			VALUES ($1, $2, $3, true, $4)`, a, d, passwordHash, s.now().Unix()); err != nil {
			return fmt.Errorf("directory: add account %s: %w", a, err)
		}
		return s.announce(ctx, tx, ChangeAccountAdded, a, d)
	})
}

// pgUpdateAccount runs an UPDATE on one account, announcing kind, and
// reports ErrNotFound when no row matched. set is a column name from this
// file, never input.
func (s *Postgres) pgUpdateAccount(ctx context.Context, addr, set string, arg any, kind ChangeKind) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE accounts SET `+set+` = $1 WHERE address = $2`, arg, a)
		if err != nil {
			return fmt.Errorf("directory: update account %s: %w", a, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		return s.announce(ctx, tx, kind, a, d)
	})
}

// SetPassword implements Store.
func (s *Postgres) SetPassword(ctx context.Context, addr, passwordHash string) error {
	if passwordHash == "" {
		return fmt.Errorf("account %s: empty password hash: %w", addr, ErrConflict)
	}
	return s.pgUpdateAccount(ctx, addr, "password_hash", passwordHash, ChangePassword)
}

// SetSMTPAccess implements Store.
func (s *Postgres) SetSMTPAccess(ctx context.Context, addr string, enabled bool) error {
	return s.pgUpdateAccount(ctx, addr, "smtp_access", enabled, ChangeAccess)
}

// RemoveAccount implements Store.
func (s *Postgres) RemoveAccount(ctx context.Context, addr string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM accounts WHERE address = $1`, a)
		if err != nil {
			return fmt.Errorf("directory: remove account %s: %w", a, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		return s.announce(ctx, tx, ChangeAccountRemoved, a, d)
	})
}

// pgAccountQuery is the lookup of Account, one round trip for the account,
// its domain's aliases and its identities (pgx prepares and caches it per
// connection).
const pgAccountQuery = `SELECT a.address, a.domain, a.password_hash, a.smtp_access, a.created,
	a.held, a.held_reason, a.held_since,
	ARRAY(SELECT name FROM aliases WHERE domain = a.domain ORDER BY name),
	ARRAY(SELECT address FROM identities WHERE account = a.address ORDER BY address)
	FROM accounts a WHERE a.address = $1`

// Account implements Store.
func (s *Postgres) Account(ctx context.Context, addr string) (*Account, error) {
	a, _, err := normAddress(addr)
	if err != nil {
		return nil, err
	}
	acc := &Account{}
	var created, heldSince int64
	err = s.pool.QueryRow(ctx, pgAccountQuery, a).Scan(&acc.Address, &acc.Domain, &acc.PasswordHash,
		&acc.SMTPAccess, &created, &acc.Held, &acc.HeldReason, &heldSince, &acc.Aliases, &acc.Identities)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("account %s: %w", a, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("directory: account %s: %w", a, err)
	}
	acc.Created = time.Unix(created, 0)
	acc.HeldSince = heldTime(acc.Held, heldSince)
	// As from SQLite: none is nil, not empty.
	if len(acc.Aliases) == 0 {
		acc.Aliases = nil
	}
	if len(acc.Identities) == 0 {
		acc.Identities = nil
	}
	return acc, nil
}

// Accounts implements Store.
func (s *Postgres) Accounts(ctx context.Context, domain string) ([]Account, error) {
	q := `SELECT a.address, a.domain, a.password_hash, a.smtp_access, a.created,
		a.held, a.held_reason, a.held_since,
		ARRAY(SELECT address FROM identities i WHERE i.account = a.address ORDER BY address)
		FROM accounts a`
	var args []any
	if domain != "" {
		d, err := normDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := s.readTx(ctx, func(tx pgx.Tx) error { return pgRequireHosted(ctx, tx, d) }); err != nil {
			return nil, err
		}
		q += ` WHERE a.domain = $1`
		args = append(args, d)
	}
	q += ` ORDER BY a.domain, a.address`
	return pgQuery(ctx, s.pool, q, args, pgScanAccount)
}

// AddIdentity implements Store.
func (s *Postgres) AddIdentity(ctx context.Context, addr, identity string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	id, _, err := normAddress(identity)
	if err != nil {
		return err
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		if ok, err := pgExists(ctx, tx, `SELECT 1 FROM accounts WHERE address = $1`, a); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		if ok, err := pgExists(ctx, tx, `SELECT 1 FROM identities WHERE account = $1 AND address = $2`, a, id); err != nil {
			return err
		} else if ok {
			return ExistsError("identity "+id+" of "+a, identity)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO identities (account, address) VALUES ($1, $2)`, a, id); err != nil {
			return fmt.Errorf("directory: add identity %s: %w", id, err)
		}
		return s.announce(ctx, tx, ChangeIdentities, a, d)
	})
}

// RemoveIdentity implements Store.
func (s *Postgres) RemoveIdentity(ctx context.Context, addr, identity string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	id, _, err := normAddress(identity)
	if err != nil {
		return err
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM identities WHERE account = $1 AND address = $2`, a, id)
		if err != nil {
			return fmt.Errorf("directory: remove identity %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("identity %s of %s: %w", id, a, ErrNotFound)
		}
		return s.announce(ctx, tx, ChangeIdentities, a, d)
	})
}

// DomainOf implements Store.
func (s *Postgres) DomainOf(ctx context.Context, name string) (string, error) {
	d, err := normDomain(name)
	if err != nil {
		return "", err
	}
	var out string
	err = s.pool.QueryRow(ctx, `SELECT name FROM domains WHERE name = $1
		UNION ALL SELECT domain FROM aliases WHERE name = $1 LIMIT 1`, d).Scan(&out)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("domain %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("directory: %w", err)
	}
	return out, nil
}

// Twins implements Store; see Postgres for why there are none.
func (s *Postgres) Twins(ctx context.Context) ([]Twin, error) { return nil, nil }

// RemoveTwin implements Store; there are no twins to remove.
func (s *Postgres) RemoveTwin(ctx context.Context, account, stored string) error {
	return fmt.Errorf("%s is not one of two names that differ only in Unicode normalization (see \"submitd account twins\"): %w",
		Quote(stored), ErrNotFound)
}

// pgQuerier is a pool or a transaction.
type pgQuerier interface {
	Query(ctx context.Context, q string, args ...any) (pgx.Rows, error)
}

// pgStrings runs q and returns its one text column.
func pgStrings(ctx context.Context, db pgQuerier, q string, args ...any) ([]string, error) {
	return pgQuery(ctx, db, q, args, func(rows pgx.Rows, v *string) error { return rows.Scan(v) })
}

// pgQuery runs q and scans each row into a new T.
func pgQuery[T any](ctx context.Context, db pgQuerier, q string, args []any, scan func(pgx.Rows, *T) error) ([]T, error) {
	rows, err := db.Query(ctx, q, args...)
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

// Listener follows the directory's NotifyChannel on a connection of its
// own and hands each change to its subscribers, as a Watcher does for the
// SQLite change log. Every time the connection is (re)established it hands
// them ChangesLost, since notices sent while it was down are gone.
type Listener struct {
	// l is the LISTEN connection.
	l pgdb.Listener
	// subs are the subscribers; mu guards them.
	subs subscribers
}

// NewListener returns a Listener on pool's database; Run starts it.
func NewListener(pool *pgxpool.Pool, log *slog.Logger) *Listener {
	ln := &Listener{}
	ln.l = pgdb.Listener{Pool: pool, Channel: NotifyChannel, Log: log,
		Notify: func(payload string) {
			var n notice
			if err := json.Unmarshal([]byte(payload), &n); err != nil {
				// Not ours, or from a newer version: anything may
				// have changed.
				ln.subs.deliver(Change{Kind: ChangesLost, Time: time.Now()})
				return
			}
			ln.subs.deliver(Change{Kind: n.Kind, Name: n.Name, Domain: n.Domain, Time: time.Unix(0, n.Time)})
		},
		Connected: func() { ln.subs.deliver(Change{Kind: ChangesLost, Time: time.Now()}) },
	}
	return ln
}

// Subscribe implements Feed.
func (ln *Listener) Subscribe(f func(Change)) { ln.subs.add(f) }

// Deliver hands changes this process made to the subscribers at once,
// ahead of their NOTIFY (Postgres.OnCommit).
func (ln *Listener) Deliver(chs []Change) {
	for _, ch := range chs {
		ln.subs.deliver(ch)
	}
}

// Run implements Feed.
func (ln *Listener) Run(ctx context.Context) { ln.l.Run(ctx) }

// Pool returns the store's connection pool, for a Listener on the same
// database.
func (s *Postgres) Pool() *pgxpool.Pool { return s.pool }
