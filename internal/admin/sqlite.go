package admin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"submitd/internal/sqlitedb"
)

// sqliteMigrations are the admin tables in the embedded database. Times are
// Unix nanoseconds.
var sqliteMigrations = []string{
	`CREATE TABLE admin_staff (
		name          TEXT PRIMARY KEY,
		role          TEXT NOT NULL,
		password_hash TEXT NOT NULL,
		created       INTEGER NOT NULL
	);
	CREATE TABLE admin_tokens (
		id      INTEGER PRIMARY KEY AUTOINCREMENT,
		staff   TEXT NOT NULL REFERENCES admin_staff(name) ON DELETE CASCADE,
		hash    TEXT NOT NULL UNIQUE,
		created INTEGER NOT NULL
	);
	CREATE TABLE admin_audit (
		id     INTEGER PRIMARY KEY AUTOINCREMENT,
		time   INTEGER NOT NULL,
		actor  TEXT NOT NULL,
		action TEXT NOT NULL,
		target TEXT NOT NULL,
		before TEXT NOT NULL,
		after  TEXT NOT NULL
	);
	CREATE INDEX admin_audit_target ON admin_audit(target, id);
	CREATE INDEX admin_audit_actor ON admin_audit(actor, id);`,
}

// SQLite is the StaffStore and AuditLog in the embedded database.
type SQLite struct {
	// db is the shared database of the node.
	db *sql.DB
}

var (
	_ StaffStore = (*SQLite)(nil)
	_ AuditLog   = (*SQLite)(nil)
)

// NewSQLite migrates the admin tables in db.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	if err := sqlitedb.Migrate(ctx, db, "admin", sqliteMigrations); err != nil {
		return nil, err
	}
	return &SQLite{db: db}, nil
}

// changed turns a result that touched no row into ErrNotFound.
func changed(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("admin: %s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}

// AddStaff implements StaffStore.
func (s *SQLite) AddStaff(ctx context.Context, st Staff) error {
	if err := CheckStaffName(st.Name); err != nil {
		return err
	}
	if _, err := ParseRole(string(st.Role)); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO admin_staff (name, role, password_hash, created) VALUES (?, ?, ?, ?)`,
		st.Name, string(st.Role), st.PasswordHash, st.Created.UnixNano())
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return fmt.Errorf("staff %s: %w", st.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("admin: add staff %s: %w", st.Name, err)
	}
	return nil
}

// SetStaffPassword implements StaffStore.
func (s *SQLite) SetStaffPassword(ctx context.Context, name, hash string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE admin_staff SET password_hash = ? WHERE name = ?`, hash, name)
	return changed(res, err, "staff "+name)
}

// SetStaffRole implements StaffStore.
func (s *SQLite) SetStaffRole(ctx context.Context, name string, role Role) error {
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE admin_staff SET role = ? WHERE name = ?`, string(role), name)
	return changed(res, err, "staff "+name)
}

// RemoveStaff implements StaffStore.
func (s *SQLite) RemoveStaff(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM admin_staff WHERE name = ?`, name)
	return changed(res, err, "staff "+name)
}

// Staff implements StaffStore.
func (s *SQLite) Staff(ctx context.Context, name string) (*Staff, error) {
	st := &Staff{}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT name, role, password_hash, created FROM admin_staff WHERE name = ?`, name).
		Scan(&st.Name, &st.Role, &st.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("staff %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: staff %s: %w", name, err)
	}
	st.Created = time.Unix(0, created)
	return st, nil
}

// ListStaff implements StaffStore.
func (s *SQLite) ListStaff(ctx context.Context) ([]Staff, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, role, password_hash, created FROM admin_staff ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("admin: list staff: %w", err)
	}
	defer rows.Close()
	var out []Staff
	for rows.Next() {
		var st Staff
		var created int64
		if err := rows.Scan(&st.Name, &st.Role, &st.PasswordHash, &created); err != nil {
			return nil, fmt.Errorf("admin: list staff: %w", err)
		}
		st.Created = time.Unix(0, created)
		out = append(out, st)
	}
	return out, rows.Err()
}

// AddToken implements StaffStore.
func (s *SQLite) AddToken(ctx context.Context, t Token) (Token, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO admin_tokens (staff, hash, created)
		SELECT name, ?, ? FROM admin_staff WHERE name = ?`, t.Hash, t.Created.UnixNano(), t.Staff)
	if err != nil {
		return t, fmt.Errorf("admin: add token of %s: %w", t.Staff, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return t, fmt.Errorf("staff %s: %w", t.Staff, ErrNotFound)
	}
	t.ID, err = res.LastInsertId()
	return t, err
}

// Tokens implements StaffStore.
func (s *SQLite) Tokens(ctx context.Context, staff string) ([]Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, staff, hash, created FROM admin_tokens
		WHERE ? = '' OR staff = ? ORDER BY id`, staff, staff)
	if err != nil {
		return nil, fmt.Errorf("admin: list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		var t Token
		var created int64
		if err := rows.Scan(&t.ID, &t.Staff, &t.Hash, &created); err != nil {
			return nil, fmt.Errorf("admin: list tokens: %w", err)
		}
		t.Created = time.Unix(0, created)
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken implements StaffStore.
func (s *SQLite) RevokeToken(ctx context.Context, id int64) (*Token, error) {
	t := &Token{}
	var created int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM admin_tokens WHERE id = ? RETURNING id, staff, hash, created`, id).
		Scan(&t.ID, &t.Staff, &t.Hash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("token %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: revoke token %d: %w", id, err)
	}
	t.Created = time.Unix(0, created)
	return t, nil
}

// TokenStaff implements StaffStore.
func (s *SQLite) TokenStaff(ctx context.Context, hash string) (*Staff, *Token, error) {
	st, t := &Staff{}, &Token{Hash: hash}
	var created, tcreated int64
	err := s.db.QueryRowContext(ctx, `SELECT s.name, s.role, s.password_hash, s.created, t.id, t.created
		FROM admin_tokens t JOIN admin_staff s ON s.name = t.staff WHERE t.hash = ?`, hash).
		Scan(&st.Name, &st.Role, &st.PasswordHash, &created, &t.ID, &tcreated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("admin: token: %w", err)
	}
	st.Created, t.Staff, t.Created = time.Unix(0, created), st.Name, time.Unix(0, tcreated)
	return st, t, nil
}

// rawOrNull is the stored form of a JSON value: "null" for none.
func rawOrNull(b []byte) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}

// AddAudit implements AuditLog.
func (s *SQLite) AddAudit(ctx context.Context, e Entry) (int64, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO admin_audit (time, actor, action, target, before, after)
		VALUES (?, ?, ?, ?, ?, ?)`, e.Time.UnixNano(), e.Actor, e.Action, e.Target, rawOrNull(e.Before), rawOrNull(e.After))
	if err != nil {
		return 0, fmt.Errorf("admin: audit %s %s: %w", e.Action, e.Target, err)
	}
	return res.LastInsertId()
}

// Audit implements AuditLog.
func (s *SQLite) Audit(ctx context.Context, q AuditQuery) ([]Entry, int, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	where := `(? = '' OR actor = ?) AND (? = '' OR target = ?) AND (? = '' OR action = ?)`
	args := []any{q.Actor, q.Actor, q.Target, q.Target, q.Action, q.Action}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM admin_audit WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("admin: audit: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, time, actor, action, target, before, after FROM admin_audit
		WHERE `+where+` ORDER BY id DESC LIMIT ? OFFSET ?`, append(args, q.Limit, q.Offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("admin: audit: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var t int64
		var before, after string
		if err := rows.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Target, &before, &after); err != nil {
			return nil, 0, fmt.Errorf("admin: audit: %w", err)
		}
		e.Time, e.Before, e.After = time.Unix(0, t), []byte(before), []byte(after)
		out = append(out, e)
	}
	return out, total, rows.Err()
}
