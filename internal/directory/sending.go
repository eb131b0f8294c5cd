package directory

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"

	"submitd/internal/sqlitedb"
)

// ChangeSendingLimits: support changed the sending-limit overrides of an
// account or a hosted domain (Name); a server drops what it cached of them.
const ChangeSendingLimits ChangeKind = "sending_limits"

// SendingStore holds the sending-limit overrides of SPEC R19: for an
// account or a hosted domain, limits that replace the configured ones, by
// the keys of the [sending] table. The store keeps whatever keys it is
// given; the caller checks them (internal/sending). Overrides go with
// their account or domain when it is removed.
type SendingStore interface {
	// SendingLimits returns the overrides of name, an account address or
	// a hosted domain; none is an empty map.
	SendingLimits(ctx context.Context, name string) (map[string]int64, error)
	// SetSendingLimits sets the given overrides of name, keeping the others.
	SetSendingLimits(ctx context.Context, name string, set map[string]int64) error
	// ClearSendingLimits removes the named overrides of name; no keys
	// removes them all.
	ClearSendingLimits(ctx context.Context, name string, keys []string) error
}

var _ SendingStore = (*SQLite)(nil)

// sendingMigrations are the overrides' tables, a component of their own
// ("directory_sending") so they evolve apart from the directory's. The
// foreign keys drop an account's or domain's overrides with it, and follow
// an account renamed to its normalized form.
var sendingMigrations = []string{
	`CREATE TABLE sending_account_limits (
		account TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE ON UPDATE CASCADE,
		key     TEXT NOT NULL,
		value   INTEGER NOT NULL,
		PRIMARY KEY (account, key)
	);
	CREATE TABLE sending_domain_limits (
		domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
		key    TEXT NOT NULL,
		value  INTEGER NOT NULL,
		PRIMARY KEY (domain, key)
	);`,
}

// sendingTarget is the normalized name, its table and column, and the
// hosted domain for the change log.
type sendingTarget struct {
	name, table, column, domain string
}

// resolveSendingName resolves name to an existing account or hosted
// domain; has reports whether table holds value in column, in the
// caller's backend and transaction.
func resolveSendingName(name string, has func(table, column, value string) (bool, error)) (sendingTarget, error) {
	if strings.Contains(name, "@") {
		a, d, err := normAddress(name)
		if err != nil {
			return sendingTarget{}, err
		}
		if ok, err := has("accounts", "address", a); err != nil {
			return sendingTarget{}, err
		} else if !ok {
			return sendingTarget{}, fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		return sendingTarget{a, "sending_account_limits", "account", d}, nil
	}
	d, err := normDomain(name)
	if err != nil {
		return sendingTarget{}, err
	}
	if ok, err := has("domains", "name", d); err != nil {
		return sendingTarget{}, err
	} else if !ok {
		if alias, err := has("aliases", "name", d); err == nil && alias {
			return sendingTarget{}, fmt.Errorf("%s is an alias domain; its hosted domain's limits cover it: %w", d, ErrConflict)
		}
		return sendingTarget{}, fmt.Errorf("domain %s: %w", d, ErrNotFound)
	}
	return sendingTarget{d, "sending_domain_limits", "domain", d}, nil
}

// sendingName resolves name in SQLite.
func (s *SQLite) sendingName(ctx context.Context, q querier, name string) (sendingTarget, error) {
	return resolveSendingName(name, func(table, column, value string) (bool, error) {
		return exists(ctx, q, `SELECT 1 FROM `+table+` WHERE `+column+` = ?`, value)
	})
}

// SendingLimits implements SendingStore.
func (s *SQLite) SendingLimits(ctx context.Context, name string) (map[string]int64, error) {
	t, err := s.sendingName(ctx, s.db, name)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT key, value FROM `+t.table+` WHERE `+t.column+` = ?`, t.name)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("directory: %w", err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	return out, nil
}

// SetSendingLimits implements SendingStore.
func (s *SQLite) SetSendingLimits(ctx context.Context, name string, set map[string]int64) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		t, err := s.sendingName(ctx, tx, name)
		if err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(set)) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO `+t.table+` (`+t.column+`, key, value) VALUES (?, ?, ?)
				ON CONFLICT (`+t.column+`, key) DO UPDATE SET value = excluded.value`, t.name, k, set[k]); err != nil {
				return fmt.Errorf("directory: set sending limit %s of %s: %w", k, t.name, err)
			}
		}
		return s.logChange(ctx, tx, ChangeSendingLimits, t.name, t.domain)
	})
}

// ClearSendingLimits implements SendingStore.
func (s *SQLite) ClearSendingLimits(ctx context.Context, name string, keys []string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		t, err := s.sendingName(ctx, tx, name)
		if err != nil {
			return err
		}
		q := `DELETE FROM ` + t.table + ` WHERE ` + t.column + ` = ?`
		if len(keys) == 0 {
			if _, err := tx.ExecContext(ctx, q, t.name); err != nil {
				return fmt.Errorf("directory: clear sending limits of %s: %w", t.name, err)
			}
		}
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, q+` AND key = ?`, t.name, k); err != nil {
				return fmt.Errorf("directory: clear sending limit %s of %s: %w", k, t.name, err)
			}
		}
		return s.logChange(ctx, tx, ChangeSendingLimits, t.name, t.domain)
	})
}

// migrateSending creates the overrides' tables.
func migrateSending(ctx context.Context, db *sql.DB) error {
	return sqlitedb.Migrate(ctx, db, "directory_sending", sendingMigrations)
}
