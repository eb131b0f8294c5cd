package directory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"submitd/internal/pgdb"
)

// pgHeldMigrations add the hold (SPEC R20) to the accounts, apart from
// smtp_access, which support sets; versioned as a component of their own.
var pgHeldMigrations = []string{
	`ALTER TABLE accounts ADD COLUMN IF NOT EXISTS held BOOLEAN NOT NULL DEFAULT false;
	ALTER TABLE accounts ADD COLUMN IF NOT EXISTS held_reason TEXT NOT NULL DEFAULT '';
	ALTER TABLE accounts ADD COLUMN IF NOT EXISTS held_since BIGINT NOT NULL DEFAULT 0;`,
}

// migratePgHeld adds the hold's columns.
func migratePgHeld(ctx context.Context, s *Postgres) error {
	return pgdb.Migrate(ctx, s.pool, "directory_held", pgHeldMigrations)
}

// SetHeld implements Store.
func (s *Postgres) SetHeld(ctx context.Context, addr string, held bool, reason string) error {
	a, d, err := normAddress(addr)
	if err != nil {
		return err
	}
	if !held {
		reason = ""
	}
	return s.pgTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE accounts SET held = $1, held_reason = $2, held_since = $3 WHERE address = $4`,
			held, reason, s.now().Unix(), a)
		if err != nil {
			return fmt.Errorf("directory: hold account %s: %w", a, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("account %s: %w", a, ErrNotFound)
		}
		return s.announce(ctx, tx, ChangeAccess, a, d)
	})
}

// HeldAccounts implements Store.
func (s *Postgres) HeldAccounts(ctx context.Context) ([]Account, error) {
	return pgQuery(ctx, s.pool, `SELECT a.address, a.domain, a.password_hash, a.smtp_access, a.created,
		a.held, a.held_reason, a.held_since,
		ARRAY(SELECT address FROM identities i WHERE i.account = a.address ORDER BY address)
		FROM accounts a WHERE a.held ORDER BY a.held_since, a.address`, nil, pgScanAccount)
}

// pgScanAccount reads an account row with its hold and identities.
func pgScanAccount(rows pgx.Rows, acc *Account) error {
	var created, heldSince int64
	if err := rows.Scan(&acc.Address, &acc.Domain, &acc.PasswordHash, &acc.SMTPAccess, &created,
		&acc.Held, &acc.HeldReason, &heldSince, &acc.Identities); err != nil {
		return err
	}
	acc.Created = time.Unix(created, 0)
	acc.HeldSince = heldTime(acc.Held, heldSince)
	if len(acc.Identities) == 0 {
		acc.Identities = nil
	}
	return nil
}
