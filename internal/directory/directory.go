// Package directory is submitd's directory of hosted domains, alias domains and
// accounts (SPEC §1). Callers use the Store interface; SQLite is the embedded
// implementation, and another backend only has to satisfy the same interface.
//
// Every name is normalized on the way in (address.Domain, address.Parse), so
// the store only ever holds and compares lowercase A-label domains and
// lowercase NFC local parts. Directories written by older versions may hold
// twins, names that differ only in Unicode normalization; they are reported,
// never merged (Twin).
package directory

import (
	"context"
	"errors"
	"time"
)

// Errors wrapped by Store methods; the wrapping message names the value.
var (
	// ErrNotFound: the named domain, alias, account or identity does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the name is already taken.
	ErrExists = errors.New("already exists")
	// ErrConflict: the change would break a directory rule (an alias that is a
	// hosted domain, removing a domain that has accounts, …).
	ErrConflict = errors.New("conflict")
)

// Alias is an alias domain and the hosted domain it belongs to.
type Alias struct {
	// Name is the alias domain.
	Name string
	// Domain is the hosted domain it is an alias of.
	Domain string
}

// Account is a mailbox on a hosted domain.
type Account struct {
	// Address is the normalized full address, the login (SPEC R2).
	Address string
	// Domain is the hosted domain part of Address.
	Domain string
	// PasswordHash is the stored hash in "{SCHEME}…" or crypt(3) form.
	PasswordHash string
	// SMTPAccess is false when support has disabled sending (SPEC R4).
	SMTPAccess bool
	// Held is set while the account is held as compromised (SPEC R20): its
	// SMTP access is off as with SMTPAccess false, but apart from it, so
	// that releasing the hold does not undo a disable made by support.
	Held bool
	// HeldReason says why the account is held (the signal that tripped),
	// "" when it is not.
	HeldReason string
	// HeldSince is when the hold began; zero when not held.
	HeldSince time.Time
	// Aliases are the alias domains of Domain, filled by Store.Account.
	Aliases []string
	// Identities are the extra sender identities usable from webmail (SPEC R9).
	Identities []string
	// Created is when the account was added.
	Created time.Time
}

// Store is the directory. Implementations normalize names on input and are
// safe for concurrent use.
type Store interface {
	// AddDomain adds a hosted domain.
	AddDomain(ctx context.Context, name string) error
	// RemoveDomain removes a hosted domain and its aliases; with accounts it
	// refuses unless force, which removes them too.
	RemoveDomain(ctx context.Context, name string, force bool) error
	// Domains lists hosted domains in order.
	Domains(ctx context.Context) ([]string, error)
	// AddAlias makes alias an alias domain of the hosted domain.
	AddAlias(ctx context.Context, alias, domain string) error
	// RemoveAlias removes an alias domain.
	RemoveAlias(ctx context.Context, alias string) error
	// Aliases lists alias domains, of one hosted domain or ("" ) of all.
	Aliases(ctx context.Context, domain string) ([]Alias, error)
	// AddAccount adds an account with SMTP access enabled.
	AddAccount(ctx context.Context, address, passwordHash string) error
	// SetPassword replaces an account's password hash.
	SetPassword(ctx context.Context, address, passwordHash string) error
	// SetSMTPAccess enables or disables an account's SMTP access.
	SetSMTPAccess(ctx context.Context, address string, enabled bool) error
	// SetHeld holds an account (SPEC R20) with reason, or with held false
	// releases it; either way it is one access change in the change log.
	SetHeld(ctx context.Context, address string, held bool, reason string) error
	// HeldAccounts lists the held accounts, oldest hold first; Aliases is
	// not filled.
	HeldAccounts(ctx context.Context) ([]Account, error)
	// RemoveAccount removes an account and its identities.
	RemoveAccount(ctx context.Context, address string) error
	// Account returns one account with its domain's aliases and its identities.
	Account(ctx context.Context, address string) (*Account, error)
	// Accounts lists accounts, of one domain or ("") of all; Aliases is not filled.
	Accounts(ctx context.Context, domain string) ([]Account, error)
	// AddIdentity adds an extra sender identity to an account.
	AddIdentity(ctx context.Context, address, identity string) error
	// RemoveIdentity removes an extra sender identity.
	RemoveIdentity(ctx context.Context, address, identity string) error
	// DomainOf returns the hosted domain that name is or is an alias of.
	DomainOf(ctx context.Context, name string) (string, error)
	// Twins lists names stored more than once in forms that differ only in
	// Unicode normalization (see Twin).
	Twins(ctx context.Context) ([]Twin, error)
	// RemoveTwin removes one stored form of a twin, given exactly as
	// stored: an account when account is "", else an identity of account.
	// The one left takes the normalized form.
	RemoveTwin(ctx context.Context, account, stored string) error
}
