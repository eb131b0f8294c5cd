package sending

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"submitd/internal/sqlitedb"
)

// windowMigrations are the per-node windows' table: one row per window and
// minute with events, and the minute the row leaves its window (ends), by
// which rows are pruned. The rows are bounded as the windows in memory are.
var windowMigrations = []string{
	`CREATE TABLE sending_windows (
		key    TEXT NOT NULL,
		minute INTEGER NOT NULL,
		n      INTEGER NOT NULL,
		span   INTEGER NOT NULL,
		ends   INTEGER NOT NULL,
		PRIMARY KEY (key, minute)
	) WITHOUT ROWID;
	CREATE INDEX sending_windows_ends ON sending_windows(ends);`,
}

// SQLiteWindows keeps a Memory counter's windows in the node's SQLite
// database, so that a restart does not give every account its whole
// hourly and daily limits again (issue 19).
type SQLiteWindows struct {
	// db is the database.
	db *sql.DB
}

// NewSQLiteWindows creates the windows' table in db.
func NewSQLiteWindows(ctx context.Context, db *sql.DB) (*SQLiteWindows, error) {
	if err := sqlitedb.Migrate(ctx, db, "sending_windows", windowMigrations); err != nil {
		return nil, err
	}
	return &SQLiteWindows{db: db}, nil
}

// savedWindow is one window as the table holds it.
type savedWindow struct {
	// key names it; w is nil when it emptied and is to be deleted.
	key string
	w   *window
}

// save replaces the stored windows of ws and deletes the rows out of their
// windows by minute now, in one transaction.
func (s *SQLiteWindows) save(ctx context.Context, now int64, ws []savedWindow) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	defer tx.Rollback()
	del, err := tx.PrepareContext(ctx, `DELETE FROM sending_windows WHERE key = ?`)
	if err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	defer del.Close()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO sending_windows (key, minute, n, span, ends) VALUES (?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	defer ins.Close()
	for _, sw := range ws {
		if _, err := del.ExecContext(ctx, sw.key); err != nil {
			return fmt.Errorf("sending windows: %w", err)
		}
		if sw.w == nil {
			continue
		}
		for _, b := range sw.w.buckets {
			if _, err := ins.ExecContext(ctx, sw.key, b.minute, b.n, sw.w.span, b.minute+sw.w.span); err != nil {
				return fmt.Errorf("sending windows: %w", err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM sending_windows WHERE ends <= ?`, now); err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	return nil
}

// load returns the windows with events still in them at minute now.
func (s *SQLiteWindows) load(ctx context.Context, now int64) (map[string]*window, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, minute, n, span FROM sending_windows WHERE ends > ? ORDER BY key, minute`, now)
	if err != nil {
		return nil, fmt.Errorf("sending windows: %w", err)
	}
	defer rows.Close()
	out := map[string]*window{}
	for rows.Next() {
		var key string
		var minute, n, span int64
		if err := rows.Scan(&key, &minute, &n, &span); err != nil {
			return nil, fmt.Errorf("sending windows: %w", err)
		}
		w := out[key]
		if w == nil {
			w = &window{span: span}
			out[key] = w
		}
		w.buckets = append(w.buckets, bucket{minute, n})
		w.total += n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sending windows: %w", err)
	}
	return out, nil
}

// Restore loads the windows st kept, and keeps saving the changed ones
// there (Flush). It is called before the counter counts anything.
func (m *Memory) Restore(ctx context.Context, st *SQLiteWindows, now time.Time) error {
	ws, err := st.load(ctx, minuteOf(now))
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.store, m.dirty = st, map[string]struct{}{}
	for k, w := range ws {
		m.windows[k] = w
	}
	return nil
}

// Flush saves the windows that changed since the last flush: one
// transaction, however many messages they counted. A crash loses at most
// what was counted since.
func (m *Memory) Flush(ctx context.Context, now time.Time) error {
	m.mu.Lock()
	st := m.store
	if st == nil || len(m.dirty) == 0 {
		m.mu.Unlock()
		return nil
	}
	ws := make([]savedWindow, 0, len(m.dirty))
	for k := range m.dirty {
		sw := savedWindow{key: k}
		if w := m.windows[k]; w != nil && w.total > 0 {
			sw.w = &window{buckets: slices.Clone(w.buckets), total: w.total, span: w.span}
		}
		ws = append(ws, sw)
	}
	dirty := m.dirty
	m.dirty = map[string]struct{}{}
	m.mu.Unlock()
	if err := st.save(ctx, minuteOf(now), ws); err != nil {
		m.mu.Lock()
		for k := range dirty {
			m.dirty[k] = struct{}{}
		}
		m.mu.Unlock()
		return err
	}
	return nil
}

// changed notes key for the next flush; m.mu is held.
func (m *Memory) changed(key string) {
	if m.dirty != nil {
		m.dirty[key] = struct{}{}
	}
}
