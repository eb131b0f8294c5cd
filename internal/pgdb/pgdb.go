// Package pgdb is the PostgreSQL plumbing the shared stores have in common:
// opening a connection pool from [store], versioned schema migrations that
// several nodes may run at once, a LISTEN connection that comes back by
// itself, and telling a missing row from a failure.
//
// Each component owns its tables and migrates them under its own name in
// schema_migrations, as the SQLite stores do in schema_version, so the
// components stay independent of one another.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options are the pool settings of [store].
type Options struct {
	// DSN is the libpq connection string or URL.
	DSN string
	// MaxConns bounds the pool's connections; 0 leaves pgxpool's default.
	MaxConns int32
	// MinConns is how many connections the pool keeps open when idle.
	MinConns int32
	// MaxConnIdleTime closes a connection left unused this long; 0 leaves
	// pgxpool's default.
	MaxConnIdleTime time.Duration
	// ConnectTimeout bounds opening one connection; 0 leaves the DSN's.
	ConnectTimeout time.Duration
}

// Open makes a pool from o and checks that the server answers, so that a
// wrong DSN is reported at start rather than at the first AUTH.
func Open(ctx context.Context, o Options) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		// pgx's message quotes the DSN, password included; say only what
		// is wrong.
		return nil, errors.New("store.dsn: not a PostgreSQL connection string or URL")
	}
	if o.MaxConns > 0 {
		pc.MaxConns = o.MaxConns
	}
	pc.MinConns = o.MinConns
	if o.MaxConnIdleTime > 0 {
		pc.MaxConnIdleTime = o.MaxConnIdleTime
	}
	if o.ConnectTimeout > 0 {
		pc.ConnConfig.ConnectTimeout = o.ConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pctx := ctx
	if o.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, o.ConnectTimeout)
		defer cancel()
	}
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres %s:%d: %w", pc.ConnConfig.Host, pc.ConnConfig.Port, err)
	}
	return pool, nil
}

// migrationLock is the key of the advisory lock every node takes while it
// migrates: the same number in every submitd process ("sbmt").
const migrationLock = 0x73626d74

// Migrate brings component's tables up to date: steps[i] takes the schema
// from version i to i+1. All of it runs in one transaction that first takes
// an advisory lock, so when several nodes start at once one migrates and the
// others wait and then find nothing left to do; a failed step leaves the
// schema as it was (PostgreSQL's DDL is transactional).
func Migrate(ctx context.Context, pool *pgxpool.Pool, component string, steps []string) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT PRIMARY KEY,
		version   INTEGER NOT NULL,
		applied   TIMESTAMPTZ NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	var v int
	err = tx.QueryRow(ctx, `SELECT version FROM schema_migrations WHERE component = $1`, component).Scan(&v)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	if v > len(steps) {
		return fmt.Errorf("migrate %s: database is at version %d, newer than this binary knows (%d)", component, v, len(steps))
	}
	if v == len(steps) {
		return nil
	}
	for i := v; i < len(steps); i++ {
		if _, err := tx.Exec(ctx, steps[i]); err != nil {
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (component, version) VALUES ($1, $2)
		ON CONFLICT (component) DO UPDATE SET version = excluded.version, applied = now()`, component, len(steps)); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	return nil
}

// IsUniqueViolation reports whether err is PostgreSQL's unique_violation
// (SQLSTATE 23505): the row's key is taken.
func IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// Listen backoff: after a lost connection the listener waits, first
// listenRetryMin, doubling up to listenRetryMax, so a database that is down
// costs a connection attempt every few seconds and not a busy loop.
const (
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 5 * time.Second
)

// Listener holds one connection of its own (not from the pool: a LISTEN
// belongs to its session) that listens on a channel, and comes back after
// the connection is lost.
type Listener struct {
	// Pool is where the connection settings come from.
	Pool *pgxpool.Pool
	// Channel is the NOTIFY channel listened on.
	Channel string
	// Notify is called with every notification's payload, on Run's
	// goroutine.
	Notify func(payload string)
	// Connected is called each time LISTEN is in force again on a new
	// connection: notifications sent while there was none are lost, so the
	// caller must assume anything changed.
	Connected func()
	// Log receives one line per outage and one when it ends.
	Log *slog.Logger
}

// Run listens until ctx is done.
func (l *Listener) Run(ctx context.Context) {
	wait, down := listenRetryMin, false
	for ctx.Err() == nil {
		err := l.session(ctx, func() {
			if down {
				l.Log.Info("postgres: notification connection back", "channel", l.Channel)
			}
			down, wait = false, listenRetryMin
			l.Connected()
		})
		if ctx.Err() != nil {
			return
		}
		if !down {
			l.Log.Error("postgres: notification connection lost; retrying", "channel", l.Channel, "err", err)
			down = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, listenRetryMax)
	}
}

// session opens a connection, LISTENs, calls up, and hands notifications
// to l.Notify until the connection fails.
func (l *Listener) session(ctx context.Context, up func()) error {
	cc := l.Pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.Channel}.Sanitize()); err != nil {
		return err
	}
	up()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.Notify(n.Payload)
	}
}

// Text makes s storable in a TEXT column: PostgreSQL refuses the NUL byte
// and invalid UTF-8 in text, and a session record holds whatever a client
// sent as its HELO name or MAIL FROM. Refused, one such record would fail
// the whole batch it is saved with, so each bad byte becomes U+FFFD.
func Text(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
