package directory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/text/unicode/norm"

	"submitd/internal/address"
)

// Twin is a name stored more than once in forms that differ only in Unicode
// normalization, such as jiří@firma.cz with precomposed letters (NFC) and
// with combining accents (NFD). Older versions stored local parts as given,
// so a directory may hold both; they look the same, and since SPEC §1 makes
// them one name, only the one in normalized form can log in or be used.
type Twin struct {
	// Account is the account whose identities collide; "" when the twins
	// are accounts.
	Account string
	// Address is the normalized form the stored names share.
	Address string
	// Stored are the names as stored, in byte order.
	Stored []string
}

// String describes the twin for the CLI and error messages, with the stored
// forms quoted with escapes, since unescaped they look the same.
func (t Twin) String() string {
	q := make([]string, len(t.Stored))
	for i, s := range t.Stored {
		q[i] = Quote(s)
	}
	what := "account " + t.Address
	if t.Account != "" {
		what = "identity " + t.Address + " of " + t.Account
	}
	return fmt.Sprintf("%s is stored %d times: %s", what, len(t.Stored), strings.Join(q, " "))
}

// LogValue implements slog.LogValuer: the stored forms are escaped, comma
// separated and unquoted, so that a text log line does not escape them again.
func (t Twin) LogValue() slog.Value {
	esc := make([]string, len(t.Stored))
	for i, s := range t.Stored {
		q := Quote(s)
		esc[i] = q[1 : len(q)-1]
	}
	attrs := []slog.Attr{slog.String("address", t.Address)}
	if t.Account != "" {
		attrs = append(attrs, slog.String("identity_of", t.Account))
	}
	return slog.GroupValue(append(attrs, slog.String("stored", strings.Join(esc, ",")))...)
}

// Quote returns s as a Go string literal with every non-ASCII character
// escaped, so that names differing only in normalization look different.
func Quote(s string) string { return strconv.QuoteToASCII(s) }

// ExistsError is the error for adding given when its normalized form is
// already stored; what names the stored one ("account jiří@firma.cz"). When
// given is another Unicode spelling of it, the message says so, since the two
// look the same on a terminal.
func ExistsError(what, given string) error {
	if !norm.NFC.IsNormalString(given) {
		return fmt.Errorf("%s: %w (%s is the same address in another Unicode normalization form)",
			what, ErrExists, Quote(given))
	}
	return fmt.Errorf("%s: %w", what, ErrExists)
}

// normKey returns the normalized form of a stored address; a stored value
// that no longer parses is its own key and is left as it is.
func normKey(stored string) string {
	a, err := address.Parse(stored)
	if err != nil {
		return stored
	}
	return a.String()
}

// querier is what scanning the directory needs: a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// rename is a stored name whose normalized form is not taken.
type rename struct {
	// account is the owner, for an identity; "" for an account.
	account string
	// from is the stored form, to the normalized one.
	from, to string
}

// isASCII reports whether s has no byte above 0x7f. Such a name was stored
// lowercased by every version and NFC leaves it as it is, so it is already
// in normalized form; skipping it keeps the scan cheap on large directories.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// pending collects stored names not in normalized form, by owner and
// normalized form.
type pending struct {
	// names maps owner and normalized form to the stored forms.
	names map[[2]string][]string
	// keys are the map's keys in the order first seen.
	keys [][2]string
}

// add records stored, a name of owner ("" for accounts), if it is not in
// normalized form.
func (p *pending) add(owner, stored string) {
	if isASCII(stored) {
		return
	}
	k := normKey(stored)
	if k == stored {
		return
	}
	key := [2]string{owner, k}
	if _, ok := p.names[key]; !ok {
		p.keys = append(p.keys, key)
	}
	p.names[key] = append(p.names[key], stored)
}

// scanNames finds the stored accounts and identities that are not in
// normalized form: those whose normalized form no other row has (renames),
// and those that collide with another row (twins). The identities of a twin
// account not in normalized form are neither: they stay with it, untouched.
// Memory is bounded by the number of names not in normalized form, not by the
// size of the directory.
func scanNames(ctx context.Context, q querier) ([]rename, []Twin, error) {
	accts := pending{names: map[[2]string][]string{}}
	if err := scanRows(ctx, q, `SELECT '', address FROM accounts`, accts.add); err != nil {
		return nil, nil, err
	}
	renames, twins, err := accts.resolve(func(_, k string) (bool, error) {
		return exists(ctx, q, `SELECT 1 FROM accounts WHERE address = ?`, k)
	})
	if err != nil {
		return nil, nil, err
	}
	// The twin not in normalized form cannot log in; its identities stay
	// with it as they are. The other one's are treated like any account's.
	unreachable := map[string]bool{}
	for _, t := range twins {
		for _, s := range t.Stored {
			unreachable[s] = s != t.Address
		}
	}
	// An identity's owner is named as it will be after its own rename;
	// until then its identities refer to the stored name.
	newName, oldName := map[string]string{}, map[string]string{}
	for _, r := range renames {
		newName[r.from], oldName[r.to] = r.to, r.from
	}
	ids := pending{names: map[[2]string][]string{}}
	err = scanRows(ctx, q, `SELECT account, address FROM identities`, func(acct, id string) {
		if unreachable[acct] {
			return
		}
		if to, ok := newName[acct]; ok {
			acct = to
		}
		ids.add(acct, id)
	})
	if err != nil {
		return nil, nil, err
	}
	r, t, err := ids.resolve(func(owner, k string) (bool, error) {
		if from, ok := oldName[owner]; ok {
			owner = from
		}
		return exists(ctx, q, `SELECT 1 FROM identities WHERE account = ? AND address = ?`, owner, k)
	})
	if err != nil {
		return nil, nil, err
	}
	return append(renames, r...), append(twins, t...), nil
}

// resolve sorts the pending names into renames and twins; taken reports
// whether an owner already has a row stored in normalized form k.
func (p *pending) resolve(taken func(owner, k string) (bool, error)) ([]rename, []Twin, error) {
	slices.SortFunc(p.keys, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	var renames []rename
	var twins []Twin
	for _, key := range p.keys {
		names := p.names[key]
		ok, err := taken(key[0], key[1])
		if err != nil {
			return nil, nil, err
		}
		if ok {
			names = append(names, key[1])
		}
		if len(names) == 1 {
			renames = append(renames, rename{account: key[0], from: names[0], to: key[1]})
			continue
		}
		slices.Sort(names)
		twins = append(twins, Twin{Account: key[0], Address: key[1], Stored: names})
	}
	return renames, twins, nil
}

// scanRows calls f with the two columns of each row of query.
func scanRows(ctx context.Context, q querier, query string, f func(a, b string)) error {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a, b string
		if err := rows.Scan(&a, &b); err != nil {
			return fmt.Errorf("directory: %w", err)
		}
		f(a, b)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	return nil
}

// normalizeNames brings every stored account and identity whose normalized
// form is not taken to that form (SPEC §1), and leaves twins as they are, for
// support to resolve: merging them would silently give one account's
// password, identities and mail to the other. It is the directory's
// migration to NFC local parts, and runs again after a twin is removed, so
// that the one left becomes reachable.
func normalizeNames(ctx context.Context, tx *sql.Tx) error {
	renames, _, err := scanNames(ctx, tx)
	if err != nil {
		return err
	}
	if len(renames) == 0 {
		return nil
	}
	// Renaming an account changes the key its identities refer to; the
	// foreign keys are checked at commit, when both sides agree again.
	if _, err := tx.ExecContext(ctx, `PRAGMA defer_foreign_keys = ON`); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	for _, r := range renames {
		var err error
		if r.account == "" {
			_, err = tx.ExecContext(ctx, `UPDATE accounts SET address = ? WHERE address = ?`, r.to, r.from)
			if err == nil {
				_, err = tx.ExecContext(ctx, `UPDATE identities SET account = ? WHERE account = ?`, r.to, r.from)
			}
		} else {
			// Account renames come first, so the owner has its new name.
			_, err = tx.ExecContext(ctx, `UPDATE identities SET address = ? WHERE account = ? AND address = ?`,
				r.to, r.account, r.from)
		}
		if err != nil {
			return fmt.Errorf("directory: normalize %s: %w", Quote(r.from), err)
		}
	}
	return nil
}

// Twins implements Store.
func (s *SQLite) Twins(ctx context.Context) ([]Twin, error) {
	_, twins, err := scanNames(ctx, s.db)
	return twins, err
}

// findTwin returns the first twin match accepts, or nil.
func findTwin(ctx context.Context, q querier, match func(Twin) bool) (*Twin, error) {
	_, twins, err := scanNames(ctx, q)
	if err != nil {
		return nil, err
	}
	for i := range twins {
		if match(twins[i]) {
			return &twins[i], nil
		}
	}
	return nil, nil
}

// refuseTwin fails when the normalized name key of account ("" for an
// account itself) has a twin: removing it by that name would leave the
// other, which nothing can reach. Support chooses which to keep.
func refuseTwin(ctx context.Context, tx *sql.Tx, account, key string) error {
	t, err := findTwin(ctx, tx, func(t Twin) bool { return t.Account == account && t.Address == key })
	if err != nil || t == nil {
		return err
	}
	return fmt.Errorf("%s; remove the unwanted one with \"submitd account twins remove\": %w", t, ErrConflict)
}

// RemoveTwin implements Store.
func (s *SQLite) RemoveTwin(ctx context.Context, account, stored string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		owner := normKey(account)
		t, err := findTwin(ctx, tx, func(t Twin) bool { return t.Account == owner && slices.Contains(t.Stored, stored) })
		if err != nil {
			return err
		}
		if t == nil {
			what := "account"
			if account != "" {
				what = "identity of " + account
			}
			return fmt.Errorf("%s %s is not one of two names that differ only in Unicode normalization (see \"submitd account twins\"): %w",
				what, Quote(stored), ErrNotFound)
		}
		var res sql.Result
		if account == "" {
			res, err = tx.ExecContext(ctx, `DELETE FROM accounts WHERE address = ?`, stored)
		} else {
			res, err = tx.ExecContext(ctx, `DELETE FROM identities WHERE account = ? AND address = ?`, owner, stored)
		}
		if err != nil {
			return fmt.Errorf("directory: remove %s: %w", Quote(stored), err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errors.New("directory: remove " + Quote(stored) + ": no row removed")
		}
		if err := s.logTwinRemoval(ctx, tx, owner, stored); err != nil {
			return err
		}
		// With one name of the pair left, it takes the normalized form.
		return normalizeNames(ctx, tx)
	})
}
