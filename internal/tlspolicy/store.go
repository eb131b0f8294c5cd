package tlspolicy

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
	"submitd/internal/sqlitedb"
)

// Store keeps what outbound TLS must not forget over a restart: the cached
// MTA-STS policies (RFC 8461 §5.1) and the TLS results of the days not yet
// reported (RFC 8460). A store in PostgreSQL is shared by the nodes: a
// policy one fetched is in force on all, each adds the results it counted,
// and the node that takes a finished day reports the whole cluster's
// sessions once. Implementations are safe for concurrent use.
type Store interface {
	// SavePolicies stores ps, each replacing the policy of its domain,
	// then deletes the policies expired at now and keeps only the max
	// that expire last.
	SavePolicies(ctx context.Context, ps []StoredPolicy, now time.Time, max int) error
	// LoadPolicies returns the policies not expired at now, at most max,
	// those expiring last.
	LoadPolicies(ctx context.Context, now time.Time, max int) ([]StoredPolicy, error)
	// AddCounts adds each count to the one stored under its key.
	AddCounts(ctx context.Context, cs []Count) error
	// LoadCounts returns every count stored.
	LoadCounts(ctx context.Context) ([]Count, error)
	// TakeCounts deletes and returns, at once, the counts of the days
	// before the day before ("2006-01-02"): of nodes taking together, each
	// count goes to one.
	TakeCounts(ctx context.Context, before string) ([]Count, error)
}

// StoredPolicy is a cached MTA-STS policy as a Store keeps it.
type StoredPolicy struct {
	// Domain is the policy domain; ID the id of its TXT record when the
	// policy was fetched.
	Domain, ID string
	// Policy is the policy.
	Policy Policy
	// Fetched is when it was fetched; Expires when its max_age ends.
	Fetched, Expires time.Time
}

// Count is one figure of the TLS results as a Store keeps it: the sessions
// of a UTC day to a policy domain under one kind of policy with one
// outcome.
type Count struct {
	// Day is the UTC day, "2006-01-02".
	Day string
	// Domain is the policy domain; Kind the policy.
	Domain string
	Kind   Kind
	// Policy is the policy's compact form (Applied); "" for none, or
	// when the domain had too many policies to tell apart.
	Policy string
	// Result is "" for success, else a result type of RFC 8460 §4.3.
	Result string
	// MXHost and ReceivingIP are the host's; "" when not known, or when
	// the domain had too many to tell apart.
	MXHost, ReceivingIP string
	// N is the number of sessions.
	N int64
}

// kindOf is the Kind that String names; anything else is Opportunistic.
func kindOf(s string) Kind {
	for _, k := range []Kind{DANE, MTASTS} {
		if k.String() == s {
			return k
		}
	}
	return Opportunistic
}

// storeMigrations are the tables, the same in SQLite and PostgreSQL. The
// policies are bounded by the cache's bound (SavePolicies), the counts by
// the days not yet reported, each within the bounds of Results.
var storeMigrations = []string{
	`CREATE TABLE tlspolicy_sts (
		domain  TEXT PRIMARY KEY,
		id      TEXT NOT NULL,
		mode    TEXT NOT NULL,
		max_age BIGINT NOT NULL,
		mx      TEXT NOT NULL,
		fetched BIGINT NOT NULL,
		expires BIGINT NOT NULL
	);
	CREATE INDEX tlspolicy_sts_expires ON tlspolicy_sts(expires);
	CREATE TABLE tlspolicy_counts (
		day    TEXT NOT NULL,
		domain TEXT NOT NULL,
		kind   TEXT NOT NULL,
		policy TEXT NOT NULL,
		result TEXT NOT NULL,
		mx     TEXT NOT NULL,
		ip     TEXT NOT NULL,
		n      BIGINT NOT NULL,
		PRIMARY KEY (day, domain, kind, policy, result, mx, ip)
	);`,
}

// The statements, with placeholders written $1…; SQLite takes them too.
const (
	savePolicySQL = `INSERT INTO tlspolicy_sts (domain, id, mode, max_age, mx, fetched, expires)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (domain) DO UPDATE SET id = excluded.id, mode = excluded.mode, max_age = excluded.max_age,
			mx = excluded.mx, fetched = excluded.fetched, expires = excluded.expires`
	prunePoliciesSQL = `DELETE FROM tlspolicy_sts WHERE expires <= $1 OR domain NOT IN
		(SELECT domain FROM tlspolicy_sts WHERE expires > $1 ORDER BY expires DESC, domain LIMIT $2)`
	loadPoliciesSQL = `SELECT domain, id, mode, max_age, mx, fetched, expires FROM tlspolicy_sts
		WHERE expires > $1 ORDER BY expires DESC, domain LIMIT $2`
	addCountSQL = `INSERT INTO tlspolicy_counts (day, domain, kind, policy, result, mx, ip, n) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (day, domain, kind, policy, result, mx, ip) DO UPDATE SET n = tlspolicy_counts.n + excluded.n`
	loadCountsSQL = `SELECT day, domain, kind, policy, result, mx, ip, n FROM tlspolicy_counts`
	takeCountsSQL = `DELETE FROM tlspolicy_counts WHERE day < $1 RETURNING day, domain, kind, policy, result, mx, ip, n`
)

// policyArgs are the arguments of savePolicySQL for p; text passes each
// string through (PostgreSQL wants valid UTF-8).
func policyArgs(p StoredPolicy, text func(string) string) []any {
	return []any{text(p.Domain), text(p.ID), string(p.Policy.Mode), int64(p.Policy.MaxAge / time.Second),
		text(strings.Join(p.Policy.MX, " ")), p.Fetched.UnixNano(), p.Expires.UnixNano()}
}

// countArgs are the arguments of addCountSQL for c.
func countArgs(c Count, text func(string) string) []any {
	return []any{c.Day, text(c.Domain), c.Kind.String(), text(c.Policy), text(c.Result), text(c.MXHost), text(c.ReceivingIP), c.N}
}

// scanner is a row of either database.
type scanner interface{ Scan(dest ...any) error }

// scanPolicy reads a row of loadPoliciesSQL.
func scanPolicy(r scanner) (StoredPolicy, error) {
	var p StoredPolicy
	var mode, mx string
	var maxAge, fetched, expires int64
	if err := r.Scan(&p.Domain, &p.ID, &mode, &maxAge, &mx, &fetched, &expires); err != nil {
		return p, fmt.Errorf("tlspolicy: load policies: %w", err)
	}
	p.Policy = Policy{Mode: Mode(mode), MaxAge: time.Duration(maxAge) * time.Second, MX: strings.Fields(mx)}
	p.Fetched, p.Expires = time.Unix(0, fetched), time.Unix(0, expires)
	return p, nil
}

// scanCount reads a row of loadCountsSQL or takeCountsSQL.
func scanCount(r scanner) (Count, error) {
	var c Count
	var kind string
	if err := r.Scan(&c.Day, &c.Domain, &kind, &c.Policy, &c.Result, &c.MXHost, &c.ReceivingIP, &c.N); err != nil {
		return c, fmt.Errorf("tlspolicy: load counts: %w", err)
	}
	c.Kind = kindOf(kind)
	return c, nil
}

// sqliteSQL turns the placeholders $1… into SQLite's ?NNN.
func sqliteSQL(q string) string { return strings.ReplaceAll(q, "$", "?") }

// noText leaves strings as they are: SQLite keeps any bytes.
func noText(s string) string { return s }

// SQLiteStore is the Store in the node's SQLite database.
type SQLiteStore struct {
	// db is the database.
	db *sql.DB
}

var _ Store = (*SQLiteStore)(nil)

// NewSQLiteStore migrates the tables in db and returns a Store on them.
func NewSQLiteStore(ctx context.Context, db *sql.DB) (*SQLiteStore, error) {
	if err := sqlitedb.Migrate(ctx, db, "tlspolicy", storeMigrations); err != nil {
		return nil, err
	}
	return &SQLiteStore{db: db}, nil
}

// SavePolicies implements Store.
func (s *SQLiteStore) SavePolicies(ctx context.Context, ps []StoredPolicy, now time.Time, max int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tlspolicy: save policies: %w", err)
	}
	defer tx.Rollback()
	for _, p := range ps {
		if _, err := tx.ExecContext(ctx, sqliteSQL(savePolicySQL), policyArgs(p, noText)...); err != nil {
			return fmt.Errorf("tlspolicy: save the policy of %s: %w", p.Domain, err)
		}
	}
	if _, err := tx.ExecContext(ctx, sqliteSQL(prunePoliciesSQL), now.UnixNano(), max); err != nil {
		return fmt.Errorf("tlspolicy: prune policies: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tlspolicy: save policies: %w", err)
	}
	return nil
}

// LoadPolicies implements Store.
func (s *SQLiteStore) LoadPolicies(ctx context.Context, now time.Time, max int) ([]StoredPolicy, error) {
	rows, err := s.db.QueryContext(ctx, sqliteSQL(loadPoliciesSQL), now.UnixNano(), max)
	if err != nil {
		return nil, fmt.Errorf("tlspolicy: load policies: %w", err)
	}
	return sqliteRows(rows, scanPolicy)
}

// AddCounts implements Store.
func (s *SQLiteStore) AddCounts(ctx context.Context, cs []Count) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tlspolicy: save counts: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, sqliteSQL(addCountSQL))
	if err != nil {
		return fmt.Errorf("tlspolicy: save counts: %w", err)
	}
	defer st.Close()
	for _, c := range cs {
		if _, err := st.ExecContext(ctx, countArgs(c, noText)...); err != nil {
			return fmt.Errorf("tlspolicy: save counts: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tlspolicy: save counts: %w", err)
	}
	return nil
}

// LoadCounts implements Store.
func (s *SQLiteStore) LoadCounts(ctx context.Context) ([]Count, error) {
	rows, err := s.db.QueryContext(ctx, loadCountsSQL)
	if err != nil {
		return nil, fmt.Errorf("tlspolicy: load counts: %w", err)
	}
	return sqliteRows(rows, scanCount)
}

// TakeCounts implements Store.
func (s *SQLiteStore) TakeCounts(ctx context.Context, before string) ([]Count, error) {
	rows, err := s.db.QueryContext(ctx, sqliteSQL(takeCountsSQL), before)
	if err != nil {
		return nil, fmt.Errorf("tlspolicy: take counts: %w", err)
	}
	return sqliteRows(rows, scanCount)
}

// rows are the rows of a query in either database.
type rows interface {
	scanner
	Next() bool
	Err() error
}

// readRows reads rs with scan; the caller closes rs.
func readRows[T any](rs rows, scan func(scanner) (T, error)) ([]T, error) {
	var out []T
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("tlspolicy: %w", err)
	}
	return out, nil
}

// sqliteRows reads rs with scan and closes it.
func sqliteRows[T any](rs *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rs.Close()
	return readRows(rs, scan)
}

// PostgresStore is the Store in PostgreSQL, shared by the nodes.
type PostgresStore struct {
	// pool is the connection pool.
	pool *pgxpool.Pool
}

var _ Store = (*PostgresStore)(nil)

// NewPostgresStore migrates the tables and returns a Store on pool.
func NewPostgresStore(ctx context.Context, pool *pgxpool.Pool) (*PostgresStore, error) {
	if err := pgdb.Migrate(ctx, pool, "tlspolicy", storeMigrations); err != nil {
		return nil, err
	}
	return &PostgresStore{pool: pool}, nil
}

// SavePolicies implements Store, in one transaction and one round trip.
func (s *PostgresStore) SavePolicies(ctx context.Context, ps []StoredPolicy, now time.Time, max int) error {
	b := &pgx.Batch{}
	for _, p := range ps {
		b.Queue(savePolicySQL, policyArgs(p, pgdb.Text)...)
	}
	b.Queue(prunePoliciesSQL, now.UnixNano(), max)
	return s.batch(ctx, b, "save policies")
}

// LoadPolicies implements Store.
func (s *PostgresStore) LoadPolicies(ctx context.Context, now time.Time, max int) ([]StoredPolicy, error) {
	rows, err := s.pool.Query(ctx, loadPoliciesSQL, now.UnixNano(), max)
	if err != nil {
		return nil, fmt.Errorf("tlspolicy: load policies: %w", err)
	}
	return pgRows(rows, scanPolicy)
}

// AddCounts implements Store, in one transaction and one round trip.
func (s *PostgresStore) AddCounts(ctx context.Context, cs []Count) error {
	b := &pgx.Batch{}
	for _, c := range cs {
		b.Queue(addCountSQL, countArgs(c, pgdb.Text)...)
	}
	return s.batch(ctx, b, "save counts")
}

// batch sends b in a transaction.
func (s *PostgresStore) batch(ctx context.Context, b *pgx.Batch, what string) error {
	if b.Len() == 0 {
		return nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("tlspolicy: %s: %w", what, err)
	}
	defer tx.Rollback(ctx)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("tlspolicy: %s: %w", what, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("tlspolicy: %s: %w", what, err)
	}
	return nil
}

// LoadCounts implements Store.
func (s *PostgresStore) LoadCounts(ctx context.Context) ([]Count, error) {
	rows, err := s.pool.Query(ctx, loadCountsSQL)
	if err != nil {
		return nil, fmt.Errorf("tlspolicy: load counts: %w", err)
	}
	return pgRows(rows, scanCount)
}

// TakeCounts implements Store. The DELETE takes each row once: a node
// deleting beside another waits for its rows and finds them gone.
func (s *PostgresStore) TakeCounts(ctx context.Context, before string) ([]Count, error) {
	rows, err := s.pool.Query(ctx, takeCountsSQL, before)
	if err != nil {
		return nil, fmt.Errorf("tlspolicy: take counts: %w", err)
	}
	return pgRows(rows, scanCount)
}

// pgRows reads rs with scan and closes it.
func pgRows[T any](rs pgx.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rs.Close()
	return readRows(rs, scan)
}
