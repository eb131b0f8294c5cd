package dkim

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"submitd/internal/sqlitedb"
)

// ErrNoKey means the domain has no key.
var ErrNoKey = errors.New("no DKIM key")

// ErrKeyExists means the domain already has a key.
var ErrKeyExists = errors.New("DKIM key already exists")

// migrations are the "dkim" component's schema steps (sqlitedb.Migrate). One
// key per domain name, hosted or alias: the private key is PKCS #8 PEM.
var migrations = []string{
	`CREATE TABLE dkim_keys (
		domain      TEXT PRIMARY KEY,
		selector    TEXT NOT NULL,
		algorithm   TEXT NOT NULL,
		private_key TEXT NOT NULL,
		created     INTEGER NOT NULL
	)`,
}

// Keys is where the signing keys are kept: Store (SQLite) or Postgres.
type Keys interface {
	// Get returns the key of domain, or an error wrapping ErrNoKey.
	Get(ctx context.Context, domain string) (*Key, error)
	// Put stores k, replacing a key of its domain only when replace;
	// otherwise the error wraps ErrKeyExists.
	Put(ctx context.Context, k *Key, replace bool) error
	// Delete removes the key of domain, or fails wrapping ErrNoKey.
	Delete(ctx context.Context, domain string) error
	// List returns every key, by domain.
	List(ctx context.Context) ([]*Key, error)
}

var (
	_ Keys = (*Store)(nil)
	_ Keys = (*Postgres)(nil)
)

// Store keeps DKIM keys in the SQLite store.
type Store struct {
	db *sql.DB
}

// NewStore returns a store over db, creating its table if needed.
func NewStore(ctx context.Context, db *sql.DB) (*Store, error) {
	if err := sqlitedb.Migrate(ctx, db, "dkim", migrations); err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

// Get returns the key of domain (lowercase A-label), or an error wrapping
// ErrNoKey.
func (s *Store) Get(ctx context.Context, domain string) (*Key, error) {
	var k Key
	var pemKey string
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT domain, selector, algorithm, private_key, created
		FROM dkim_keys WHERE domain = ?`, domain).Scan(&k.Domain, &k.Selector, &k.Algorithm, &pemKey, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("domain %s: %w", domain, ErrNoKey)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim key of %s: %w", domain, err)
	}
	k.Private, err = parsePrivate(k.Algorithm, pemKey)
	if err != nil {
		return nil, fmt.Errorf("dkim key of %s is damaged: %w", domain, err)
	}
	k.Created = time.Unix(created, 0).UTC()
	return &k, nil
}

// Put stores k. An existing key of the same domain is replaced only when
// replace is set; otherwise the error wraps ErrKeyExists.
func (s *Store) Put(ctx context.Context, k *Key, replace bool) error {
	pemKey, err := k.marshalPrivate()
	if err != nil {
		return err
	}
	q := `INSERT INTO dkim_keys (domain, selector, algorithm, private_key, created) VALUES (?, ?, ?, ?, ?)`
	if replace {
		q += ` ON CONFLICT (domain) DO UPDATE SET selector = excluded.selector, algorithm = excluded.algorithm,
			private_key = excluded.private_key, created = excluded.created`
	} else {
		q += ` ON CONFLICT (domain) DO NOTHING`
	}
	res, err := s.db.ExecContext(ctx, q, k.Domain, k.Selector, k.Algorithm, pemKey, k.Created.Unix())
	if err != nil {
		return fmt.Errorf("store dkim key of %s: %w", k.Domain, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("domain %s: %w", k.Domain, ErrKeyExists)
	}
	return nil
}

// Delete removes the key of domain; the error wraps ErrNoKey if it had none.
func (s *Store) Delete(ctx context.Context, domain string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM dkim_keys WHERE domain = ?`, domain)
	if err != nil {
		return fmt.Errorf("delete dkim key of %s: %w", domain, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("domain %s: %w", domain, ErrNoKey)
	}
	return nil
}

// List returns every key, by domain.
func (s *Store) List(ctx context.Context) ([]*Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT domain FROM dkim_keys ORDER BY domain`)
	if err != nil {
		return nil, fmt.Errorf("list dkim keys: %w", err)
	}
	var domains []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list dkim keys: %w", err)
		}
		domains = append(domains, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list dkim keys: %w", err)
	}
	out := make([]*Key, 0, len(domains))
	for _, d := range domains {
		k, err := s.Get(ctx, d)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}
