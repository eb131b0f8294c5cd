package sending

import (
	"context"
	"database/sql"
	"fmt"
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

// windowMinute names one minute of one window.
type windowMinute struct {
	key    string
	minute int64
}

// savedMinute is one minute of a window as the table holds it; n is 0 when
// its events were all given back and the row is to be deleted.
type savedMinute struct {
	windowMinute
	n, span int64
}

// save writes the minutes ms and deletes the rows out of their windows by
// minute now, in one transaction. A flush writes only the minutes that
// changed, not whole windows: a day's window of a busy account holds up to
// 1440 of them.
func (s *SQLiteWindows) save(ctx context.Context, now int64, ms []savedMinute) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	defer tx.Rollback()
	del, err := tx.PrepareContext(ctx, `DELETE FROM sending_windows WHERE key = ? AND minute = ?`)
	if err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	defer del.Close()
	put, err := tx.PrepareContext(ctx, `INSERT INTO sending_windows (key, minute, n, span, ends) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key, minute) DO UPDATE SET n = excluded.n, span = excluded.span, ends = excluded.ends`)
	if err != nil {
		return fmt.Errorf("sending windows: %w", err)
	}
	defer put.Close()
	for _, m := range ms {
		if m.n == 0 {
			_, err = del.ExecContext(ctx, m.key, m.minute)
		} else {
			_, err = put.ExecContext(ctx, m.key, m.minute, m.n, m.span, m.minute+m.span)
		}
		if err != nil {
			return fmt.Errorf("sending windows: %w", err)
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
	m.store, m.dirty = st, map[windowMinute]int64{}
	for k, w := range ws {
		m.windows[k] = w
	}
	return nil
}

// Flush saves the minutes of windows that changed since the last flush:
// one transaction, however many messages they counted. A crash loses at
// most what was counted since. A minute that left its window needs no
// write, the rows out of their windows being deleted anyway; so what waits
// for a flush while the database fails is bounded as the windows are.
func (m *Memory) Flush(ctx context.Context, now time.Time) error {
	min := minuteOf(now)
	m.mu.Lock()
	st := m.store
	if st == nil || len(m.dirty) == 0 {
		m.mu.Unlock()
		return nil
	}
	ms := make([]savedMinute, 0, len(m.dirty))
	for wm, ends := range m.dirty {
		if ends <= min {
			continue
		}
		sm := savedMinute{windowMinute: wm, span: ends - wm.minute}
		if w := m.windows[wm.key]; w != nil {
			sm.n = w.at(wm.minute)
		}
		ms = append(ms, sm)
	}
	m.dirty = map[windowMinute]int64{}
	m.mu.Unlock()
	if err := st.save(ctx, min, ms); err != nil {
		m.mu.Lock()
		for _, sm := range ms {
			if _, ok := m.dirty[sm.windowMinute]; !ok {
				m.dirty[sm.windowMinute] = sm.minute + sm.span
			}
		}
		m.mu.Unlock()
		return err
	}
	return nil
}

// changed notes a minute of the window key, span minutes long, for the
// next flush; m.mu is held.
func (m *Memory) changed(key string, minute, span int64) {
	if m.dirty != nil {
		m.dirty[windowMinute{key, minute}] = minute + span
	}
}

// at is how many events w holds in minute, 0 when the minute left the
// window or has none. The minutes that change are the latest, so the
// search starts from them.
func (w *window) at(minute int64) int64 {
	for i := len(w.buckets) - 1; i >= 0; i-- {
		if b := w.buckets[i]; b.minute <= minute {
			if b.minute == minute {
				return b.n
			}
			break
		}
	}
	return 0
}
