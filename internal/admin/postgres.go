package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
)

// pgMigrations are the admin tables in PostgreSQL; times are Unix
// nanoseconds, as in SQLite.
var pgMigrations = []string{
	`CREATE TABLE admin_staff (
		name          TEXT COLLATE "C" PRIMARY KEY,
		role          TEXT NOT NULL,
		password_hash TEXT NOT NULL,
		created       BIGINT NOT NULL
	);
	CREATE TABLE admin_tokens (
		id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		staff   TEXT COLLATE "C" NOT NULL REFERENCES admin_staff(name) ON DELETE CASCADE,
		hash    TEXT NOT NULL UNIQUE,
		created BIGINT NOT NULL
	);
	CREATE TABLE admin_audit (
		id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		time   BIGINT NOT NULL,
		actor  TEXT COLLATE "C" NOT NULL,
		action TEXT COLLATE "C" NOT NULL,
		target TEXT COLLATE "C" NOT NULL,
		before TEXT NOT NULL,
		after  TEXT NOT NULL
	);
	CREATE INDEX admin_audit_target ON admin_audit(target, id);
	CREATE INDEX admin_audit_actor ON admin_audit(actor, id);`,
}

// Postgres is the StaffStore and AuditLog in PostgreSQL, shared by the
// nodes of a cluster.
type Postgres struct {
	// pool is the connection pool.
	pool *pgxpool.Pool
}

var (
	_ StaffStore = (*Postgres)(nil)
	_ AuditLog   = (*Postgres)(nil)
)

// NewPostgres migrates the admin tables and returns the stores on pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	if err := pgdb.Migrate(ctx, pool, "admin", pgMigrations); err != nil {
		return nil, err
	}
	return &Postgres{pool: pool}, nil
}

// pgChanged turns a command that touched no row into ErrNotFound.
func pgChanged(tag pgconn.CommandTag, err error, what string) error {
	if err != nil {
		return fmt.Errorf("admin: %s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}

// AddStaff implements StaffStore.
func (s *Postgres) AddStaff(ctx context.Context, st Staff) error {
	if err := CheckStaffName(st.Name); err != nil {
		return err
	}
	if _, err := ParseRole(string(st.Role)); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO admin_staff (name, role, password_hash, created) VALUES ($1, $2, $3, $4)`,
		st.Name, string(st.Role), st.PasswordHash, st.Created.UnixNano())
	if pgdb.IsUniqueViolation(err) {
		return fmt.Errorf("staff %s: %w", st.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("admin: add staff %s: %w", st.Name, err)
	}
	return nil
}

// SetStaffPassword implements StaffStore.
func (s *Postgres) SetStaffPassword(ctx context.Context, name, hash string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE admin_staff SET password_hash = $1 WHERE name = $2`, hash, pgdb.Text(name))
	return pgChanged(tag, err, "staff "+name)
}

// SetStaffRole implements StaffStore.
func (s *Postgres) SetStaffRole(ctx context.Context, name string, role Role) error {
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE admin_staff SET role = $1 WHERE name = $2`, string(role), pgdb.Text(name))
	return pgChanged(tag, err, "staff "+name)
}

// RemoveStaff implements StaffStore.
func (s *Postgres) RemoveStaff(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM admin_staff WHERE name = $1`, pgdb.Text(name))
	return pgChanged(tag, err, "staff "+name)
}

// scanStaff reads one admin_staff row.
func scanStaff(row pgx.Row) (*Staff, error) {
	st := &Staff{}
	var created int64
	if err := row.Scan(&st.Name, &st.Role, &st.PasswordHash, &created); err != nil {
		return nil, err
	}
	st.Created = time.Unix(0, created)
	return st, nil
}

// Staff implements StaffStore.
func (s *Postgres) Staff(ctx context.Context, name string) (*Staff, error) {
	st, err := scanStaff(s.pool.QueryRow(ctx, `SELECT name, role, password_hash, created FROM admin_staff WHERE name = $1`, pgdb.Text(name)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("staff %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: staff %s: %w", name, err)
	}
	return st, nil
}

// ListStaff implements StaffStore.
func (s *Postgres) ListStaff(ctx context.Context) ([]Staff, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, role, password_hash, created FROM admin_staff ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("admin: list staff: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Staff, error) {
		st, err := scanStaff(r)
		if err != nil {
			return Staff{}, err
		}
		return *st, nil
	})
	if err != nil {
		return nil, fmt.Errorf("admin: list staff: %w", err)
	}
	return out, nil
}

// AddToken implements StaffStore.
func (s *Postgres) AddToken(ctx context.Context, t Token) (Token, error) {
	err := s.pool.QueryRow(ctx, `INSERT INTO admin_tokens (staff, hash, created)
		SELECT name, $1, $2 FROM admin_staff WHERE name = $3 RETURNING id`, t.Hash, t.Created.UnixNano(), pgdb.Text(t.Staff)).Scan(&t.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("staff %s: %w", t.Staff, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("admin: add token of %s: %w", t.Staff, err)
	}
	return t, nil
}

// scanToken reads id, staff, hash and created.
func scanToken(row pgx.Row) (Token, error) {
	var t Token
	var created int64
	if err := row.Scan(&t.ID, &t.Staff, &t.Hash, &created); err != nil {
		return t, err
	}
	t.Created = time.Unix(0, created)
	return t, nil
}

// Tokens implements StaffStore.
func (s *Postgres) Tokens(ctx context.Context, staff string) ([]Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, staff, hash, created FROM admin_tokens
		WHERE $1 = '' OR staff = $1 ORDER BY id`, pgdb.Text(staff))
	if err != nil {
		return nil, fmt.Errorf("admin: list tokens: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) { return scanToken(r) })
	if err != nil {
		return nil, fmt.Errorf("admin: list tokens: %w", err)
	}
	return out, nil
}

// RevokeToken implements StaffStore.
func (s *Postgres) RevokeToken(ctx context.Context, id int64) (*Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `DELETE FROM admin_tokens WHERE id = $1 RETURNING id, staff, hash, created`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("token %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: revoke token %d: %w", id, err)
	}
	return &t, nil
}

// TokenStaff implements StaffStore.
func (s *Postgres) TokenStaff(ctx context.Context, hash string) (*Staff, *Token, error) {
	st, t := &Staff{}, &Token{Hash: hash}
	var created, tcreated int64
	err := s.pool.QueryRow(ctx, `SELECT s.name, s.role, s.password_hash, s.created, t.id, t.created
		FROM admin_tokens t JOIN admin_staff s ON s.name = t.staff WHERE t.hash = $1`, pgdb.Text(hash)).
		Scan(&st.Name, &st.Role, &st.PasswordHash, &created, &t.ID, &tcreated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("admin: token: %w", err)
	}
	st.Created, t.Staff, t.Created = time.Unix(0, created), st.Name, time.Unix(0, tcreated)
	return st, t, nil
}

// AddAudit implements AuditLog.
func (s *Postgres) AddAudit(ctx context.Context, e Entry) (int64, error) {
	t := pgdb.Text
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO admin_audit (time, actor, action, target, before, after)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, e.Time.UnixNano(), t(e.Actor), t(e.Action), t(e.Target),
		t(rawOrNull(e.Before)), t(rawOrNull(e.After))).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("admin: audit %s %s: %w", e.Action, e.Target, err)
	}
	return id, nil
}

// Audit implements AuditLog.
func (s *Postgres) Audit(ctx context.Context, q AuditQuery) ([]Entry, int, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	where := `($1 = '' OR actor = $1) AND ($2 = '' OR target = $2) AND ($3 = '' OR action = $3)`
	args := []any{pgdb.Text(q.Actor), pgdb.Text(q.Target), pgdb.Text(q.Action)}
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM admin_audit WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("admin: audit: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, time, actor, action, target, before, after FROM admin_audit
		WHERE `+where+` ORDER BY id DESC LIMIT $4 OFFSET $5`, append(args, q.Limit, q.Offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("admin: audit: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		var t int64
		var before, after string
		if err := r.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Target, &before, &after); err != nil {
			return e, err
		}
		e.Time, e.Before, e.After = time.Unix(0, t), []byte(before), []byte(after)
		return e, nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("admin: audit: %w", err)
	}
	return out, total, nil
}
