package sending

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"submitd/internal/sqlitedb"
)

// History remembers whom each account sent to, so that a first-time
// recipient can be told from a regular one (SPEC R19). It survives a
// restart.
type History interface {
	// Known reports whether account sent to rcpt at or after since.
	Known(ctx context.Context, account, rcpt string, since time.Time) (bool, error)
	// Record notes that account sent to rcpts at at.
	Record(ctx context.Context, account string, rcpts []string, at time.Time) error
	// Prune forgets what was last sent before before, and returns how many
	// entries went.
	Prune(ctx context.Context, before time.Time) (int64, error)
}

// historyMigrations are the history's tables. A row holds a hash of the
// account and of the recipient, never the addresses: each row has the same
// small size however long the address, and the table tells nobody whom a
// customer writes to. The rows an account can add are bounded by its
// first-time-recipient budget: only a recipient that was counted as new
// adds one, and rows go after HistoryWindow.
var historyMigrations = []string{
	`CREATE TABLE sending_history (
		account   INTEGER NOT NULL,
		recipient BLOB    NOT NULL,
		last      INTEGER NOT NULL,
		PRIMARY KEY (account, recipient)
	) WITHOUT ROWID;
	CREATE INDEX sending_history_last ON sending_history(last);`,
}

// SQLiteHistory is the History in the node's SQLite database.
type SQLiteHistory struct {
	// db is the database.
	db *sql.DB
}

var _ History = (*SQLiteHistory)(nil)

// NewSQLiteHistory creates the history's table in db.
func NewSQLiteHistory(ctx context.Context, db *sql.DB) (*SQLiteHistory, error) {
	if err := sqlitedb.Migrate(ctx, db, "sending_history", historyMigrations); err != nil {
		return nil, err
	}
	return &SQLiteHistory{db: db}, nil
}

// accountKey is the account's row key: 8 bytes of its hash.
func accountKey(account string) int64 {
	h := sha256.Sum256([]byte(strings.ToLower(account)))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// recipientKey is the recipient's row key: 16 bytes of its hash, the
// address lowercased, since mailboxes that differ only in case are one in
// practice.
func recipientKey(rcpt string) []byte {
	h := sha256.Sum256([]byte(strings.ToLower(rcpt)))
	return h[:16]
}

// Known implements History.
func (h *SQLiteHistory) Known(ctx context.Context, account, rcpt string, since time.Time) (bool, error) {
	var last int64
	err := h.db.QueryRowContext(ctx, `SELECT last FROM sending_history WHERE account = ? AND recipient = ?`,
		accountKey(account), recipientKey(rcpt)).Scan(&last)
	switch {
	case err == sql.ErrNoRows:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sending history: %w", err)
	}
	return last >= since.Unix(), nil
}

// Record implements History, in one transaction.
func (h *SQLiteHistory) Record(ctx context.Context, account string, rcpts []string, at time.Time) error {
	if len(rcpts) == 0 {
		return nil
	}
	tx, err := h.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sending history: %w", err)
	}
	defer tx.Rollback()
	a := accountKey(account)
	for _, r := range rcpts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO sending_history (account, recipient, last) VALUES (?, ?, ?)
			ON CONFLICT (account, recipient) DO UPDATE SET last = max(last, excluded.last)`, a, recipientKey(r), at.Unix()); err != nil {
			return fmt.Errorf("sending history: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sending history: %w", err)
	}
	return nil
}

// Prune implements History.
func (h *SQLiteHistory) Prune(ctx context.Context, before time.Time) (int64, error) {
	res, err := h.db.ExecContext(ctx, `DELETE FROM sending_history WHERE last < ?`, before.Unix())
	if err != nil {
		return 0, fmt.Errorf("sending history: %w", err)
	}
	return res.RowsAffected()
}
