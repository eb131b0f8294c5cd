// Package auth decides AUTH attempts: it looks the login up in the
// directory, answers from a credential cache when it can, and otherwise
// verifies the password on a bounded pool of hashing workers (SPEC R1–R4).
//
// A password hash is deliberately expensive (argon2id: 19 MiB and tens of
// milliseconds of CPU). Without bounds, every connection could run one at
// once; a flood of wrong passwords would then take the server's memory, and
// a customer whose client connects for every message would pay the hash
// every time. So a right answer is remembered for a while (cache_ttl) under
// an HMAC of login and password, and hashes run on a pool whose size, not
// the number of connections, bounds their memory.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"time"

	"submitd/internal/directory"
	"submitd/internal/password"
)

// Defaults for Config fields left zero.
const (
	// DefaultCacheTTL is how long a check's answer is used ([auth] cache_ttl).
	DefaultCacheTTL = 15 * time.Minute
	// DefaultCacheEntries bounds the right answers remembered (about 200
	// bytes each); wrong answers get a quarter as many.
	DefaultCacheEntries = 50000
	// DefaultQueue is how many checks may wait for a worker ([auth] hash_queue).
	DefaultQueue = 100
	// DefaultWait is the longest a check waits for a worker ([auth] hash_wait).
	DefaultWait = 2 * time.Second
)

// Verdict is the outcome of an AUTH attempt.
type Verdict int

// The verdicts.
const (
	// OK: the password is right and the account may send.
	OK Verdict = iota
	// WrongPassword: the account exists and the password is not its
	// password (or its stored hash cannot be used; Result.Err says so).
	WrongPassword
	// UnknownLogin: no such account.
	UnknownLogin
	// Disabled: the account's SMTP access is off (SPEC R4); the password
	// is not checked.
	Disabled
	// Busy: the check could not run in time (full queue, deadline); the
	// client should try again later. It says nothing about the password.
	Busy
	// Error: the directory could not be read; Result.Err is the cause.
	Error
	// Refused: the Gate of CheckAdmitted said no: a password would have
	// had to be hashed and the guard had no place left, or the answer was
	// in the cache and the client's key is at its limit.
	Refused
)

var verdictNames = [...]string{"ok", "wrong password", "unknown login", "disabled", "busy", "error", "refused"}

// String returns the verdict as it appears in logs.
func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Result is what Check decided.
type Result struct {
	// Verdict is the outcome.
	Verdict Verdict
	// Account is the account, for OK, WrongPassword and Disabled.
	Account *directory.Account
	// Cached is set when the answer came from the credential cache, without
	// a hash.
	Cached bool
	// Err is the cause of Error, or why a stored hash could not be used.
	Err error
}

// Directory is what the Authenticator needs of the directory.
type Directory interface {
	// Account returns the account of a login, or an error wrapping
	// directory.ErrNotFound.
	Account(ctx context.Context, address string) (*directory.Account, error)
}

// Config configures an Authenticator.
type Config struct {
	// Directory finds accounts.
	Directory Directory
	// Verify checks a password against a stored hash; nil means
	// password.Verify.
	Verify func(hash, pw string) (bool, error)
	// Scheme is the scheme of new hashes ([auth] password_scheme): unknown
	// logins are checked against a hash of it, so they cost what a wrong
	// password costs. "" means argon2id.
	Scheme string
	// CacheTTL is how long an answer is used; 0 means DefaultCacheTTL and a
	// negative value turns the cache off.
	CacheTTL time.Duration
	// CacheEntries bounds the right answers remembered; 0 means
	// DefaultCacheEntries.
	CacheEntries int
	// Workers is how many hashes run at once; 0 means the number of CPUs.
	Workers int
	// Queue is how many checks may wait for a worker; 0 means DefaultQueue.
	Queue int
	// Wait is the longest a check waits for its turn and a worker; 0 means
	// DefaultWait.
	Wait time.Duration
	// Clean reports whether a client key has no failed logins (the guard's
	// Clean); such clients keep one hashing worker of their own. nil: every
	// client counts as clean.
	Clean func(key netip.Prefix) bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives cache drops (at debug level); nil discards them.
	Log *slog.Logger
}

// Authenticator decides AUTH attempts. It is safe for concurrent use.
type Authenticator struct {
	// dir finds accounts; verify checks hashes.
	dir    Directory
	verify func(hash, pw string) (bool, error)
	// dummy is a hash of a random password in the configured scheme.
	dummy string
	// cache is nil when turned off.
	cache *cache
	// pool runs the hashes.
	pool *Pool
	// log receives cache drops.
	log *slog.Logger
	// cleanKey is Config.Clean, never nil.
	cleanKey func(netip.Prefix) bool
}

// New returns an Authenticator. It makes the hash for unknown logins, which
// takes one hash's time.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Directory == nil {
		return nil, errors.New("auth: no directory")
	}
	if cfg.Verify == nil {
		cfg.Verify = password.Verify
	}
	if cfg.Scheme == "" {
		cfg.Scheme = password.Argon2id
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheEntries <= 0 {
		cfg.CacheEntries = DefaultCacheEntries
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clean == nil {
		cfg.Clean = func(netip.Prefix) bool { return true }
	}
	var random [18]byte
	rand.Read(random[:])
	dummy, err := password.Hash(cfg.Scheme, base64.RawStdEncoding.EncodeToString(random[:]))
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	a := &Authenticator{
		dir:      cfg.Directory,
		verify:   cfg.Verify,
		dummy:    dummy,
		pool:     NewPool(cfg.Workers, cfg.Queue, cfg.Wait),
		log:      cfg.Log,
		cleanKey: cfg.Clean,
	}
	if cfg.CacheTTL > 0 {
		a.cache = newCache(cfg.CacheTTL, cfg.CacheEntries, cfg.Now)
	}
	return a, nil
}

// Gate is the brute-force guard's say over one attempt (SPEC R11), asked
// by CheckAdmitted.
type Gate interface {
	// Admit takes the attempt's place before a password is hashed, real or
	// dummy; false means none is left.
	Admit() bool
	// Open reports, taking nothing, whether the client's key is below its
	// limit; a cached answer asks it.
	Open() bool
}

// openGate is the Gate of Check: everything is let in.
type openGate struct{}

func (openGate) Admit() bool { return true }
func (openGate) Open() bool  { return true }

// Check decides an attempt to log in as login with pw from the client key
// key (the guard's key of the client address, guard.Config.Key). The login
// is looked up every time, so the access flag, the aliases and the
// identities are always current; only the password check is remembered,
// and only for the stored hash it was made against.
func (a *Authenticator) Check(ctx context.Context, key netip.Prefix, login, pw string) Result {
	return a.CheckAdmitted(ctx, key, login, pw, nil)
}

// CheckAdmitted is Check under the brute-force guard's gate (nil lets
// everything in), so that the limit of SPEC R11 holds for every way a
// password is tested. Before a password is hashed, real or dummy, the
// attempt takes its place with gate.Admit; when there is none, nothing is
// hashed and the verdict is Refused. An answer from the cache hashes
// nothing and takes no place, but it still tells a right password from a
// wrong one, so it is given only while gate.Open says the key is below its
// limit: otherwise an attacker holding connections open could go on testing
// guesses against cached passwords past the limit.
func (a *Authenticator) CheckAdmitted(ctx context.Context, key netip.Prefix, login, pw string, gate Gate) Result {
	if gate == nil {
		gate = openGate{}
	}
	acct, err := a.dir.Account(ctx, login)
	if errors.Is(err, directory.ErrNotFound) {
		if !gate.Admit() {
			return Result{Verdict: Refused}
		}
		// The same cost as a wrong password, through the same pool, so
		// neither the reply time nor a busy reply tells the two apart.
		err := a.pool.DoClean(ctx, key, a.clean(key), func() { a.verify(a.dummy, pw) })
		if err != nil {
			return a.notRun(err, nil)
		}
		return Result{Verdict: UnknownLogin}
	}
	if err != nil {
		return Result{Verdict: Error, Err: err}
	}
	if !acct.SMTPAccess || acct.Held {
		// SPEC R4, R20: whatever the password; a held account is refused
		// as a disabled one.
		return Result{Verdict: Disabled, Account: acct}
	}
	var id credID
	hp := fingerprint(acct.PasswordHash)
	if a.cache != nil {
		id = a.cache.id(login, pw)
		if ok, found := a.cache.get(id, acct.Address, hp); found {
			if !gate.Open() {
				return Result{Verdict: Refused, Account: acct}
			}
			return Result{Verdict: verdictOf(ok), Account: acct, Cached: true}
		}
	}
	if !gate.Admit() {
		return Result{Verdict: Refused, Account: acct}
	}
	var ok bool
	var verr error
	if err := a.pool.DoClean(ctx, key, a.clean(key), func() { ok, verr = a.verify(acct.PasswordHash, pw) }); err != nil {
		return a.notRun(err, acct)
	}
	if verr != nil {
		// An unusable stored hash is the operator's to fix; the attempt
		// fails, and is not remembered, so the fix takes effect at once.
		return Result{Verdict: WrongPassword, Account: acct, Err: verr}
	}
	if a.cache != nil {
		a.cache.put(id, acct.Address, hp, ok)
	}
	return Result{Verdict: verdictOf(ok), Account: acct}
}

func verdictOf(ok bool) Verdict {
	if ok {
		return OK
	}
	return WrongPassword
}

// notRun is the result of a check the pool did not run.
func (a *Authenticator) notRun(err error, acct *directory.Account) Result {
	if errors.Is(err, ErrBusy) {
		return Result{Verdict: Busy, Err: err}
	}
	return Result{Verdict: Error, Account: acct, Err: err}
}

// DirectoryChanged drops what the cache holds for an account whose password,
// hash or access changed, or that was removed; it is a directory.Watcher
// subscriber. Stale entries could not be used anyway (each is tied to the
// hash it was checked against, and the access flag is read every time); this
// makes the change take effect in the cache at once, not at the end of the
// TTL, and frees the memory.
func (a *Authenticator) DirectoryChanged(ch directory.Change) {
	if a.cache == nil {
		return
	}
	switch {
	case ch.Kind == directory.ChangesLost:
		if n := a.cache.dropAll(); n > 0 {
			a.log.Debug("auth: cached credentials dropped", "reason", "directory changes lost", "entries", n)
		}
	case ch.Kind == directory.ChangeIdentities || ch.Kind == directory.ChangeAccountAdded:
		// Neither changes whether a password is right.
	case ch.IsAccount():
		if n := a.cache.dropAccount(ch.Name); n > 0 {
			a.log.Debug("auth: cached credentials dropped", "account", ch.Name, "change", string(ch.Kind), "entries", n)
		}
	}
}

// Forget drops every cached answer for account at once, without waiting
// for the directory's change log: a held account (SPEC R20) must not log in
// again from the cache in the moment before the log is read.
func (a *Authenticator) Forget(account string) int {
	if a.cache == nil {
		return 0
	}
	n := a.cache.dropAccount(account)
	if n > 0 {
		a.log.Debug("auth: cached credentials dropped", "account", account, "change", "forget", "entries", n)
	}
	return n
}

// Stats are counts for monitoring and tests.
type Stats struct {
	// Right and Wrong are the answers the cache holds.
	Right, Wrong int
}

// Stats returns the current counts.
func (a *Authenticator) Stats() Stats {
	if a.cache == nil {
		return Stats{}
	}
	r, w := a.cache.size()
	return Stats{Right: r, Wrong: w}
}

// clean reports whether key has no failed logins.
func (a *Authenticator) clean(key netip.Prefix) bool { return a.cleanKey(key) }
