// Package sessionlog keeps a record of every SMTP connection so support can
// look up what happened by the session id printed in a customer's error
// message (SPEC R12, R13). Passwords and AUTH payloads are never part of a
// record.
package sessionlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"submitd/internal/sqlitedb"
)

// ErrNotFound means no record has that session id.
var ErrNotFound = errors.New("no record of this session (records are kept for sessionlog.retention)")

// Record is one connection.
type Record struct {
	// ID is the session id.
	ID string
	// Start is when the connection was accepted.
	Start time.Time
	// End is when it closed.
	End time.Time
	// Listener names the listener ("smtp", "submission", "submissions").
	Listener string
	// ClientIP is the client's address (from PROXY when used).
	ClientIP string
	// ClientPort is the client's port.
	ClientPort int
	// TLS is the negotiated TLS version and cipher, or "".
	TLS string
	// HELO is the last EHLO/HELO name given.
	HELO string
	// Account is the login that authenticated, or "".
	Account string
	// Events are what happened, in order; past MaxEvents only the ones
	// support cannot do without are kept (see Add).
	Events []Event

	// omitted counts the events Add left out; omittedAt is the index of the
	// event that says so.
	omitted, omittedAt int
}

// MaxEvents is how many events a record holds before Add starts leaving out
// the routine ones. A client may repeat commands for a whole session, and
// the record stays in memory until the connection closes.
const MaxEvents = 1000

// kept are the kinds Add records past MaxEvents: the queue ids of accepted
// messages, each of which is a spooled file anyway, and how the session ended.
var kept = map[string]bool{"queued": true, "refused": true, "close": true}

// Event is one step of a session.
type Event struct {
	// Time is when it happened.
	Time time.Time
	// Kind is "connect", "tls", "auth", "mail", "rcpt", "data", "queued",
	// "refused", "omitted" (events left out, see MaxEvents) or "close".
	Kind string
	// Detail is the argument: the login tried, the address, the queue id.
	Detail string
	// Reply is the reply the client got, when there was one.
	Reply string
}

// Add appends an event. Past MaxEvents it records only the kept kinds and
// counts the rest in one "omitted" event.
func (r *Record) Add(kind, detail, reply string) {
	now := time.Now()
	if len(r.Events) >= MaxEvents && !kept[kind] {
		if r.omitted == 0 {
			r.omittedAt = len(r.Events)
			r.Events = append(r.Events, Event{Time: now, Kind: "omitted"})
		}
		r.omitted++
		r.Events[r.omittedAt].Detail = fmt.Sprintf("%d further events not recorded", r.omitted)
		return
	}
	r.Events = append(r.Events, Event{Time: now, Kind: kind, Detail: detail, Reply: reply})
}

// QueueIDs returns the queue ids of the messages accepted in the session.
func (r *Record) QueueIDs() []string {
	var out []string
	for _, e := range r.Events {
		if e.Kind == "queued" {
			out = append(out, e.Detail)
		}
	}
	return out
}

// Store saves and finds records.
type Store interface {
	// Save stores a finished record.
	Save(ctx context.Context, r *Record) error
	// Get returns the record of session id.
	Get(ctx context.Context, id string) (*Record, error)
	// Prune deletes records that ended before t and reports how many.
	Prune(ctx context.Context, t time.Time) (int64, error)
}

// BatchStore is a Store that saves several records at once, as the Writer
// does; SQLite and Postgres are both one.
type BatchStore interface {
	Store
	// SaveBatch stores the records in one transaction.
	SaveBatch(ctx context.Context, rs []*Record) error
}

var migrations = []string{
	`CREATE TABLE sessions (
		id          TEXT PRIMARY KEY,
		start       INTEGER NOT NULL,
		end         INTEGER NOT NULL,
		listener    TEXT NOT NULL,
		client_ip   TEXT NOT NULL,
		client_port INTEGER NOT NULL,
		tls         TEXT NOT NULL,
		helo        TEXT NOT NULL,
		account     TEXT NOT NULL
	);
	CREATE INDEX sessions_end ON sessions(end);
	CREATE INDEX sessions_client_ip ON sessions(client_ip, start);
	CREATE TABLE session_events (
		session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
		seq        INTEGER NOT NULL,
		time       INTEGER NOT NULL,
		kind       TEXT NOT NULL,
		detail     TEXT NOT NULL,
		reply      TEXT NOT NULL,
		PRIMARY KEY (session_id, seq)
	);`,
	// Support finds sessions by login, sender and queue id (Find).
	`CREATE INDEX sessions_account ON sessions(account, start);
	CREATE INDEX session_events_detail ON session_events(detail) WHERE kind IN ('auth', 'mail', 'queued');`,
}

// SQLite is the Store in the embedded database.
type SQLite struct {
	db *sql.DB
}

var _ BatchStore = (*SQLite)(nil)

// NewSQLite migrates the session tables in db.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	if err := sqlitedb.Migrate(ctx, db, "sessionlog", migrations); err != nil {
		return nil, err
	}
	return &SQLite{db: db}, nil
}

// Save implements Store.
func (s *SQLite) Save(ctx context.Context, r *Record) error {
	return s.SaveBatch(ctx, []*Record{r})
}

// SaveBatch stores several records in one transaction.
func (s *SQLite) SaveBatch(ctx context.Context, rs []*Record) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sessionlog: %w", err)
	}
	defer tx.Rollback()
	// Each statement is prepared once per batch: parsing SQL for every row
	// was most of the cost of saving a session.
	var stmts [3]*sql.Stmt
	for i, q := range [...]string{
		`INSERT OR REPLACE INTO sessions
			(id, start, end, listener, client_ip, client_port, tls, helo, account)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		`DELETE FROM session_events WHERE session_id = ?`,
		`INSERT INTO session_events (session_id, seq, time, kind, detail, reply)
			VALUES (?, ?, ?, ?, ?, ?)`,
	} {
		if stmts[i], err = tx.PrepareContext(ctx, q); err != nil {
			return fmt.Errorf("sessionlog: %w", err)
		}
		defer stmts[i].Close()
	}
	insert, clear, event := stmts[0], stmts[1], stmts[2]
	for _, r := range rs {
		_, err := insert.ExecContext(ctx,
			r.ID, r.Start.UnixNano(), r.End.UnixNano(), r.Listener, r.ClientIP, r.ClientPort, r.TLS, r.HELO, r.Account)
		if err != nil {
			return fmt.Errorf("sessionlog: save %s: %w", r.ID, err)
		}
		if _, err := clear.ExecContext(ctx, r.ID); err != nil {
			return fmt.Errorf("sessionlog: save %s: %w", r.ID, err)
		}
		for i, e := range r.Events {
			if _, err := event.ExecContext(ctx, r.ID, i, e.Time.UnixNano(), e.Kind, e.Detail, e.Reply); err != nil {
				return fmt.Errorf("sessionlog: save %s: %w", r.ID, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sessionlog: %w", err)
	}
	return nil
}

// Get implements Store.
func (s *SQLite) Get(ctx context.Context, id string) (*Record, error) {
	r := &Record{ID: id}
	var start, end int64
	err := s.db.QueryRowContext(ctx, `SELECT start, end, listener, client_ip, client_port, tls, helo, account
		FROM sessions WHERE id = ?`, id).Scan(&start, &end, &r.Listener, &r.ClientIP, &r.ClientPort, &r.TLS, &r.HELO, &r.Account)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sessionlog: %w", err)
	}
	r.Start, r.End = time.Unix(0, start), time.Unix(0, end)
	rows, err := s.db.QueryContext(ctx, `SELECT time, kind, detail, reply FROM session_events
		WHERE session_id = ? ORDER BY seq`, id)
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
	return r, rows.Err()
}

// Prune implements Store.
func (s *SQLite) Prune(ctx context.Context, t time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE end < ?`, t.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("sessionlog: prune: %w", err)
	}
	return res.RowsAffected()
}

// Writer saves records in the background, batching them, so that closing a
// connection never waits for the database.
type Writer struct {
	store BatchStore
	log   *slog.Logger
	// retention is how long records are kept, a time.Duration
	// (SetRetention).
	retention atomic.Int64
	ch        chan *Record
	done      chan struct{}

	// mu orders Save against Close, so no record is sent on a closed channel.
	mu     sync.RWMutex
	closed bool

	// dropped counts records not queued because the backlog was full;
	// failed those the store would not take.
	dropped, failed atomic.Uint64
	// held counts the records kept for a retry after a failed save.
	held atomic.Int64
}

// WriterStats are the Writer's backlog and losses, for metrics.
type WriterStats struct {
	// Backlog is the number of records waiting to be written.
	Backlog int
	// Capacity is the most records that can wait; past it they are dropped.
	Capacity int
	// Dropped counts records dropped because the backlog was full.
	Dropped uint64
	// Failed counts records the store failed to save.
	Failed uint64
}

// Stats returns the backlog and the counts of lost records.
func (w *Writer) Stats() WriterStats {
	return WriterStats{Backlog: len(w.ch) + int(w.held.Load()), Capacity: cap(w.ch), Dropped: w.dropped.Load(), Failed: w.failed.Load()}
}

// NewWriter starts the background saver and the retention pruner.
func NewWriter(store BatchStore, retention time.Duration, log *slog.Logger) *Writer {
	w := &Writer{store: store, log: log, ch: make(chan *Record, 4096), done: make(chan struct{})}
	w.SetRetention(retention)
	go w.run()
	return w
}

// SetRetention changes how long records are kept (a reload), from the next
// pruning on.
func (w *Writer) SetRetention(d time.Duration) { w.retention.Store(int64(d)) }

// Save queues r for saving. If the queue is full (the database is stalled)
// the record is dropped with a log line rather than stalling SMTP; the log
// line carries the same facts (SPEC R13).
func (w *Writer) Save(r *Record) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.log.Error("sessionlog: record after shutdown, not stored", "session", r.ID)
		return
	}
	select {
	case w.ch <- r:
	default:
		w.dropped.Add(1)
		w.log.Error("sessionlog: backlog full, record not stored", "session", r.ID)
	}
}

// Close saves what is queued and stops.
func (w *Writer) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	w.mu.Unlock()
	<-w.done
}

// Retrying a failed save: the first retry after retryMin, doubling up to
// retryMax. While the store is unreachable (a shared database down) the
// records wait in memory, at most maxHeld of them, so that support still
// finds the sessions of an outage once it is over.
const (
	retryMin = time.Second
	retryMax = 30 * time.Second
	maxHeld  = 4096
)

func (w *Writer) run() {
	defer close(w.done)
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	w.prune()
	// held are records whose save failed, oldest first; retry fires when
	// they are tried again, after wait.
	var held []*Record
	var retry <-chan time.Time
	wait := retryMin
	// hold keeps rs, the oldest going past maxHeld.
	hold := func(rs []*Record) {
		held = rs
		if n := len(held) - maxHeld; n > 0 {
			w.failed.Add(uint64(n))
			w.log.Error("sessionlog: too many records held; oldest not stored", "sessions", ids(held[:n]))
			held = held[n:]
		}
		w.held.Store(int64(len(held)))
	}
	// save saves rs, or holds them for a retry.
	save := func(rs []*Record) {
		err := w.store.SaveBatch(context.Background(), rs)
		if err == nil {
			if held != nil {
				w.log.Info("sessionlog: saved the records held while the store failed", "count", len(rs))
			}
			held, retry, wait = nil, nil, retryMin
			w.held.Store(0)
			return
		}
		if held == nil {
			w.log.Error("sessionlog: save failed; holding records and retrying", "sessions", ids(rs), "err", err)
		}
		hold(rs)
		retry = time.After(wait)
		wait = min(2*wait, retryMax)
	}
	for {
		select {
		case r, ok := <-w.ch:
			if !ok {
				if held != nil {
					// One last try; what still fails is lost with the
					// process, and counted.
					if err := w.store.SaveBatch(context.Background(), held); err != nil {
						w.failed.Add(uint64(len(held)))
						w.log.Error("sessionlog: save failed at shutdown", "sessions", ids(held), "err", err)
					}
				}
				return
			}
			batch := []*Record{r}
		more:
			for len(batch) < 256 {
				select {
				case r, ok := <-w.ch:
					if !ok {
						break more
					}
					batch = append(batch, r)
				default:
					break more
				}
			}
			if held != nil {
				// The store is failing: the batch waits with the others
				// for the next retry.
				hold(append(held, batch...))
				continue
			}
			save(batch)
		case <-retry:
			save(held)
		case <-prune.C:
			w.prune()
		}
	}
}

// ids joins the session ids of rs for a log line.
func ids(rs []*Record) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return strings.Join(out, ",")
}

func (w *Writer) prune() {
	retention := time.Duration(w.retention.Load())
	n, err := w.store.Prune(context.Background(), time.Now().Add(-retention))
	if err != nil {
		w.log.Error("sessionlog: prune failed", "err", err)
	} else if n > 0 {
		w.log.Info("sessionlog: pruned old records", "count", n, "retention", retention.String())
	}
}

// Query selects records for Find; empty fields match everything, but at
// least one of ClientIP, Address and QueueID must be set.
type Query struct {
	// ClientIP matches the client address exactly.
	ClientIP string
	// Address matches the account, a login tried in AUTH, or a MAIL FROM.
	Address string
	// QueueID matches a message accepted in the session.
	QueueID string
	// Since and Until bound the start of the session; zero means no bound.
	Since, Until time.Time
	// Limit is the most records returned, newest first; 0 means 20.
	Limit int
}

// Find returns the records matching q, newest first, with their events.
func (s *SQLite) Find(ctx context.Context, q Query) ([]*Record, error) {
	if q.ClientIP == "" && q.Address == "" && q.QueueID == "" {
		return nil, errors.New("sessionlog: find: no client IP, address or queue id given")
	}
	if q.Limit <= 0 {
		q.Limit = 20
	}
	var where []string
	var args []any
	if q.ClientIP != "" {
		where = append(where, "client_ip = ?")
		args = append(args, q.ClientIP)
	}
	if q.Address != "" {
		// The kind test repeats the partial index's condition word for
		// word, or SQLite does not use the index and scans every event.
		where = append(where, `(account = ? OR id IN (SELECT session_id FROM session_events
			WHERE detail = ? AND kind IN ('auth', 'mail', 'queued') AND kind <> 'queued'))`)
		args = append(args, q.Address, q.Address)
	}
	if q.QueueID != "" {
		where = append(where, "id IN (SELECT session_id FROM session_events WHERE detail = ? AND kind IN ('auth', 'mail', 'queued') AND kind = 'queued')")
		args = append(args, q.QueueID)
	}
	if !q.Since.IsZero() {
		where = append(where, "start >= ?")
		args = append(args, q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		where = append(where, "start <= ?")
		args = append(args, q.Until.UnixNano())
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM sessions WHERE `+strings.Join(where, " AND ")+
		` ORDER BY start DESC LIMIT ?`, append(args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("sessionlog: find: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sessionlog: find: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
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
func (s *SQLite) AuthFailures(ctx context.Context, ip string, since, until time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT e.session_id FROM sessions s JOIN session_events e ON e.session_id = s.id
		WHERE s.client_ip = ? AND s.start <= ? AND s.end >= ? AND e.kind = 'auth' AND e.time >= ? AND e.time <= ?
		AND (e.reply LIKE '5%' OR e.reply = '') ORDER BY e.time`,
		ip, until.UnixNano(), since.UnixNano(), since.UnixNano(), until.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("sessionlog: auth failures of %s: %w", ip, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sessionlog: auth failures of %s: %w", ip, err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
