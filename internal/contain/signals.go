package contain

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
	"submitd/internal/sqlitedb"
)

// The kinds of Count, one letter each as the tables hold them.
const (
	// KindHour counts an account's messages in one hour (the volume
	// history); At is the hour's start.
	KindHour = "h"
	// KindSlice counts its messages in one twelfth of an hour (the last
	// hour of the volume signal); At is the slice's start.
	KindSlice = "s"
	// KindRcpts and KindRefused count delivered and refused recipients in
	// one bucket of the bounce window; At is the bucket's start.
	KindRcpts   = "r"
	KindRefused = "f"
	// KindHit is one sending limit hit; At is its time and N is 1.
	KindHit = "l"
	// KindSpam counts the content scanner's spam verdicts on an account's
	// messages (SPEC R22) at one moment; At is its time and N how many.
	KindSpam = "p"
	// KindNetwork is a network the account logged in from: Key is the
	// network, At is 0 and N the time of the latest login.
	KindNetwork = "n"
	// KindSince is when the detectors sharing the store began counting:
	// Account is "", At 0 and N the time. It tells a short history from a
	// quiet account.
	KindSince = "o"
)

// allKinds are the kinds of an account, which Forget resets.
const allKinds = KindHour + KindSlice + KindRcpts + KindRefused + KindHit + KindSpam + KindNetwork

// Count is one figure of a detector's windows as a SignalStore keeps it.
// Times are Unix nanoseconds.
type Count struct {
	// Account is the account's address; "" for KindSince.
	Account string
	// Kind is one of the Kind constants.
	Kind string
	// At is the bucket's start or the event's time (0 for KindNetwork and
	// KindSince).
	At int64
	// Key is the network of KindNetwork, "" otherwise.
	Key string
	// N is the count, or a time for KindNetwork and KindSince.
	N int64
}

// Reset forgets the given kinds of an account: its figures after a trip,
// or all of them after a release.
type Reset struct {
	// Account is the account's address.
	Account string
	// Kinds are the Kind letters to forget.
	Kinds string
}

// merge combines two values of one Count key as the stores do: the later
// time for hits and networks, the earlier for KindSince, the sum otherwise.
func merge(kind string, a, b int64) int64 {
	switch kind {
	case KindHit, KindNetwork:
		return max(a, b)
	case KindSince:
		return min(a, b)
	}
	return a + b
}

// SignalStore keeps the detector's windows across restarts (issue 19). A
// store in PostgreSQL is shared by the nodes: each adds what it counted, so
// the figures are the cluster's. Implementations are safe for concurrent
// use.
type SignalStore interface {
	// SaveCounts applies resets, then merges counts into what is stored
	// (see merge), in one transaction.
	SaveCounts(ctx context.Context, resets []Reset, counts []Count) error
	// LoadCounts calls each with everything stored, as it reads it.
	LoadCounts(ctx context.Context, each func(Count)) error
	// PruneCounts deletes, for each kind, the figures older than its
	// cutoff (Unix nanoseconds; for KindNetwork the latest login).
	PruneCounts(ctx context.Context, before map[string]int64) error
}

// signalMigrations are the table of the counts, the same in SQLite and
// PostgreSQL. Its rows per account are bounded by the windows: at most
// 24×rise_days+1 hours, 12 slices, 12 buckets each of recipients and
// refusals, limit_hits hits, spam verdicts and networks networks.
var signalMigrations = []string{
	`CREATE TABLE contain_counts (
		account TEXT NOT NULL,
		kind    TEXT NOT NULL,
		at      BIGINT NOT NULL,
		key     TEXT NOT NULL,
		n       BIGINT NOT NULL,
		PRIMARY KEY (account, kind, at, key)
	);
	CREATE INDEX contain_counts_kind ON contain_counts(kind, at);`,
}

// SQLiteSignals is the SignalStore in the node's SQLite database.
type SQLiteSignals struct {
	// db is the database.
	db *sql.DB
}

var _ SignalStore = (*SQLiteSignals)(nil)

// NewSQLiteSignals migrates the table in db and returns a store on it.
func NewSQLiteSignals(ctx context.Context, db *sql.DB) (*SQLiteSignals, error) {
	if err := sqlitedb.Migrate(ctx, db, "contain_counts", signalMigrations); err != nil {
		return nil, err
	}
	return &SQLiteSignals{db: db}, nil
}

// kindList is "?, ?, …" for the letters of kinds, and the letters.
func kindList(kinds string, placeholder func(i int) string, first int) (string, []any) {
	var ph []string
	var args []any
	for i, k := range strings.Split(kinds, "") {
		ph = append(ph, placeholder(first+i))
		args = append(args, k)
	}
	return strings.Join(ph, ", "), args
}

// upsertSQL merges rows counts, with distinct keys, as merge does;
// SQLite's max and min of two arguments are PostgreSQL's GREATEST and LEAST.
func upsertSQL(p func(int) string, rows int, greatest, least string) string {
	var values []string
	for r := range rows {
		i := 5*r + 1
		values = append(values, `(`+p(i)+`, `+p(i+1)+`, `+p(i+2)+`, `+p(i+3)+`, `+p(i+4)+`)`)
	}
	return `INSERT INTO contain_counts (account, kind, at, key, n) VALUES ` + strings.Join(values, ", ") + `
		ON CONFLICT (account, kind, at, key) DO UPDATE SET n = CASE
			WHEN contain_counts.kind IN ('` + KindHit + `', '` + KindNetwork + `') THEN ` + greatest + `(contain_counts.n, excluded.n)
			WHEN contain_counts.kind = '` + KindSince + `' THEN ` + least + `(contain_counts.n, excluded.n)
			ELSE contain_counts.n + excluded.n END`
}

// pruneSQL deletes one kind's figures before a cutoff.
func pruneSQL(kind string, p func(int) string) string {
	col := "at"
	if kind == KindNetwork {
		col = "n"
	}
	return `DELETE FROM contain_counts WHERE kind = ` + p(1) + ` AND ` + col + ` < ` + p(2)
}

// sqliteRowsPerInsert is how many rows one INSERT of SaveCounts holds in
// SQLite: 1000 arguments, well within its limit.
const sqliteRowsPerInsert = 200

// sqlitePlaceholder is SQLite's "?".
func sqlitePlaceholder(int) string { return "?" }

// pgPlaceholder is PostgreSQL's "$i".
func pgPlaceholder(i int) string { return fmt.Sprintf("$%d", i) }

// SaveCounts implements SignalStore.
func (s *SQLiteSignals) SaveCounts(ctx context.Context, resets []Reset, counts []Count) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("contain: save counts: %w", err)
	}
	defer tx.Rollback()
	for _, r := range resets {
		in, args := kindList(r.Kinds, sqlitePlaceholder, 2)
		if _, err := tx.ExecContext(ctx, `DELETE FROM contain_counts WHERE account = ? AND kind IN (`+in+`)`,
			append([]any{r.Account}, args...)...); err != nil {
			return fmt.Errorf("contain: reset counts of %s: %w", r.Account, err)
		}
	}
	if len(counts) > 0 {
		// Many rows a statement: one statement per row would cost most
		// of the time in SQLite's statement machinery.
		full, err := tx.PrepareContext(ctx, upsertSQL(sqlitePlaceholder, sqliteRowsPerInsert, "max", "min"))
		if err != nil {
			return fmt.Errorf("contain: save counts: %w", err)
		}
		defer full.Close()
		for len(counts) > 0 {
			chunk := counts[:min(len(counts), sqliteRowsPerInsert)]
			counts = counts[len(chunk):]
			args := make([]any, 0, 5*len(chunk))
			for _, c := range chunk {
				args = append(args, c.Account, c.Kind, c.At, c.Key, c.N)
			}
			st := full
			if len(chunk) < sqliteRowsPerInsert {
				if st, err = tx.PrepareContext(ctx, upsertSQL(sqlitePlaceholder, len(chunk), "max", "min")); err != nil {
					return fmt.Errorf("contain: save counts: %w", err)
				}
				defer st.Close()
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("contain: save counts: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("contain: save counts: %w", err)
	}
	return nil
}

// LoadCounts implements SignalStore.
func (s *SQLiteSignals) LoadCounts(ctx context.Context, each func(Count)) error {
	rows, err := s.db.QueryContext(ctx, `SELECT account, kind, at, key, n FROM contain_counts`)
	if err != nil {
		return fmt.Errorf("contain: load counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c Count
		if err := rows.Scan(&c.Account, &c.Kind, &c.At, &c.Key, &c.N); err != nil {
			return fmt.Errorf("contain: load counts: %w", err)
		}
		each(c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("contain: load counts: %w", err)
	}
	return nil
}

// PruneCounts implements SignalStore.
func (s *SQLiteSignals) PruneCounts(ctx context.Context, before map[string]int64) error {
	for kind, cut := range before {
		if _, err := s.db.ExecContext(ctx, pruneSQL(kind, sqlitePlaceholder), kind, cut); err != nil {
			return fmt.Errorf("contain: prune counts: %w", err)
		}
	}
	return nil
}

// PostgresSignals is the SignalStore in PostgreSQL, shared by the nodes.
type PostgresSignals struct {
	// pool is the connection pool.
	pool *pgxpool.Pool
}

var _ SignalStore = (*PostgresSignals)(nil)

// NewPostgresSignals migrates the table and returns a store on pool.
func NewPostgresSignals(ctx context.Context, pool *pgxpool.Pool) (*PostgresSignals, error) {
	if err := pgdb.Migrate(ctx, pool, "contain_counts", signalMigrations); err != nil {
		return nil, err
	}
	return &PostgresSignals{pool: pool}, nil
}

// SaveCounts implements SignalStore. The counts go in one batch, one round
// trip however many there are.
func (s *PostgresSignals) SaveCounts(ctx context.Context, resets []Reset, counts []Count) error {
	b := &pgx.Batch{}
	for _, r := range resets {
		in, args := kindList(r.Kinds, pgPlaceholder, 2)
		b.Queue(`DELETE FROM contain_counts WHERE account = $1 AND kind IN (`+in+`)`, append([]any{pgdb.Text(r.Account)}, args...)...)
	}
	q := upsertSQL(pgPlaceholder, 1, "GREATEST", "LEAST")
	for _, c := range counts {
		b.Queue(q, pgdb.Text(c.Account), c.Kind, c.At, pgdb.Text(c.Key), c.N)
	}
	if b.Len() == 0 {
		return nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("contain: save counts: %w", err)
	}
	defer tx.Rollback(ctx)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("contain: save counts: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("contain: save counts: %w", err)
	}
	return nil
}

// LoadCounts implements SignalStore.
func (s *PostgresSignals) LoadCounts(ctx context.Context, each func(Count)) error {
	rows, err := s.pool.Query(ctx, `SELECT account, kind, at, key, n FROM contain_counts`)
	if err != nil {
		return fmt.Errorf("contain: load counts: %w", err)
	}
	var c Count
	_, err = pgx.ForEachRow(rows, []any{&c.Account, &c.Kind, &c.At, &c.Key, &c.N}, func() error {
		each(c)
		return nil
	})
	if err != nil {
		return fmt.Errorf("contain: load counts: %w", err)
	}
	return nil
}

// PruneCounts implements SignalStore.
func (s *PostgresSignals) PruneCounts(ctx context.Context, before map[string]int64) error {
	for kind, cut := range before {
		if _, err := s.pool.Exec(ctx, pruneSQL(kind, pgPlaceholder), kind, cut); err != nil {
			return fmt.Errorf("contain: prune counts: %w", err)
		}
	}
	return nil
}
