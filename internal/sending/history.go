package sending

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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

// Write-behind of SQLiteHistory.
const (
	// flushDelay is how long recorded recipients wait in memory to be
	// written together: one transaction a second instead of one per
	// message. A crash loses at most that second, whose recipients then
	// count as first-time once more.
	flushDelay = time.Second
	// maxPending is the most entries waiting; past it Record writes at
	// once, so a burst cannot grow the buffer without bound.
	maxPending = 10000
)

// histKey is one history row's key.
type histKey struct {
	// account is accountKey; rcpt recipientKey.
	account int64
	rcpt    [16]byte
}

// SQLiteHistory is the History in the node's SQLite database. Recorded
// recipients are written behind, in one transaction per flushDelay; Known
// sees them at once. Close writes what is left.
type SQLiteHistory struct {
	// db is the database.
	db *sql.DB
	// Log receives write failures of the background flush; nil drops them.
	Log *slog.Logger

	// mu guards pending, flushing and timer.
	mu sync.Mutex
	// pending are the entries recorded and not yet written, with their
	// time (Unix seconds); flushing those being written now.
	pending, flushing map[histKey]int64
	// timer runs the next flush; nil when none is due.
	timer *time.Timer
	// flushMu makes flushes take turns.
	flushMu sync.Mutex
}

var _ History = (*SQLiteHistory)(nil)

// NewSQLiteHistory creates the history's table in db.
func NewSQLiteHistory(ctx context.Context, db *sql.DB) (*SQLiteHistory, error) {
	if err := sqlitedb.Migrate(ctx, db, "sending_history", historyMigrations); err != nil {
		return nil, err
	}
	return &SQLiteHistory{db: db, pending: map[histKey]int64{}}, nil
}

// accountKey is the account's row key: 8 bytes of its hash.
func accountKey(account string) int64 {
	h := sha256.Sum256([]byte(strings.ToLower(account)))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// recipientKey is the recipient's row key: 16 bytes of its hash, the
// address lowercased, since mailboxes that differ only in case are one in
// practice.
func recipientKey(rcpt string) [16]byte {
	h := sha256.Sum256([]byte(strings.ToLower(rcpt)))
	return [16]byte(h[:16])
}

// Known implements History.
func (h *SQLiteHistory) Known(ctx context.Context, account, rcpt string, since time.Time) (bool, error) {
	k := histKey{accountKey(account), recipientKey(rcpt)}
	h.mu.Lock()
	last, ok := h.pending[k]
	if !ok {
		last, ok = h.flushing[k]
	}
	h.mu.Unlock()
	if ok && last >= since.Unix() {
		return true, nil
	}
	err := h.db.QueryRowContext(ctx, `SELECT last FROM sending_history WHERE account = ? AND recipient = ?`,
		k.account, k.rcpt[:]).Scan(&last)
	switch {
	case err == sql.ErrNoRows:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sending history: %w", err)
	}
	return last >= since.Unix(), nil
}

// Record implements History: the entries are written within flushDelay,
// or at once when maxPending are waiting.
func (h *SQLiteHistory) Record(ctx context.Context, account string, rcpts []string, at time.Time) error {
	a := accountKey(account)
	h.mu.Lock()
	for _, r := range rcpts {
		h.pending[histKey{a, recipientKey(r)}] = at.Unix()
	}
	full := len(h.pending) >= maxPending
	if !full && h.timer == nil && len(h.pending) > 0 {
		h.timer = time.AfterFunc(flushDelay, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := h.Flush(ctx); err != nil && h.Log != nil {
				h.Log.Error("sending limits: recipient history not written", "err", err)
			}
		})
	}
	h.mu.Unlock()
	if full {
		return h.Flush(ctx)
	}
	return nil
}

// Flush writes the waiting entries in one transaction. Entries that could
// not be written wait for the next flush, up to maxPending.
func (h *SQLiteHistory) Flush(ctx context.Context) error {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	batch := h.pending
	h.pending, h.flushing = map[histKey]int64{}, batch
	h.mu.Unlock()
	err := h.write(ctx, batch)
	h.mu.Lock()
	h.flushing = nil
	if err != nil {
		for k, v := range batch {
			if _, ok := h.pending[k]; !ok && len(h.pending) < maxPending {
				h.pending[k] = v
			}
		}
	}
	h.mu.Unlock()
	return err
}

// write stores batch in one transaction.
func (h *SQLiteHistory) write(ctx context.Context, batch map[histKey]int64) error {
	if len(batch) == 0 {
		return nil
	}
	tx, err := h.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sending history: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO sending_history (account, recipient, last) VALUES (?, ?, ?)
		ON CONFLICT (account, recipient) DO UPDATE SET last = max(last, excluded.last)`)
	if err != nil {
		return fmt.Errorf("sending history: %w", err)
	}
	defer st.Close()
	for k, last := range batch {
		if _, err := st.ExecContext(ctx, k.account, k.rcpt[:], last); err != nil {
			return fmt.Errorf("sending history: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sending history: %w", err)
	}
	return nil
}

// Close writes what is waiting; the history must not be used after it.
func (h *SQLiteHistory) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return h.Flush(ctx)
}

// Prune implements History.
func (h *SQLiteHistory) Prune(ctx context.Context, before time.Time) (int64, error) {
	res, err := h.db.ExecContext(ctx, `DELETE FROM sending_history WHERE last < ?`, before.Unix())
	if err != nil {
		return 0, fmt.Errorf("sending history: %w", err)
	}
	return res.RowsAffected()
}
