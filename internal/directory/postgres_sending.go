package directory

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"submitd/internal/pgdb"
)

var _ SendingStore = (*Postgres)(nil)

// pgSendingMigrations are the sending-limit overrides' tables in
// PostgreSQL, as in SQLite (sendingMigrations).
var pgSendingMigrations = []string{
	`CREATE TABLE sending_account_limits (
		account TEXT COLLATE "C" NOT NULL REFERENCES accounts(address) ON DELETE CASCADE ON UPDATE CASCADE,
		key     TEXT COLLATE "C" NOT NULL,
		value   BIGINT NOT NULL,
		PRIMARY KEY (account, key)
	);
	CREATE TABLE sending_domain_limits (
		domain TEXT COLLATE "C" NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
		key    TEXT COLLATE "C" NOT NULL,
		value  BIGINT NOT NULL,
		PRIMARY KEY (domain, key)
	);`,
}

// migratePgSending creates the overrides' tables.
func migratePgSending(ctx context.Context, s *Postgres) error {
	return pgdb.Migrate(ctx, s.pool, "directory_sending", pgSendingMigrations)
}

// pgSendingName resolves name in PostgreSQL.
func pgSendingName(ctx context.Context, tx pgx.Tx, name string) (sendingTarget, error) {
	return resolveSendingName(name, func(table, column, value string) (bool, error) {
		return pgExists(ctx, tx, `SELECT 1 FROM `+table+` WHERE `+column+` = $1`, value)
	})
}

// SendingLimits implements SendingStore.
func (s *Postgres) SendingLimits(ctx context.Context, name string) (map[string]int64, error) {
	out := map[string]int64{}
	err := s.readTx(ctx, func(tx pgx.Tx) error {
		t, err := pgSendingName(ctx, tx, name)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT key, value FROM `+t.table+` WHERE `+t.column+` = $1`, t.name)
		if err != nil {
			return fmt.Errorf("directory: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			var v int64
			if err := rows.Scan(&k, &v); err != nil {
				return fmt.Errorf("directory: %w", err)
			}
			out[k] = v
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetSendingLimits implements SendingStore.
func (s *Postgres) SetSendingLimits(ctx context.Context, name string, set map[string]int64) error {
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		t, err := pgSendingName(ctx, tx, name)
		if err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(set)) {
			if _, err := tx.Exec(ctx, `INSERT INTO `+t.table+` (`+t.column+`, key, value) VALUES ($1, $2, $3)
				ON CONFLICT (`+t.column+`, key) DO UPDATE SET value = excluded.value`, t.name, k, set[k]); err != nil {
				return fmt.Errorf("directory: set sending limit %s of %s: %w", k, t.name, err)
			}
		}
		return s.announce(ctx, tx, ChangeSendingLimits, t.name, t.domain)
	})
}

// ClearSendingLimits implements SendingStore.
func (s *Postgres) ClearSendingLimits(ctx context.Context, name string, keys []string) error {
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		t, err := pgSendingName(ctx, tx, name)
		if err != nil {
			return err
		}
		q := `DELETE FROM ` + t.table + ` WHERE ` + t.column + ` = $1`
		if len(keys) == 0 {
			_, err = tx.Exec(ctx, q, t.name)
		} else {
			_, err = tx.Exec(ctx, q+` AND key = ANY($2)`, t.name, keys)
		}
		if err != nil {
			return fmt.Errorf("directory: clear sending limits of %s: %w", t.name, err)
		}
		return s.announce(ctx, tx, ChangeSendingLimits, t.name, t.domain)
	})
}
