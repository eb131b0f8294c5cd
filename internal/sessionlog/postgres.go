package sessionlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
)

// pgMigrations are the session tables in PostgreSQL; times are Unix
// nanoseconds, as in SQLite ("end" is a reserved word there, hence the
// column names).
var pgMigrations = []string{
	`CREATE TABLE sessions (
		id          TEXT COLLATE "C" PRIMARY KEY,
		started     BIGINT NOT NULL,
		ended       BIGINT NOT NULL,
		listener    TEXT NOT NULL,
		client_ip   TEXT COLLATE "C" NOT NULL,
		client_port INTEGER NOT NULL,
		tls         TEXT NOT NULL,
		helo        TEXT NOT NULL,
		account     TEXT COLLATE "C" NOT NULL
	);
	CREATE INDEX sessions_ended ON sessions(ended);
	CREATE INDEX sessions_client_ip ON sessions(client_ip, started);
	CREATE INDEX sessions_account ON sessions(account, started);
	CREATE TABLE session_events (
		session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
		seq        INTEGER NOT NULL,
		time       BIGINT NOT NULL,
		kind       TEXT NOT NULL,
		detail     TEXT COLLATE "C" NOT NULL,
		reply      TEXT NOT NULL,
		PRIMARY KEY (session_id, seq)
	);
	CREATE INDEX session_events_detail ON session_events(detail) WHERE kind IN ('auth', 'mail', 'queued');`,
}

// Postgres is the Store in PostgreSQL, shared by the nodes of a cluster, so
// support finds a session whichever node served it.
type Postgres struct {
	// pool is the connection pool.
	pool *pgxpool.Pool
}

var _ BatchStore = (*Postgres)(nil)

// NewPostgres migrates the session tables and returns a Store on pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	if err := pgdb.Migrate(ctx, pool, "sessionlog", pgMigrations); err != nil {
		return nil, err
	}
	return &Postgres{pool: pool}, nil
}

// Save implements Store.
func (s *Postgres) Save(ctx context.Context, r *Record) error {
	return s.SaveBatch(ctx, []*Record{r})
}

// SaveBatch implements BatchStore: one transaction and one round trip for
// the batch, each record's events in one statement.
func (s *Postgres) SaveBatch(ctx context.Context, rs []*Record) error {
	b := &pgx.Batch{}
	t := pgdb.Text
	for _, r := range rs {
		b.Queue(`INSERT INTO sessions (id, started, ended, listener, client_ip, client_port, tls, helo, account)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (id) DO UPDATE SET started = excluded.started, ended = excluded.ended,
			listener = excluded.listener, client_ip = excluded.client_ip, client_port = excluded.client_port,
			tls = excluded.tls, helo = excluded.helo, account = excluded.account`,
			t(r.ID), r.Start.UnixNano(), r.End.UnixNano(), t(r.Listener), t(r.ClientIP), r.ClientPort, t(r.TLS), t(r.HELO), t(r.Account))
		b.Queue(`DELETE FROM session_events WHERE session_id = $1`, t(r.ID))
		if len(r.Events) == 0 {
			continue
		}
		seqs := make([]int32, len(r.Events))
		times := make([]int64, len(r.Events))
		kinds := make([]string, len(r.Events))
		details := make([]string, len(r.Events))
		replies := make([]string, len(r.Events))
		for i, e := range r.Events {
			seqs[i], times[i], kinds[i], details[i], replies[i] = int32(i), e.Time.UnixNano(), t(e.Kind), t(e.Detail), t(e.Reply)
		}
		b.Queue(`INSERT INTO session_events (session_id, seq, time, kind, detail, reply)
			SELECT $1, * FROM unnest($2::integer[], $3::bigint[], $4::text[], $5::text[], $6::text[])`,
			t(r.ID), seqs, times, kinds, details, replies)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("sessionlog: save %d record(s): %w", len(rs), err)
	}
	return nil
}

// Get implements Store.
func (s *Postgres) Get(ctx context.Context, id string) (*Record, error) {
	r := &Record{ID: id}
	var start, end int64
	err := s.pool.QueryRow(ctx, `SELECT started, ended, listener, client_ip, client_port, tls, helo, account
		FROM sessions WHERE id = $1`, pgdb.Text(id)).Scan(&start, &end, &r.Listener, &r.ClientIP, &r.ClientPort, &r.TLS, &r.HELO, &r.Account)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sessionlog: %w", err)
	}
	r.Start, r.End = time.Unix(0, start), time.Unix(0, end)
	rows, err := s.pool.Query(ctx, `SELECT time, kind, detail, reply FROM session_events
		WHERE session_id = $1 ORDER BY seq`, pgdb.Text(id))
	if err != nil {
		return nil, fmt.Errorf("sessionlog: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e Event
		var t int64
		if err := rows.Scan(&t, &e.Kind, &e.Detail, &e.Reply); err != nil {
			return nil, fmt.Errorf("sessionlog: %w", err)
		}
		e.Time = time.Unix(0, t)
		r.Events = append(r.Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sessionlog: %w", err)
	}
	return r, nil
}

// Prune implements Store.
func (s *Postgres) Prune(ctx context.Context, t time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE ended < $1`, t.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("sessionlog: prune: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Find returns the records matching q, newest first, with their events.
func (s *Postgres) Find(ctx context.Context, q Query) ([]*Record, error) {
	if q.ClientIP == "" && q.Address == "" && q.QueueID == "" {
		return nil, errors.New("sessionlog: find: no client IP, address or queue id given")
	}
	if q.Limit <= 0 {
		q.Limit = 20
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.ClientIP != "" {
		where = append(where, "client_ip = "+arg(pgdb.Text(q.ClientIP)))
	}
	if q.Address != "" {
		a := arg(pgdb.Text(q.Address))
		where = append(where, `(account = `+a+` OR id IN (SELECT session_id FROM session_events
			WHERE detail = `+a+` AND kind IN ('auth', 'mail', 'queued') AND kind <> 'queued'))`)
	}
	if q.QueueID != "" {
		where = append(where, `id IN (SELECT session_id FROM session_events WHERE detail = `+arg(pgdb.Text(q.QueueID))+
			` AND kind IN ('auth', 'mail', 'queued') AND kind = 'queued')`)
	}
	if !q.Since.IsZero() {
		where = append(where, "started >= "+arg(q.Since.UnixNano()))
	}
	if !q.Until.IsZero() {
		where = append(where, "started <= "+arg(q.Until.UnixNano()))
	}
	rows, err := s.pool.Query(ctx, `SELECT id FROM sessions WHERE `+strings.Join(where, " AND ")+
		` ORDER BY started DESC LIMIT `+arg(q.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("sessionlog: find: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("sessionlog: find: %w", err)
	}
	out := make([]*Record, 0, len(ids))
	for _, id := range ids {
		r, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // pruned meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// AuthFailures returns the ids of the sessions from ip with a failed AUTH
// (a 5xx reply, or none when the client left mid-exchange, SPEC R11) at a
// time in [since, until], one per failure, oldest first.
func (s *Postgres) AuthFailures(ctx context.Context, ip string, since, until time.Time) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT e.session_id FROM sessions s JOIN session_events e ON e.session_id = s.id
		WHERE s.client_ip = $1 AND s.started <= $2 AND s.ended >= $3 AND e.kind = 'auth' AND e.time >= $3 AND e.time <= $2
		AND (e.reply LIKE '5%' OR e.reply = '') ORDER BY e.time, e.seq`,
		pgdb.Text(ip), until.UnixNano(), since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("sessionlog: auth failures of %s: %w", ip, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("sessionlog: auth failures of %s: %w", ip, err)
	}
	return out, nil
}
