package loginwatch

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"submitd/internal/sqlitedb"
)

// sqliteMigrations are the history's table in the node's database: one row
// per login and network, times in Unix nanoseconds, networks as
// netip.Prefix strings ("192.0.2.0/24", "2001:db8:1::/48").
var sqliteMigrations = []string{
	`CREATE TABLE login_networks (
		login   TEXT NOT NULL,
		network TEXT NOT NULL,
		first   INTEGER NOT NULL,
		last    INTEGER NOT NULL,
		PRIMARY KEY (login, network)
	);
	CREATE INDEX login_networks_last ON login_networks(last);`,
	// The logins with failures (StateStore), one row each, the figures
	// as JSON; expires is when the login is quiet, in Unix nanoseconds.
	`CREATE TABLE login_failures (
		login   TEXT PRIMARY KEY,
		state   TEXT NOT NULL,
		expires INTEGER NOT NULL
	);
	CREATE INDEX login_failures_expires ON login_failures(expires);`,
}

// SQLite is the Store in submitd's embedded database.
type SQLite struct {
	// db is the node's database.
	db *sql.DB
}

var (
	_ Store      = (*SQLite)(nil)
	_ StateStore = (*SQLite)(nil)
)

// NewSQLite migrates the history's table in db.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	if err := sqlitedb.Migrate(ctx, db, "loginwatch", sqliteMigrations); err != nil {
		return nil, err
	}
	return &SQLite{db: db}, nil
}

// Trusted implements Store.
func (s *SQLite) Trusted(ctx context.Context, login string, network netip.Prefix, since time.Time) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM login_networks WHERE login = ? AND network = ? AND last >= ?`,
		login, network.String(), since.UnixNano()).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("login history of %s: %w", login, err)
	}
	return n > 0, nil
}

// Record implements Store. The row is written and the login's excess and
// expired rows deleted in one transaction, so a login never holds more
// than max networks.
func (s *SQLite) Record(ctx context.Context, login string, network netip.Prefix, t time.Time, max int, expired time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("login history of %s: %w", login, err)
	}
	defer tx.Rollback()
	ns := t.UnixNano()
	if _, err := tx.ExecContext(ctx, `INSERT INTO login_networks (login, network, first, last) VALUES (?, ?, ?, ?)
		ON CONFLICT (login, network) DO UPDATE SET last = max(last, excluded.last)`, login, network.String(), ns, ns); err != nil {
		return fmt.Errorf("login history of %s: %w", login, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM login_networks WHERE login = ? AND (last < ? OR network NOT IN
		(SELECT network FROM login_networks WHERE login = ? ORDER BY last DESC, network LIMIT ?))`,
		login, expired.UnixNano(), login, max); err != nil {
		return fmt.Errorf("login history of %s: %w", login, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("login history of %s: %w", login, err)
	}
	return nil
}

// Networks implements Store.
func (s *SQLite) Networks(ctx context.Context, login string, since time.Time) ([]Network, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT network, first, last FROM login_networks WHERE login = ? AND last >= ?
		ORDER BY last DESC, network`, login, since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("login history of %s: %w", login, err)
	}
	defer rows.Close()
	out := []Network{}
	for rows.Next() {
		var network string
		var first, last int64
		if err := rows.Scan(&network, &first, &last); err != nil {
			return nil, fmt.Errorf("login history of %s: %w", login, err)
		}
		p, err := netip.ParsePrefix(network)
		if err != nil {
			return nil, fmt.Errorf("login history of %s: network %q: %w", login, network, err)
		}
		out = append(out, Network{Prefix: p, First: time.Unix(0, first).UTC(), Last: time.Unix(0, last).UTC()})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("login history of %s: %w", login, err)
	}
	return out, nil
}

// Prune implements Store.
func (s *SQLite) Prune(ctx context.Context, expired time.Time) (int64, error) {
	r, err := s.db.ExecContext(ctx, `DELETE FROM login_networks WHERE last < ?`, expired.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("login history: prune: %w", err)
	}
	return r.RowsAffected()
}

// SaveLogins implements StateStore, in one transaction.
func (s *SQLite) SaveLogins(ctx context.Context, now time.Time, saved []Saved, drop []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("login failures: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM login_failures WHERE expires <= ?`, now.UnixNano()); err != nil {
		return fmt.Errorf("login failures: %w", err)
	}
	for _, l := range drop {
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_failures WHERE login = ?`, l); err != nil {
			return fmt.Errorf("login failures of %s: %w", l, err)
		}
	}
	for _, sv := range saved {
		b, err := json.Marshal(sv)
		if err != nil {
			return fmt.Errorf("login failures of %s: %w", sv.Login, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_failures (login, state, expires) VALUES (?, ?, ?)
			ON CONFLICT (login) DO UPDATE SET state = excluded.state, expires = excluded.expires`,
			sv.Login, string(b), sv.Expires.UnixNano()); err != nil {
			return fmt.Errorf("login failures of %s: %w", sv.Login, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("login failures: %w", err)
	}
	return nil
}

// LoadLogins implements StateStore; it deletes the logins gone quiet.
func (s *SQLite) LoadLogins(ctx context.Context, now time.Time) ([]Saved, error) {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM login_failures WHERE expires <= ?`, now.UnixNano()); err != nil {
		return nil, fmt.Errorf("login failures: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT login, state, expires FROM login_failures`)
	if err != nil {
		return nil, fmt.Errorf("login failures: %w", err)
	}
	defer rows.Close()
	var out []Saved
	for rows.Next() {
		var login, state string
		var expires int64
		if err := rows.Scan(&login, &state, &expires); err != nil {
			return nil, fmt.Errorf("login failures: %w", err)
		}
		sv, err := decodeSaved(login, []byte(state), expires)
		if err != nil {
			return nil, err
		}
		out = append(out, sv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("login failures: %w", err)
	}
	return out, nil
}

// decodeSaved is the Saved that a store keeps as JSON, with the expiry the
// store indexes it by (0: the one in the JSON).
func decodeSaved(login string, state []byte, expires int64) (Saved, error) {
	var sv Saved
	if err := json.Unmarshal(state, &sv); err != nil {
		return Saved{}, fmt.Errorf("login failures of %s: %w", login, err)
	}
	sv.Login = login
	if expires != 0 {
		sv.Expires = time.Unix(0, expires)
	}
	return sv, nil
}
