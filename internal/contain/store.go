package contain

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"submitd/internal/sqlitedb"
)

// Store keeps the trips and the overrides of the action. Implementations
// are safe for concurrent use.
type Store interface {
	// AddTrip records what a trip did.
	AddTrip(ctx context.Context, e Event) error
	// LastTrip returns account's latest trip, nil when there is none.
	LastTrip(ctx context.Context, account string) (*Event, error)
	// Override returns the action set for an account or domain, "" for none.
	Override(ctx context.Context, target string) (string, error)
	// SetOverride sets it; "" removes it.
	SetOverride(ctx context.Context, target, action string) error
	// Overrides returns every override by target.
	Overrides(ctx context.Context) (map[string]string, error)
}

// maxTripsPerAccount bounds the trips kept of one account: a warn-only
// account that trips every hour must not fill the disk.
const maxTripsPerAccount = 100

// migrations are the tables' schema steps.
var migrations = []string{
	`CREATE TABLE contain_trips (
		id      INTEGER PRIMARY KEY AUTOINCREMENT,
		account TEXT NOT NULL,
		time    INTEGER NOT NULL,
		event   TEXT NOT NULL
	);
	CREATE INDEX contain_trips_account ON contain_trips(account, id);
	CREATE TABLE contain_overrides (
		target TEXT PRIMARY KEY,
		action TEXT NOT NULL
	);`,
}

// SQLite is the Store in the embedded SQLite database.
type SQLite struct {
	// db is the database.
	db *sql.DB
}

var _ Store = (*SQLite)(nil)

// NewSQLite migrates the tables in db and returns a Store on them.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	if err := sqlitedb.Migrate(ctx, db, "contain", migrations); err != nil {
		return nil, err
	}
	return &SQLite{db: db}, nil
}

// AddTrip implements Store.
func (s *SQLite) AddTrip(ctx context.Context, e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("contain: encode trip: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO contain_trips (account, time, event) VALUES (?, ?, ?)`,
		e.Account, e.Time.UnixNano(), string(b)); err != nil {
		return fmt.Errorf("contain: record trip of %s: %w", e.Account, err)
	}
	_, err = s.db.ExecContext(ctx, `DELETE FROM contain_trips WHERE account = ? AND id NOT IN
		(SELECT id FROM contain_trips WHERE account = ? ORDER BY id DESC LIMIT ?)`, e.Account, e.Account, maxTripsPerAccount)
	if err != nil {
		return fmt.Errorf("contain: prune trips of %s: %w", e.Account, err)
	}
	return nil
}

// LastTrip implements Store.
func (s *SQLite) LastTrip(ctx context.Context, account string) (*Event, error) {
	var raw string
	err := s.db.QueryRowContext(ctx, `SELECT event FROM contain_trips WHERE account = ? ORDER BY id DESC LIMIT 1`, account).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("contain: trips of %s: %w", account, err)
	}
	e := &Event{}
	if err := json.Unmarshal([]byte(raw), e); err != nil {
		return nil, fmt.Errorf("contain: trip of %s: %w", account, err)
	}
	return e, nil
}

// Override implements Store.
func (s *SQLite) Override(ctx context.Context, target string) (string, error) {
	var a string
	err := s.db.QueryRowContext(ctx, `SELECT action FROM contain_overrides WHERE target = ?`, target).Scan(&a)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("contain: override of %s: %w", target, err)
	}
	return a, nil
}

// SetOverride implements Store.
func (s *SQLite) SetOverride(ctx context.Context, target, action string) error {
	var err error
	if action == "" {
		_, err = s.db.ExecContext(ctx, `DELETE FROM contain_overrides WHERE target = ?`, target)
	} else {
		_, err = s.db.ExecContext(ctx, `INSERT INTO contain_overrides (target, action) VALUES (?, ?)
			ON CONFLICT (target) DO UPDATE SET action = excluded.action`, target, action)
	}
	if err != nil {
		return fmt.Errorf("contain: set override of %s: %w", target, err)
	}
	return nil
}

// Overrides implements Store.
func (s *SQLite) Overrides(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT target, action FROM contain_overrides ORDER BY target`)
	if err != nil {
		return nil, fmt.Errorf("contain: overrides: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var t, a string
		if err := rows.Scan(&t, &a); err != nil {
			return nil, fmt.Errorf("contain: overrides: %w", err)
		}
		out[t] = a
	}
	return out, rows.Err()
}
