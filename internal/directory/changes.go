package directory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"submitd/internal/sqlitedb"
)

// ErrChangesPruned is returned by ChangeLog.Changes when entries after the
// requested position are gone from the log; the reader must forget whatever
// it derived from the directory and start again from LastChange.
var ErrChangesPruned = errors.New("directory: change log pruned past the requested position")

// ChangeKind says what a change-log entry records.
type ChangeKind string

// The change kinds. Name is the account address for the account kinds, the
// domain for the domain kinds and the alias domain for the alias kinds.
const (
	// ChangeAccountAdded: a new account.
	ChangeAccountAdded ChangeKind = "account_added"
	// ChangeAccountRemoved: an account is gone, also when its domain was
	// removed with -force (one entry per account).
	ChangeAccountRemoved ChangeKind = "account_removed"
	// ChangePassword: the account's password hash was replaced.
	ChangePassword ChangeKind = "password"
	// ChangeAccess: the account's SMTP access flag was set (SPEC R4).
	ChangeAccess ChangeKind = "access"
	// ChangeIdentities: an extra sender identity was added or removed (SPEC R9).
	ChangeIdentities ChangeKind = "identities"
	// ChangeDomainAdded and ChangeDomainRemoved: a hosted domain.
	ChangeDomainAdded   ChangeKind = "domain_added"
	ChangeDomainRemoved ChangeKind = "domain_removed"
	// ChangeAliasAdded and ChangeAliasRemoved: an alias domain; Domain is
	// the hosted domain it belongs (or belonged) to.
	ChangeAliasAdded   ChangeKind = "alias_added"
	ChangeAliasRemoved ChangeKind = "alias_removed"
	// ChangesLost is never stored: a Watcher hands it to its subscribers
	// when the log was pruned past its position (or could not be read for
	// longer than the log is kept), so anything may have changed.
	ChangesLost ChangeKind = "lost"
)

// Change is one entry of the directory's change log. Every mutation writes
// its entries in the transaction that makes it, so a process that did not
// make the change (the server, when the CLI, web or API changed the
// database) learns of it by reading the log.
type Change struct {
	// Seq orders the log; the store assigns it, increasing.
	Seq int64
	// Kind is what happened.
	Kind ChangeKind
	// Name is the account, domain or alias concerned, normalized.
	Name string
	// Domain is the hosted domain concerned: the account's, the alias's, or
	// Name itself for the domain kinds.
	Domain string
	// Time is when the change was made.
	Time time.Time
}

// IsAccount reports whether the change concerns one account (Name).
func (c Change) IsAccount() bool {
	switch c.Kind {
	case ChangeAccountAdded, ChangeAccountRemoved, ChangePassword, ChangeAccess, ChangeIdentities:
		return true
	}
	return false
}

// ChangeLog is the directory's change feed, as a Watcher reads it.
type ChangeLog interface {
	// LastChange returns the position of the newest entry (0 for none); a
	// reader that starts with nothing derived from the directory starts
	// there.
	LastChange(ctx context.Context) (int64, error)
	// Changes returns up to limit entries after seq, in order, or
	// ErrChangesPruned.
	Changes(ctx context.Context, after int64, limit int) ([]Change, error)
	// PruneChanges deletes entries made before t and all but the newest
	// keep entries.
	PruneChanges(ctx context.Context, before time.Time, keep int) error
}

var _ ChangeLog = (*SQLite)(nil)

// changeMigrations are the change log's tables. They are versioned as a
// component of their own ("directory_changes"), so the log's schema and the
// directory's evolve independently. directory_pruned remembers the highest
// position deleted, so a reader behind it is told rather than silently
// skipping entries.
var changeMigrations = []string{
	`CREATE TABLE directory_changes (
		seq    INTEGER PRIMARY KEY AUTOINCREMENT,
		kind   TEXT NOT NULL,
		name   TEXT NOT NULL,
		domain TEXT NOT NULL,
		time   INTEGER NOT NULL
	);
	CREATE INDEX directory_changes_time ON directory_changes(time);
	CREATE TABLE directory_pruned (
		id  INTEGER PRIMARY KEY CHECK (id = 1),
		seq INTEGER NOT NULL
	);
	INSERT INTO directory_pruned (id, seq) VALUES (1, 0);`,
}

// migrateChanges creates the change log's tables.
func migrateChanges(ctx context.Context, db *sql.DB) error {
	return sqlitedb.Migrate(ctx, db, "directory_changes", changeMigrations)
}

// logChange appends one entry in the caller's transaction, so the entry
// exists exactly when the change does.
func (s *SQLite) logChange(ctx context.Context, tx *sql.Tx, kind ChangeKind, name, domain string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO directory_changes (kind, name, domain, time) VALUES (?, ?, ?, ?)`,
		string(kind), name, domain, s.now().UnixNano())
	if err != nil {
		return fmt.Errorf("directory: record change: %w", err)
	}
	return nil
}

// logAccountsRemoved appends ChangeAccountRemoved for every account of
// domain; it runs before the accounts are deleted with their domain.
func (s *SQLite) logAccountsRemoved(ctx context.Context, tx *sql.Tx, domain string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO directory_changes (kind, name, domain, time)
		SELECT ?, address, domain, ? FROM accounts WHERE domain = ? ORDER BY address`,
		string(ChangeAccountRemoved), s.now().UnixNano(), domain)
	if err != nil {
		return fmt.Errorf("directory: record change: %w", err)
	}
	return nil
}

// logTwinRemoval records what RemoveTwin changes, before normalizeNames
// makes the renames: the removed name (an account, or an identity of
// account), and each rename, as the removal of the old name and the
// addition of the new one, since the account under the normalized name is
// now another one, with another password.
func (s *SQLite) logTwinRemoval(ctx context.Context, tx *sql.Tx, account, stored string) error {
	renames, _, err := scanNames(ctx, tx)
	if err != nil {
		return err
	}
	type entry struct {
		kind ChangeKind
		name string
	}
	es := []entry{{ChangeAccountRemoved, stored}}
	if account != "" {
		es = []entry{{ChangeIdentities, account}}
	}
	for _, r := range renames {
		if r.account == "" {
			es = append(es, entry{ChangeAccountRemoved, r.from}, entry{ChangeAccountAdded, r.to})
		} else {
			es = append(es, entry{ChangeIdentities, r.account})
		}
	}
	for _, e := range es {
		// The domain follows the last "@": a quoted local part may hold one.
		domain := e.name[strings.LastIndexByte(e.name, '@')+1:]
		if err := s.logChange(ctx, tx, e.kind, e.name, domain); err != nil {
			return err
		}
	}
	return nil
}

// LastChange implements ChangeLog.
func (s *SQLite) LastChange(ctx context.Context) (int64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT max(coalesce((SELECT max(seq) FROM directory_changes), 0),
		(SELECT seq FROM directory_pruned WHERE id = 1))`).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("directory: read change log: %w", err)
	}
	return seq, nil
}

// Changes implements ChangeLog. It runs every poll interval, so it is two
// small reads and no transaction (a transaction would take the write lock:
// the database opens transactions IMMEDIATE). The entries are read before
// the pruning mark, so a prune racing with the read is noticed.
func (s *SQLite) Changes(ctx context.Context, after int64, limit int) ([]Change, error) {
	out, err := query(ctx, s.db, `SELECT seq, kind, name, domain, time FROM directory_changes
		WHERE seq > ? ORDER BY seq LIMIT ?`, []any{after, limit}, func(rows *sql.Rows, ch *Change) error {
		var kind string
		var t int64
		if err := rows.Scan(&ch.Seq, &kind, &ch.Name, &ch.Domain, &t); err != nil {
			return err
		}
		ch.Kind, ch.Time = ChangeKind(kind), time.Unix(0, t)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var pruned int64
	if err := s.db.QueryRowContext(ctx, `SELECT seq FROM directory_pruned WHERE id = 1`).Scan(&pruned); err != nil {
		return nil, fmt.Errorf("directory: read change log: %w", err)
	}
	if pruned > after {
		return nil, fmt.Errorf("directory: change log entries %d to %d are gone: %w", after+1, pruned, ErrChangesPruned)
	}
	return out, nil
}

// PruneChanges implements ChangeLog.
func (s *SQLite) PruneChanges(ctx context.Context, before time.Time, keep int) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var byTime, byCount int64
		err := tx.QueryRowContext(ctx, `SELECT coalesce((SELECT max(seq) FROM directory_changes WHERE time < ?), 0),
			coalesce((SELECT seq FROM directory_changes ORDER BY seq DESC LIMIT 1 OFFSET ?), 0)`,
			before.UnixNano(), keep).Scan(&byTime, &byCount)
		if err != nil {
			return fmt.Errorf("directory: prune change log: %w", err)
		}
		upto := max(byTime, byCount)
		if upto == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM directory_changes WHERE seq <= ?`, upto); err != nil {
			return fmt.Errorf("directory: prune change log: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE directory_pruned SET seq = max(seq, ?) WHERE id = 1`, upto); err != nil {
			return fmt.Errorf("directory: prune change log: %w", err)
		}
		return nil
	})
}
