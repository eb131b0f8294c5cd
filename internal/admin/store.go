// Package admin is submitd's support and operator server (SPEC §8, R11a,
// R13): a JSON API under /api/v1/ for support staff and operators, browser
// login with a session cookie and CSRF tokens, bearer tokens for scripts,
// and a unix socket through which the CLI reaches a running node. Every
// change made through it is written to the audit log.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Errors wrapped by the stores; the wrapping message names the value.
var (
	// ErrNotFound: no staff user, token or audit entry by that name or id.
	ErrNotFound = errors.New("not found")
	// ErrExists: the staff name is taken.
	ErrExists = errors.New("already exists")
)

// Role is what a staff user may do.
type Role string

// The roles (issue "Support and operator web").
const (
	// RoleSupport may find, read sessions, block and unblock, enable and
	// disable accounts, set their passwords and identities, and retry and
	// delete queue entries.
	RoleSupport Role = "support"
	// RoleAdmin may also manage domains, aliases, DKIM keys and staff.
	RoleAdmin Role = "admin"
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleSupport, RoleAdmin:
		return Role(s), nil
	}
	return "", fmt.Errorf("role %q: must be \"support\" or \"admin\"", s)
}

// may reports whether r includes need.
func (r Role) may(need Role) bool { return r == RoleAdmin || r == need }

// Staff is one support or operator user of the admin server.
type Staff struct {
	// Name is the login, lowercase letters, digits, '.', '_' and '-'.
	Name string `json:"name"`
	// Role is what the user may do.
	Role Role `json:"role"`
	// PasswordHash is the hash of the browser password, as for accounts
	// (internal/password); never shown.
	PasswordHash string `json:"-"`
	// Created is when the user was added.
	Created time.Time `json:"created"`
}

// staffName is what a staff name may look like.
var staffName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// CheckStaffName checks a staff name.
func CheckStaffName(name string) error {
	if !staffName.MatchString(name) {
		return fmt.Errorf("staff name %q: use 1 to 64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// Token is an API bearer token of a staff user. Only its SHA-256 is stored;
// the token itself is shown once, when it is made.
type Token struct {
	// ID names the token for listing and revoking.
	ID int64 `json:"id"`
	// Staff is the user the token acts as.
	Staff string `json:"staff"`
	// Hash is the hex SHA-256 of the token; never shown.
	Hash string `json:"-"`
	// Created is when the token was made.
	Created time.Time `json:"created"`
}

// StaffStore keeps staff users and their API tokens. Implementations are
// safe for concurrent use; storetest.Staff is the suite every one passes.
type StaffStore interface {
	// AddStaff adds a user; ErrExists when the name is taken.
	AddStaff(ctx context.Context, s Staff) error
	// SetStaffPassword replaces a user's password hash.
	SetStaffPassword(ctx context.Context, name, hash string) error
	// SetStaffRole changes a user's role.
	SetStaffRole(ctx context.Context, name string, role Role) error
	// RemoveStaff removes a user and its tokens.
	RemoveStaff(ctx context.Context, name string) error
	// Staff returns one user.
	Staff(ctx context.Context, name string) (*Staff, error)
	// ListStaff lists the users by name.
	ListStaff(ctx context.Context) ([]Staff, error)
	// AddToken stores a token of user t.Staff and returns it with its id.
	AddToken(ctx context.Context, t Token) (Token, error)
	// Tokens lists the tokens of one user, or ("") of all, oldest first.
	Tokens(ctx context.Context, staff string) ([]Token, error)
	// RevokeToken deletes a token and returns what it was.
	RevokeToken(ctx context.Context, id int64) (*Token, error)
	// TokenStaff returns the user and token whose token has this hash.
	TokenStaff(ctx context.Context, hash string) (*Staff, *Token, error)
}

// Entry is one audit-log entry: who changed what, when, from what to what.
type Entry struct {
	// ID orders the log; the store assigns it.
	ID int64 `json:"id"`
	// Time is when the change was made.
	Time time.Time `json:"time"`
	// Actor is the staff name, or "cli:" and the OS user for the CLI.
	Actor string `json:"actor"`
	// Action names the change, such as "account.disable" or "guard.unblock".
	Action string `json:"action"`
	// Target is what was changed, such as "account:jan@firma.cz",
	// "ip:203.0.113.9" or "queue:ID".
	Target string `json:"target"`
	// Before is the state before the change as JSON, or null.
	Before json.RawMessage `json:"before"`
	// After is the state after the change as JSON, or null.
	After json.RawMessage `json:"after"`
}

// AuditQuery selects audit entries; empty fields match everything.
type AuditQuery struct {
	// Actor matches the actor exactly.
	Actor string
	// Target matches the target exactly.
	Target string
	// Action matches the action exactly.
	Action string
	// Offset skips this many of the matching entries, newest first.
	Offset int
	// Limit is the most entries returned; 0 means 50.
	Limit int
}

// AuditLog keeps the audit log. Implementations are safe for concurrent
// use; storetest.Audit is the suite every one passes.
type AuditLog interface {
	// AddAudit appends e and returns its id; e.ID is ignored.
	AddAudit(ctx context.Context, e Entry) (int64, error)
	// Audit returns the matching entries, newest first, and how many match
	// in all.
	Audit(ctx context.Context, q AuditQuery) ([]Entry, int, error)
}
