package trace

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"submitd/internal/sqlitedb"
)

// migrations are the history's tables in SQLite; times are Unix
// nanoseconds, as in the session log. Events of a message accepted before
// the history existed (a spool loaded at an upgrade) are kept without a
// message row, so the tables have no foreign keys.
var migrations = []string{
	`CREATE TABLE trace_messages (
		queue_id   TEXT PRIMARY KEY,
		received   INTEGER NOT NULL,
		session_id TEXT NOT NULL,
		client_ip  TEXT NOT NULL,
		account    TEXT NOT NULL,
		sender     TEXT NOT NULL,
		subject    TEXT NOT NULL,
		message_id TEXT NOT NULL,
		size       INTEGER NOT NULL,
		kind       TEXT NOT NULL
	);
	CREATE INDEX trace_messages_received ON trace_messages(received);
	CREATE INDEX trace_messages_session ON trace_messages(session_id);
	CREATE INDEX trace_messages_sender ON trace_messages(sender, received);
	CREATE INDEX trace_messages_account ON trace_messages(account, received);
	CREATE INDEX trace_messages_message_id ON trace_messages(message_id);
	CREATE INDEX trace_messages_client_ip ON trace_messages(client_ip, received);
	CREATE TABLE trace_rcpts (
		queue_id TEXT NOT NULL,
		seq      INTEGER NOT NULL,
		rcpt     TEXT NOT NULL,
		received INTEGER NOT NULL,
		state    TEXT NOT NULL,
		reply    TEXT NOT NULL,
		host     TEXT NOT NULL,
		updated  INTEGER NOT NULL,
		next     INTEGER NOT NULL,
		PRIMARY KEY (queue_id, rcpt)
	);
	CREATE INDEX trace_rcpts_rcpt ON trace_rcpts(rcpt, received);
	CREATE TABLE trace_events (
		id       INTEGER PRIMARY KEY AUTOINCREMENT,
		queue_id TEXT NOT NULL,
		rcpt     TEXT NOT NULL,
		time     INTEGER NOT NULL,
		kind     TEXT NOT NULL,
		host     TEXT NOT NULL,
		tls      TEXT NOT NULL,
		reply    TEXT NOT NULL,
		next     INTEGER NOT NULL,
		detail   TEXT NOT NULL
	);
	CREATE INDEX trace_events_queue_id ON trace_events(queue_id, id);
	CREATE INDEX trace_events_time ON trace_events(time);`,
}

// SQLite is the Store in the node's embedded database, beside the session
// records.
type SQLite struct {
	db *sql.DB
}

var _ Store = (*SQLite)(nil)

// NewSQLite migrates the history's tables in db.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	if err := sqlitedb.Migrate(ctx, db, "trace", migrations); err != nil {
		return nil, err
	}
	return &SQLite{db: db}, nil
}

// nanos is t in Unix nanoseconds, 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos undoes nanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// The statements of a save, in SQLite's dialect; postgres.go has its own.
const (
	sqliteInsertMessage = `INSERT OR REPLACE INTO trace_messages
		(queue_id, received, session_id, client_ip, account, sender, subject, message_id, size, kind)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqliteInsertRcpt = `INSERT INTO trace_rcpts (queue_id, seq, rcpt, received, state, reply, host, updated, next)
		VALUES (?, ?, ?, ?, ?, '', '', ?, 0) ON CONFLICT (queue_id, rcpt) DO UPDATE SET seq = excluded.seq, received = excluded.received`
	sqliteInsertEvent = `INSERT INTO trace_events (queue_id, rcpt, time, kind, host, tls, reply, next, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// An attempt's event sets its recipient's state and reply; a
	// recipient the history has no row for (a message accepted before it
	// existed) gets one.
	sqliteRcptState = `INSERT INTO trace_rcpts (queue_id, seq, rcpt, received, state, reply, host, updated, next)
		VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (queue_id, rcpt) DO UPDATE SET
		state = excluded.state, reply = CASE WHEN excluded.reply = '' THEN reply ELSE excluded.reply END,
		host = CASE WHEN excluded.reply = '' THEN host ELSE excluded.host END, updated = excluded.updated, next = excluded.next
		WHERE trace_rcpts.state NOT IN ` + finalStates
	// An event of the whole message changes the recipients not yet done.
	sqliteMessageState = `UPDATE trace_rcpts SET state = ?, updated = ?, next = 0
		WHERE queue_id = ? AND state NOT IN ('delivered', 'failed', 'bounced')`
)

// Save implements Store.
func (s *SQLite) Save(ctx context.Context, b *Batch) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	defer tx.Rollback()
	var stmts [5]*sql.Stmt
	for i, q := range [...]string{sqliteInsertMessage, sqliteInsertRcpt, sqliteInsertEvent, sqliteRcptState, sqliteMessageState} {
		if stmts[i], err = tx.PrepareContext(ctx, q); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		defer stmts[i].Close()
	}
	for _, m := range b.Messages {
		if _, err := stmts[0].ExecContext(ctx, m.QueueID, nanos(m.Received), m.SessionID, m.ClientIP, m.Account, m.From,
			m.Subject, m.MessageID, m.Size, m.Kind); err != nil {
			return fmt.Errorf("trace: save %s: %w", m.QueueID, err)
		}
		for i, r := range m.Rcpts {
			if _, err := stmts[1].ExecContext(ctx, m.QueueID, i, r.Addr, nanos(m.Received), StateQueued, nanos(m.Received)); err != nil {
				return fmt.Errorf("trace: save %s: %w", m.QueueID, err)
			}
		}
	}
	for _, e := range b.Events {
		if _, err := stmts[2].ExecContext(ctx, e.QueueID, e.Rcpt, nanos(e.Time), e.Kind, e.Host, e.TLS, e.Reply, nanos(e.Next), e.Detail); err != nil {
			return fmt.Errorf("trace: save event of %s: %w", e.QueueID, err)
		}
		st := stateOf(e.Kind)
		switch {
		case st == "":
		case e.Rcpt != "":
			_, err = stmts[3].ExecContext(ctx, e.QueueID, e.Rcpt, nanos(e.Time), st, e.Reply, e.Host, nanos(e.Time), nanos(e.Next))
		default:
			_, err = stmts[4].ExecContext(ctx, st, nanos(e.Time), e.QueueID)
		}
		if err != nil {
			return fmt.Errorf("trace: save event of %s: %w", e.QueueID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	return nil
}

// Message implements Store.
func (s *SQLite) Message(ctx context.Context, queueID string) (*Message, error) {
	return loadMessage(ctx, sqliteReader{s.db}, queueID)
}

// sqliteReader reads the history for load.
type sqliteReader struct{ db *sql.DB }

func (r sqliteReader) in(col string, n int) string {
	return col + " IN (?" + strings.Repeat(", ?", n-1) + ")"
}

func (r sqliteReader) rows(ctx context.Context, q string, ids []string) (rows, error) {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rs, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rs}, nil
}

// sqlRows are database/sql's rows as load reads them.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

// where is q's condition on trace_messages and its arguments; arg names
// the next placeholder, so SQLite and PostgreSQL share it.
func where(q Query, arg func(v any) string) string {
	var w []string
	if q.Rcpt != "" {
		w = append(w, "queue_id IN (SELECT queue_id FROM trace_rcpts WHERE rcpt = "+arg(q.Rcpt)+")")
	}
	if q.Sender != "" {
		w = append(w, "(sender = "+arg(q.Sender)+" OR account = "+arg(q.Sender)+")")
	}
	for _, c := range []struct{ col, v string }{
		{"message_id", q.MessageID}, {"queue_id", q.QueueID}, {"session_id", q.SessionID}, {"client_ip", q.ClientIP},
	} {
		if c.v != "" {
			w = append(w, c.col+" = "+arg(c.v))
		}
	}
	if !q.Since.IsZero() {
		w = append(w, "received >= "+arg(q.Since.UnixNano()))
	}
	if !q.Until.IsZero() {
		w = append(w, "received <= "+arg(q.Until.UnixNano()))
	}
	return strings.Join(w, " AND ")
}

// Find implements Store.
func (s *SQLite) Find(ctx context.Context, q Query) ([]*Message, error) {
	if q.empty() {
		return nil, errNoCriteria
	}
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	var args []any
	cond := where(q, func(v any) string { args = append(args, v); return "?" })
	rows, err := s.db.QueryContext(ctx, `SELECT queue_id FROM trace_messages WHERE `+cond+
		` ORDER BY received DESC, queue_id DESC LIMIT ?`, append(args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("trace: find: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("trace: find: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("trace: find: %w", err)
	}
	return load(ctx, sqliteReader{s.db}, ids, false)
}

// Prune implements Store. Events and recipients go by their own times as
// well, so that those of messages without a row do not stay for ever.
func (s *SQLite) Prune(ctx context.Context, t time.Time) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("trace: prune: %w", err)
	}
	defer tx.Rollback()
	n := t.UnixNano()
	res, err := tx.ExecContext(ctx, `DELETE FROM trace_messages WHERE received < ?`, n)
	if err != nil {
		return 0, fmt.Errorf("trace: prune: %w", err)
	}
	for _, q := range []string{
		`DELETE FROM trace_rcpts WHERE received < ?1 AND updated < ?1`,
		`DELETE FROM trace_events WHERE time < ?1`,
	} {
		if _, err := tx.ExecContext(ctx, q, n); err != nil {
			return 0, fmt.Errorf("trace: prune: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("trace: prune: %w", err)
	}
	return res.RowsAffected()
}
