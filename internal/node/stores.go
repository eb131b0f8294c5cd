package node

import (
	"context"
	"database/sql"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/admin"
	"submitd/internal/config"
	"submitd/internal/directory"
	"submitd/internal/dkim"
	"submitd/internal/pgdb"
	"submitd/internal/sessionlog"
	"submitd/internal/trace"
)

// SessionStore is the session log as the node and the admin server use it:
// saved in batches, read by id, found and counted for support.
type SessionStore interface {
	sessionlog.BatchStore
	admin.Sessions
}

// AdminStore holds the staff users, their tokens and the audit log.
type AdminStore interface {
	admin.StaffStore
	admin.AuditLog
}

// Stores are the stores the nodes of a cluster share (SPEC §8), opened from
// [store]: in the node's SQLite database, or in PostgreSQL. The guard's
// state and the spool are the node's own and are not among them.
type Stores struct {
	// Directory holds domains, aliases and accounts.
	Directory directory.Store
	// Sessions holds the session records (SPEC R13).
	Sessions SessionStore
	// Trace holds the delivery history, beside the session records
	// (SPEC R13a).
	Trace trace.Store
	// Admin holds staff, tokens and the audit log.
	Admin AdminStore
	// DKIM holds the signing keys (SPEC R17).
	DKIM dkim.Keys
	// Pool is the PostgreSQL pool; nil with the sqlite driver.
	Pool *pgxpool.Pool

	// db is the node's SQLite database, for Changes.
	db *sql.DB
	// sqliteDir is the SQLite directory, nil with postgres.
	sqliteDir *directory.SQLite
	// pgDir is the PostgreSQL directory, nil with sqlite.
	pgDir *directory.Postgres
}

// OpenStores opens the shared stores [store] names, migrating their
// schemas. With the sqlite driver they are tables in db; with postgres, db
// is not used and Close closes the pool.
func OpenStores(ctx context.Context, cfg *config.Config, db *sql.DB) (*Stores, error) {
	st := &Stores{db: db}
	if cfg.Store.Driver != "postgres" {
		var err error
		if st.sqliteDir, err = directory.NewSQLite(ctx, db); err != nil {
			return nil, err
		}
		st.Directory = st.sqliteDir
		if st.Sessions, err = sessionlog.NewSQLite(ctx, db); err != nil {
			return nil, err
		}
		if st.Trace, err = trace.NewSQLite(ctx, db); err != nil {
			return nil, err
		}
		if st.Admin, err = admin.NewSQLite(ctx, db); err != nil {
			return nil, err
		}
		if st.DKIM, err = dkim.NewStore(ctx, db); err != nil {
			return nil, err
		}
		return st, nil
	}
	sc := cfg.Store
	pool, err := pgdb.Open(ctx, pgdb.Options{
		DSN: sc.DSN, MaxConns: int32(sc.MaxConns), MinConns: int32(sc.MinConns),
		MaxConnIdleTime: sc.MaxConnIdleTime.D(), ConnectTimeout: sc.ConnectTimeout.D(),
	})
	if err != nil {
		return nil, err
	}
	st.Pool = pool
	fail := func(err error) (*Stores, error) {
		pool.Close()
		return nil, err
	}
	if st.pgDir, err = directory.NewPostgres(ctx, pool); err != nil {
		return fail(err)
	}
	st.Directory = st.pgDir
	if st.Sessions, err = sessionlog.NewPostgres(ctx, pool); err != nil {
		return fail(err)
	}
	if st.Trace, err = trace.NewPostgres(ctx, pool); err != nil {
		return fail(err)
	}
	if st.Admin, err = admin.NewPostgres(ctx, pool); err != nil {
		return fail(err)
	}
	if st.DKIM, err = dkim.NewPostgres(ctx, pool); err != nil {
		return fail(err)
	}
	return st, nil
}

// Changes returns the feed of directory changes made by any process: the
// change log of the SQLite database, or PostgreSQL's notices.
func (st *Stores) Changes(ctx context.Context, log *slog.Logger) (directory.Feed, error) {
	if st.Pool != nil {
		ln := directory.NewListener(st.Pool, log)
		// As with SQLite below: this process's own changes reach the
		// feed before the write returns, not when their NOTIFY comes back.
		st.pgDir.OnCommit(ln.Deliver)
		return ln, nil
	}
	w, err := directory.NewWatcher(ctx, st.sqliteDir, directory.WatcherConfig{}, log)
	if err != nil {
		return nil, err
	}
	// This process's own changes reach the feed before the write returns,
	// not at the next poll: when support switches an account off, the
	// customer's very next AUTH is refused.
	st.sqliteDir.OnCommit(func() {
		if err := w.Sync(context.Background()); err != nil {
			log.Error("directory: reading the change log after a change failed", "err", err)
		}
	})
	return w, nil
}

// Close closes the PostgreSQL pool, if there is one.
func (st *Stores) Close() {
	if st.Pool != nil {
		st.Pool.Close()
	}
}
