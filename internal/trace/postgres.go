package trace

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
)

// pgMigrations are the history's tables in PostgreSQL, as in SQLite.
var pgMigrations = []string{
	`CREATE TABLE trace_messages (
		queue_id   TEXT COLLATE "C" PRIMARY KEY,
		received   BIGINT NOT NULL,
		session_id TEXT COLLATE "C" NOT NULL,
		client_ip  TEXT COLLATE "C" NOT NULL,
		account    TEXT COLLATE "C" NOT NULL,
		sender     TEXT COLLATE "C" NOT NULL,
		subject    TEXT NOT NULL,
		message_id TEXT COLLATE "C" NOT NULL,
		size       BIGINT NOT NULL,
		kind       TEXT NOT NULL
	);
	CREATE INDEX trace_messages_received ON trace_messages(received);
	CREATE INDEX trace_messages_session ON trace_messages(session_id);
	CREATE INDEX trace_messages_sender ON trace_messages(sender, received);
	CREATE INDEX trace_messages_account ON trace_messages(account, received);
	CREATE INDEX trace_messages_message_id ON trace_messages(message_id);
	CREATE INDEX trace_messages_client_ip ON trace_messages(client_ip, received);
	CREATE TABLE trace_rcpts (
		queue_id TEXT COLLATE "C" NOT NULL,
		seq      INTEGER NOT NULL,
		rcpt     TEXT COLLATE "C" NOT NULL,
		received BIGINT NOT NULL,
		state    TEXT NOT NULL,
		reply    TEXT NOT NULL,
		host     TEXT NOT NULL,
		updated  BIGINT NOT NULL,
		next     BIGINT NOT NULL,
		PRIMARY KEY (queue_id, rcpt)
	);
	CREATE INDEX trace_rcpts_rcpt ON trace_rcpts(rcpt, received);
	CREATE TABLE trace_events (
		id       BIGSERIAL PRIMARY KEY,
		queue_id TEXT COLLATE "C" NOT NULL,
		rcpt     TEXT NOT NULL,
		time     BIGINT NOT NULL,
		kind     TEXT NOT NULL,
		host     TEXT NOT NULL,
		tls      TEXT NOT NULL,
		reply    TEXT NOT NULL,
		next     BIGINT NOT NULL,
		detail   TEXT NOT NULL
	);
	CREATE INDEX trace_events_queue_id ON trace_events(queue_id, id);
	CREATE INDEX trace_events_time ON trace_events(time);`,
}

// Postgres is the Store in PostgreSQL, shared by the nodes of a cluster
// like the session records, so support finds a message whichever node
// accepted or delivered it.
type Postgres struct {
	// pool is the connection pool.
	pool *pgxpool.Pool
}

var _ Store = (*Postgres)(nil)

// NewPostgres migrates the history's tables and returns a Store on pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	if err := pgdb.Migrate(ctx, pool, "trace", pgMigrations); err != nil {
		return nil, err
	}
	return &Postgres{pool: pool}, nil
}

// Save implements Store: one transaction and one round trip for the batch.
func (s *Postgres) Save(ctx context.Context, b *Batch) error {
	pb := &pgx.Batch{}
	t := pgdb.Text
	for _, m := range b.Messages {
		pb.Queue(`INSERT INTO trace_messages (queue_id, received, session_id, client_ip, account, sender, subject, message_id, size, kind)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (queue_id) DO UPDATE SET received = excluded.received,
			session_id = excluded.session_id, client_ip = excluded.client_ip, account = excluded.account, sender = excluded.sender,
			subject = excluded.subject, message_id = excluded.message_id, size = excluded.size, kind = excluded.kind`,
			t(m.QueueID), nanos(m.Received), t(m.SessionID), t(m.ClientIP), t(m.Account), t(m.From), t(m.Subject), t(m.MessageID), m.Size, t(m.Kind))
		for i, r := range m.Rcpts {
			pb.Queue(`INSERT INTO trace_rcpts (queue_id, seq, rcpt, received, state, reply, host, updated, next)
				VALUES ($1, $2, $3, $4, $5, '', '', $4, 0) ON CONFLICT (queue_id, rcpt) DO UPDATE SET seq = excluded.seq, received = excluded.received`,
				t(m.QueueID), i, t(r.Addr), nanos(m.Received), StateQueued)
		}
	}
	for _, e := range b.Events {
		pb.Queue(`INSERT INTO trace_events (queue_id, rcpt, time, kind, host, tls, reply, next, detail)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			t(e.QueueID), t(e.Rcpt), nanos(e.Time), t(e.Kind), t(e.Host), t(e.TLS), t(e.Reply), nanos(e.Next), t(e.Detail))
		st := stateOf(e.Kind)
		switch {
		case st == "":
		case e.Rcpt != "":
			pb.Queue(`INSERT INTO trace_rcpts (queue_id, seq, rcpt, received, state, reply, host, updated, next)
				VALUES ($1, 0, $2, $3, $4, $5, $6, $3, $7) ON CONFLICT (queue_id, rcpt) DO UPDATE SET
				state = excluded.state,
				reply = CASE WHEN excluded.reply = '' THEN trace_rcpts.reply ELSE excluded.reply END,
				host = CASE WHEN excluded.reply = '' THEN trace_rcpts.host ELSE excluded.host END,
				updated = excluded.updated, next = excluded.next
				WHERE trace_rcpts.state NOT IN `+finalStates,
				t(e.QueueID), t(e.Rcpt), nanos(e.Time), st, t(e.Reply), t(e.Host), nanos(e.Next))
		default:
			pb.Queue(`UPDATE trace_rcpts SET state = $1, updated = $2, next = 0
				WHERE queue_id = $3 AND state NOT IN ('delivered', 'failed', 'bounced')`, st, nanos(e.Time), t(e.QueueID))
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, pb).Close()
	})
	if err != nil {
		return fmt.Errorf("trace: save %d message(s), %d event(s): %w", len(b.Messages), len(b.Events), err)
	}
	return nil
}

// Message implements Store.
func (s *Postgres) Message(ctx context.Context, queueID string) (*Message, error) {
	return loadMessage(ctx, pgReader{s.pool}, queueID)
}

// pgReader reads the history for load.
type pgReader struct{ pool *pgxpool.Pool }

func (r pgReader) in(col string, _ int) string { return col + " = ANY($1)" }

func (r pgReader) rows(ctx context.Context, q string, ids []string) (rows, error) {
	args := make([]string, len(ids))
	for i, id := range ids {
		args[i] = pgdb.Text(id)
	}
	return r.pool.Query(ctx, q, args)
}

// Find implements Store.
func (s *Postgres) Find(ctx context.Context, q Query) ([]*Message, error) {
	if q.empty() {
		return nil, errNoCriteria
	}
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	var args []any
	arg := func(v any) string {
		if s, ok := v.(string); ok {
			v = pgdb.Text(s)
		}
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	cond := where(q, arg)
	rows, err := s.pool.Query(ctx, `SELECT queue_id FROM trace_messages WHERE `+cond+
		` ORDER BY received DESC, queue_id DESC LIMIT `+arg(q.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("trace: find: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("trace: find: %w", err)
	}
	return load(ctx, pgReader{s.pool}, ids, false)
}

// Prune implements Store, as SQLite.Prune does.
func (s *Postgres) Prune(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		cut := t.UnixNano()
		tag, err := tx.Exec(ctx, `DELETE FROM trace_messages WHERE received < $1`, cut)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		if _, err := tx.Exec(ctx, `DELETE FROM trace_rcpts WHERE received < $1 AND updated < $1`, cut); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM trace_events WHERE time < $1`, cut)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("trace: prune: %w", err)
	}
	return n, nil
}
