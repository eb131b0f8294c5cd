package dkim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
)

// pgMigrations are the "dkim" component's tables in PostgreSQL, as in
// SQLite: one key per domain name, the private key in PKCS #8 PEM.
var pgMigrations = []string{
	`CREATE TABLE dkim_keys (
		domain      TEXT COLLATE "C" PRIMARY KEY,
		selector    TEXT NOT NULL,
		algorithm   TEXT NOT NULL,
		private_key TEXT NOT NULL,
		created     BIGINT NOT NULL
	)`,
}

// Postgres keeps DKIM keys in PostgreSQL, so every node signs with the
// same key.
type Postgres struct {
	// pool is the connection pool.
	pool *pgxpool.Pool
}

// NewPostgres migrates the key table and returns a store on pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	if err := pgdb.Migrate(ctx, pool, "dkim", pgMigrations); err != nil {
		return nil, err
	}
	return &Postgres{pool: pool}, nil
}

// Get implements Keys.
func (s *Postgres) Get(ctx context.Context, domain string) (*Key, error) {
	var k Key
	var pemKey string
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT domain, selector, algorithm, private_key, created
		FROM dkim_keys WHERE domain = $1`, pgdb.Text(domain)).Scan(&k.Domain, &k.Selector, &k.Algorithm, &pemKey, &created)
	if errors.Is(err, pgx.ErrNoRows) {
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

// Put implements Keys.
func (s *Postgres) Put(ctx context.Context, k *Key, replace bool) error {
	pemKey, err := k.marshalPrivate()
	if err != nil {
		return err
	}
	q := `INSERT INTO dkim_keys (domain, selector, algorithm, private_key, created) VALUES ($1, $2, $3, $4, $5)`
	if replace {
		q += ` ON CONFLICT (domain) DO UPDATE SET selector = excluded.selector, algorithm = excluded.algorithm,
			private_key = excluded.private_key, created = excluded.created`
	} else {
		q += ` ON CONFLICT (domain) DO NOTHING`
	}
	tag, err := s.pool.Exec(ctx, q, k.Domain, k.Selector, k.Algorithm, pemKey, k.Created.Unix())
	if err != nil {
		return fmt.Errorf("store dkim key of %s: %w", k.Domain, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("domain %s: %w", k.Domain, ErrKeyExists)
	}
	return nil
}

// Delete implements Keys.
func (s *Postgres) Delete(ctx context.Context, domain string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM dkim_keys WHERE domain = $1`, pgdb.Text(domain))
	if err != nil {
		return fmt.Errorf("delete dkim key of %s: %w", domain, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("domain %s: %w", domain, ErrNoKey)
	}
	return nil
}

// List implements Keys.
func (s *Postgres) List(ctx context.Context) ([]*Key, error) {
	rows, err := s.pool.Query(ctx, `SELECT domain FROM dkim_keys ORDER BY domain`)
	if err != nil {
		return nil, fmt.Errorf("list dkim keys: %w", err)
	}
	domains, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
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
