package guard

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"submitd/internal/sqlitedb"
)

// sqliteMigrations are the guard's tables in the embedded database. Times are
// Unix nanoseconds; keys are netip.Prefix strings ("192.0.2.7/32",
// "2001:db8:1:2::/64"); session ids are joined with commas.
var sqliteMigrations = []string{
	`CREATE TABLE guard_failures (
		key        TEXT NOT NULL,
		time       INTEGER NOT NULL,
		session_id TEXT NOT NULL
	);
	CREATE INDEX guard_failures_key ON guard_failures(key, time);
	CREATE INDEX guard_failures_time ON guard_failures(time);
	CREATE TABLE guard_blocks (
		key         TEXT PRIMARY KEY,
		since       INTEGER NOT NULL,
		until       INTEGER NOT NULL,
		session_ids TEXT NOT NULL
	);
	CREATE TABLE guard_changes (
		seq         INTEGER PRIMARY KEY AUTOINCREMENT,
		node        TEXT NOT NULL,
		kind        TEXT NOT NULL,
		key         TEXT NOT NULL,
		time        INTEGER NOT NULL,
		until       INTEGER NOT NULL,
		session_ids TEXT NOT NULL
	);
	CREATE INDEX guard_changes_time ON guard_changes(time);
	CREATE TABLE guard_pruned (
		id  INTEGER PRIMARY KEY CHECK (id = 1),
		seq INTEGER NOT NULL
	);
	INSERT INTO guard_pruned (id, seq) VALUES (1, 0);`,
}

// SQLite is the Store in submitd's embedded database, shared by the server
// and the CLI of one node.
type SQLite struct {
	db *sql.DB
	// prefix replaces "guard_" in table names; "" keeps them (NewSQLiteNamed).
	prefix string

	// AddFailure commits in groups: failures that arrive while a commit is
	// under way go together in the next one. Each caller still returns only
	// once its own failure is on disk, but a distributed attack costs one
	// transaction per commit, not one per failure, and leaves the database's
	// single writer to the session log and the rest.
	mu      sync.Mutex // guards pending
	pending *failureGroup
	commit  sync.Mutex // held by the caller committing a group
}

// failureGroup is failures waiting for one commit.
type failureGroup struct {
	node  []string
	keys  []netip.Prefix
	fails []Failure
	done  chan struct{}
	err   error
}

var _ Store = (*SQLite)(nil)

// NewSQLite migrates the guard tables in db.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	return NewSQLiteNamed(ctx, db, "guard")
}

// NewSQLiteNamed migrates a set of guard tables whose names start with
// name and "_", so that a second guard with a key space and limits of its
// own (the admin login's) keeps its state apart from SMTP AUTH's in the
// same database. The name must be a plain SQL identifier.
func NewSQLiteNamed(ctx context.Context, db *sql.DB, name string) (*SQLite, error) {
	s := &SQLite{db: db}
	if name != "guard" {
		s.prefix = name + "_"
	}
	steps := make([]string, len(sqliteMigrations))
	for i, m := range sqliteMigrations {
		steps[i] = s.q(m)
	}
	if err := sqlitedb.Migrate(ctx, db, name, steps); err != nil {
		return nil, err
	}
	return s, nil
}

// q names the tables of this store in query.
func (s *SQLite) q(query string) string {
	if s.prefix == "" {
		return query
	}
	return strings.ReplaceAll(query, "guard_", s.prefix)
}

func (s *SQLite) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *SQLite) logChange(ctx context.Context, tx *sql.Tx, ch Change) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO guard_changes (node, kind, key, time, until, session_ids)
		VALUES (?, ?, ?, ?, ?, ?)`),
		ch.Node, string(ch.Kind), ch.Key.String(), ch.Time.UnixNano(), nanos(ch.Until), strings.Join(ch.SIDs, ","))
	return err
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func splitIDs(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func parseKey(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("stored key %q: %w", s, err)
	}
	return p, nil
}

// AddFailure implements Store. The first caller to find no group open opens
// one and commits it once the commit before it is done; the callers that
// join meanwhile wait for that commit.
func (s *SQLite) AddFailure(ctx context.Context, node string, key netip.Prefix, f Failure) error {
	s.mu.Lock()
	g := s.pending
	lead := g == nil
	if lead {
		g = &failureGroup{done: make(chan struct{})}
		s.pending = g
	}
	g.node = append(g.node, node)
	g.keys = append(g.keys, key)
	g.fails = append(g.fails, f)
	s.mu.Unlock()

	if lead {
		s.commit.Lock()
		s.mu.Lock()
		s.pending = nil // later failures open the next group
		s.mu.Unlock()
		g.err = s.inTx(ctx, func(tx *sql.Tx) error {
			for i, k := range g.keys {
				f := g.fails[i]
				if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO guard_failures (key, time, session_id) VALUES (?, ?, ?)`),
					k.String(), f.Time.UnixNano(), f.SID); err != nil {
					return err
				}
				if err := s.logChange(ctx, tx, Change{Node: g.node[i], Kind: ChangeFailure, Key: k, Time: f.Time, SIDs: []string{f.SID}}); err != nil {
					return err
				}
			}
			return nil
		})
		s.commit.Unlock()
		close(g.done)
	}
	select {
	case <-g.done:
	case <-ctx.Done():
		return fmt.Errorf("guard: record failure of %s: %w", FormatKey(key), ctx.Err())
	}
	if g.err != nil {
		return fmt.Errorf("guard: record failure of %s (one of %d committed together): %w", FormatKey(key), len(g.keys), g.err)
	}
	return nil
}

// Block implements Store.
func (s *SQLite) Block(ctx context.Context, node string, b Block) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO guard_blocks (key, since, until, session_ids) VALUES (?, ?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET since = excluded.since, until = excluded.until, session_ids = excluded.session_ids`),
			b.Key.String(), b.Since.UnixNano(), b.Until.UnixNano(), strings.Join(b.SIDs, ",")); err != nil {
			return err
		}
		return s.logChange(ctx, tx, Change{Node: node, Kind: ChangeBlock, Key: b.Key, Time: b.Since, Until: b.Until, SIDs: b.SIDs})
	})
	if err != nil {
		return fmt.Errorf("guard: record block of %s: %w", FormatKey(b.Key), err)
	}
	return nil
}

// Unblock implements Store. Keys are matched in Go: the tables are small
// (keys with failures in the last window), and prefix overlap is not
// something SQL on text keys does well.
func (s *SQLite) Unblock(ctx context.Context, node string, p netip.Prefix, at time.Time) ([]netip.Prefix, error) {
	var keys []netip.Prefix
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, s.q(`SELECT key FROM guard_blocks UNION SELECT DISTINCT key FROM guard_failures`))
		if err != nil {
			return err
		}
		var all []string
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return err
			}
			all = append(all, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, ks := range all {
			k, err := parseKey(ks)
			if err != nil || !p.Overlaps(k) {
				continue
			}
			keys = append(keys, k)
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM guard_blocks WHERE key = ?`), ks); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM guard_failures WHERE key = ?`), ks); err != nil {
				return err
			}
		}
		// Logged even when nothing matched here: another process may hold a
		// failure it has not written yet.
		return s.logChange(ctx, tx, Change{Node: node, Kind: ChangeUnblock, Key: p, Time: at})
	})
	if err != nil {
		return nil, fmt.Errorf("guard: unblock %s: %w", FormatKey(p), err)
	}
	return keys, nil
}

// Load implements Store. The change-log position is read first, so the state
// read after it includes at least everything up to that position.
func (s *SQLite) Load(ctx context.Context, since time.Time) (*State, error) {
	st := &State{Failures: map[netip.Prefix][]Failure{}, Blocks: map[netip.Prefix]Block{}}
	err := s.db.QueryRowContext(ctx, s.q(`SELECT max(
		(SELECT seq FROM guard_pruned WHERE id = 1),
		coalesce((SELECT max(seq) FROM guard_changes), 0))`)).Scan(&st.Seq)
	if err != nil {
		return nil, fmt.Errorf("guard: load change-log position: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT key, time, session_id FROM guard_failures WHERE time >= ? ORDER BY time`), since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("guard: load failures: %w", err)
	}
	for rows.Next() {
		var ks, sid string
		var t int64
		if err := rows.Scan(&ks, &t, &sid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("guard: load failures: %w", err)
		}
		k, err := parseKey(ks)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("guard: load failures: %w", err)
		}
		st.Failures[k] = append(st.Failures[k], Failure{Time: time.Unix(0, t), SID: sid})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("guard: load failures: %w", err)
	}
	rows, err = s.db.QueryContext(ctx, s.q(`SELECT key, since, until, session_ids FROM guard_blocks WHERE until > ?`), since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("guard: load blocks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ks, ids string
		var since, until int64
		if err := rows.Scan(&ks, &since, &until, &ids); err != nil {
			return nil, fmt.Errorf("guard: load blocks: %w", err)
		}
		k, err := parseKey(ks)
		if err != nil {
			return nil, fmt.Errorf("guard: load blocks: %w", err)
		}
		st.Blocks[k] = Block{Key: k, Since: time.Unix(0, since), Until: time.Unix(0, until), SIDs: splitIDs(ids)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("guard: load blocks: %w", err)
	}
	return st, nil
}

// Changes implements Store. It runs every poll interval, so it is two small
// reads on indexed columns and no transaction (a transaction here would take
// the write lock: the database opens transactions IMMEDIATE). The entries are
// read before the pruning mark, so a prune racing with the read is noticed.
func (s *SQLite) Changes(ctx context.Context, after int64, limit int) ([]Change, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT seq, node, kind, key, time, until, session_ids
		FROM guard_changes WHERE seq > ? ORDER BY seq LIMIT ?`), after, limit)
	if err != nil {
		return nil, fmt.Errorf("guard: read change log: %w", err)
	}
	var out []Change
	for rows.Next() {
		var ch Change
		var kind, ks, ids string
		var t, until int64
		if err := rows.Scan(&ch.Seq, &ch.Node, &kind, &ks, &t, &until, &ids); err != nil {
			rows.Close()
			return nil, fmt.Errorf("guard: read change log: %w", err)
		}
		k, err := parseKey(ks)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("guard: read change log entry %d: %w", ch.Seq, err)
		}
		ch.Kind, ch.Key, ch.Time, ch.SIDs = ChangeKind(kind), k, time.Unix(0, t), splitIDs(ids)
		if until != 0 {
			ch.Until = time.Unix(0, until)
		}
		out = append(out, ch)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("guard: read change log: %w", err)
	}
	var pruned int64
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT seq FROM guard_pruned WHERE id = 1`)).Scan(&pruned); err != nil {
		return nil, fmt.Errorf("guard: read change log: %w", err)
	}
	if pruned > after {
		return nil, fmt.Errorf("guard: entries %d to %d are gone: %w", after+1, pruned, ErrChangesPruned)
	}
	return out, nil
}

// Prune implements Store.
func (s *SQLite) Prune(ctx context.Context, before time.Time) error {
	t := before.UnixNano()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM guard_failures WHERE time < ?`), t); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM guard_blocks WHERE until < ?`), t); err != nil {
			return err
		}
		var upto int64
		if err := tx.QueryRowContext(ctx, s.q(`SELECT coalesce(max(seq), 0) FROM guard_changes WHERE time < ?`), t).Scan(&upto); err != nil {
			return err
		}
		if upto == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM guard_changes WHERE seq <= ?`), upto); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`UPDATE guard_pruned SET seq = max(seq, ?) WHERE id = 1`), upto)
		return err
	})
	if err != nil {
		return fmt.Errorf("guard: prune: %w", err)
	}
	return nil
}
