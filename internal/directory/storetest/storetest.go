// Package storetest is the suite every directory.Store passes, so that the
// PostgreSQL directory behaves as the SQLite one does: the same names
// normalized the same way, the same rules refused with the same errors, the
// same order of listings, and the same changes announced to a Feed.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"submitd/internal/address"
	"submitd/internal/directory"
	"submitd/internal/testutil"
)

// Open returns a fresh, empty store.
type Open func(t *testing.T) directory.Store

// Run runs the Store suite.
func Run(t *testing.T, open Open) {
	for name, f := range map[string]func(*testing.T, Open){
		"Refused": refused, "Domains": domains, "Aliases": aliases, "DomainOf": domainOf,
		"Accounts": accounts, "RemoveDomainForce": removeDomainForce, "Held": held,
	} {
		t.Run(name, func(t *testing.T) { f(t, open) })
	}
}

// dump returns everything the store holds as text, read through the
// interface, to compare the store before and after a refused change.
func dump(t *testing.T, st directory.Store) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	ds, err := st.Domains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		fmt.Fprintln(&b, d)
	}
	b.WriteString("--\n")
	as, err := st.Aliases(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		fmt.Fprintln(&b, a.Name, a.Domain)
	}
	b.WriteString("--\n")
	accs, err := st.Accounts(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accs {
		fmt.Fprintln(&b, a.Address, a.Domain, a.PasswordHash, a.SMTPAccess, a.Created.Unix())
	}
	b.WriteString("--\n")
	for _, a := range accs {
		for _, id := range a.Identities {
			fmt.Fprintln(&b, a.Address, id)
		}
	}
	b.WriteString("--\n")
	return b.String()
}

// fixture is the directory most tests start from:
//
//	firma.cz (hosted), aliases firma.com and firma.eu
//	jiný.cz (hosted, stored as xn--jin-noa.cz), no aliases
//	jan@firma.cz with identity jan.novak@gmail.com, eva@firma.cz disabled
func fixture(t *testing.T, open Open) directory.Store {
	t.Helper()
	st := open(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.AddDomain(ctx, "firma.cz"))
	must(st.AddDomain(ctx, "Jiný.CZ."))
	must(st.AddAlias(ctx, "firma.com", "firma.cz"))
	must(st.AddAlias(ctx, "FIRMA.EU", "firma.cz"))
	must(st.AddAccount(ctx, "Jan@Firma.cz", "{BLF-CRYPT}$2y$10$hash-jan"))
	must(st.AddAccount(ctx, "eva@firma.cz", "{BLF-CRYPT}$2y$10$hash-eva"))
	must(st.SetSMTPAccess(ctx, "eva@firma.cz", false))
	must(st.AddIdentity(ctx, "jan@firma.cz", "Jan.Novak@Gmail.com"))
	return st
}

// refused runs each change that the directory rules forbid against the
// fixture and checks that it fails with the right error and message and that
// the store is left exactly as it was.
func refused(t *testing.T, open Open) {
	ctx := context.Background()
	tests := []struct {
		name string
		op   func(st directory.Store) error
		is   error
		// msg are substrings the error must contain.
		msg []string
	}{
		{"domain add duplicate", func(st directory.Store) error { return st.AddDomain(ctx, "FIRMA.cz.") },
			directory.ErrExists, []string{"firma.cz"}},
		{"domain add duplicate IDNA", func(st directory.Store) error { return st.AddDomain(ctx, "xn--jin-noa.cz") },
			directory.ErrExists, []string{"xn--jin-noa.cz"}},
		{"domain add invalid", func(st directory.Store) error { return st.AddDomain(ctx, "fir_ma.cz") },
			address.ErrInvalid, []string{"fir_ma.cz", "'_'"}},
		{"domain add single label", func(st directory.Store) error { return st.AddDomain(ctx, "localhost") },
			address.ErrInvalid, []string{"two labels"}},
		{"domain add existing alias", func(st directory.Store) error { return st.AddDomain(ctx, "firma.com") },
			directory.ErrConflict, []string{"firma.com", "alias of firma.cz"}},
		{"domain remove with accounts", func(st directory.Store) error { return st.RemoveDomain(ctx, "firma.cz", false) },
			directory.ErrConflict, []string{"firma.cz", "2 account", "-force"}},
		{"domain remove unknown", func(st directory.Store) error { return st.RemoveDomain(ctx, "neznama.cz", true) },
			directory.ErrNotFound, []string{"neznama.cz"}},
		{"domain remove alias", func(st directory.Store) error { return st.RemoveDomain(ctx, "firma.com", true) },
			directory.ErrConflict, []string{"firma.com is an alias of firma.cz"}},
		{"alias of unknown domain", func(st directory.Store) error { return st.AddAlias(ctx, "firma.de", "neznama.cz") },
			directory.ErrNotFound, []string{"neznama.cz"}},
		{"alias of an alias", func(st directory.Store) error { return st.AddAlias(ctx, "firma.de", "firma.com") },
			directory.ErrConflict, []string{"firma.com is an alias of firma.cz"}},
		{"alias equal to hosted domain", func(st directory.Store) error { return st.AddAlias(ctx, "jiný.cz", "firma.cz") },
			directory.ErrConflict, []string{"xn--jin-noa.cz is a hosted domain"}},
		{"alias of itself", func(st directory.Store) error { return st.AddAlias(ctx, "FIRMA.cz", "firma.cz") },
			directory.ErrConflict, []string{"firma.cz", "itself"}},
		{"alias already alias of another", func(st directory.Store) error { return st.AddAlias(ctx, "firma.com", "jiný.cz") },
			directory.ErrExists, []string{"firma.com", "of firma.cz"}},
		{"alias invalid", func(st directory.Store) error { return st.AddAlias(ctx, "firma..de", "firma.cz") },
			address.ErrInvalid, []string{"firma..de", "empty label"}},
		{"alias remove unknown", func(st directory.Store) error { return st.RemoveAlias(ctx, "firma.de") },
			directory.ErrNotFound, []string{"firma.de"}},
		{"alias remove of a hosted domain", func(st directory.Store) error { return st.RemoveAlias(ctx, "firma.cz") },
			directory.ErrConflict, []string{"firma.cz is a hosted domain"}},
		{"account on alias domain", func(st directory.Store) error { return st.AddAccount(ctx, "petr@firma.com", "{X}y") },
			directory.ErrConflict, []string{"petr@firma.com", "alias of firma.cz"}},
		{"account on unknown domain", func(st directory.Store) error { return st.AddAccount(ctx, "petr@neznama.cz", "{X}y") },
			directory.ErrNotFound, []string{"petr@neznama.cz", "neznama.cz"}},
		{"account on subdomain", func(st directory.Store) error { return st.AddAccount(ctx, "petr@praha.firma.cz", "{X}y") },
			directory.ErrNotFound, []string{"praha.firma.cz"}},
		{"account duplicate case-insensitive", func(st directory.Store) error { return st.AddAccount(ctx, "JAN@firma.CZ", "{X}y") },
			directory.ErrExists, []string{"jan@firma.cz"}},
		{"account duplicate quoted", func(st directory.Store) error { return st.AddAccount(ctx, `"jan"@firma.cz`, "{X}y") },
			directory.ErrExists, []string{"jan@firma.cz"}},
		{"account not an address", func(st directory.Store) error { return st.AddAccount(ctx, "firma.cz", "{X}y") },
			address.ErrInvalid, []string{"not a full address"}},
		{"account empty hash", func(st directory.Store) error { return st.AddAccount(ctx, "petr@firma.cz", "") },
			directory.ErrConflict, []string{"empty password hash"}},
		{"passwd unknown", func(st directory.Store) error { return st.SetPassword(ctx, "petr@firma.cz", "{X}y") },
			directory.ErrNotFound, []string{"petr@firma.cz"}},
		{"passwd empty hash", func(st directory.Store) error { return st.SetPassword(ctx, "jan@firma.cz", "") },
			directory.ErrConflict, []string{"empty password hash"}},
		{"disable unknown", func(st directory.Store) error { return st.SetSMTPAccess(ctx, "petr@firma.cz", false) },
			directory.ErrNotFound, []string{"petr@firma.cz"}},
		{"account remove unknown", func(st directory.Store) error { return st.RemoveAccount(ctx, "jan@firma.com") },
			directory.ErrNotFound, []string{"jan@firma.com"}},
		{"identity of unknown account", func(st directory.Store) error { return st.AddIdentity(ctx, "petr@firma.cz", "p@gmail.com") },
			directory.ErrNotFound, []string{"petr@firma.cz"}},
		{"identity duplicate", func(st directory.Store) error { return st.AddIdentity(ctx, "jan@firma.cz", "JAN.NOVAK@gmail.com") },
			directory.ErrExists, []string{"jan.novak@gmail.com"}},
		{"identity invalid", func(st directory.Store) error { return st.AddIdentity(ctx, "jan@firma.cz", "jan@gmail") },
			address.ErrInvalid, []string{"jan@gmail"}},
		{"identity remove unknown", func(st directory.Store) error { return st.RemoveIdentity(ctx, "jan@firma.cz", "x@gmail.com") },
			directory.ErrNotFound, []string{"x@gmail.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := fixture(t, open)
			before := dump(t, st)
			err := tt.op(st)
			if err == nil {
				t.Fatal("succeeded; want an error")
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if after := dump(t, st); after != before {
				t.Errorf("store changed by a refused change:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func domains(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	for _, d := range []string{"Firma.CZ", "příklad.cz.", "xn--jin-noa.cz", "b.cz"} {
		if err := st.AddDomain(ctx, d); err != nil {
			t.Fatalf("AddDomain(%q): %v", d, err)
		}
	}
	got, err := st.Domains(ctx)
	want := []string{"b.cz", "firma.cz", "xn--jin-noa.cz", "xn--pklad-zsa96e.cz"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Domains = %q, %v; want %q", got, err, want)
	}
	// Removing by the Unicode form removes the A-label entry.
	if err := st.RemoveDomain(ctx, "PŘÍKLAD.cz", false); err != nil {
		t.Fatal(err)
	}
	got, _ = st.Domains(ctx)
	if want := []string{"b.cz", "firma.cz", "xn--jin-noa.cz"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after remove, Domains = %q; want %q", got, want)
	}
}

func aliases(t *testing.T, open Open) {
	ctx := context.Background()
	st := fixture(t, open)
	if err := st.AddAlias(ctx, "JINÝ.eu", "jiný.cz"); err != nil {
		t.Fatal(err)
	}
	all, err := st.Aliases(ctx, "")
	want := []directory.Alias{{Name: "firma.com", Domain: "firma.cz"}, {Name: "firma.eu", Domain: "firma.cz"}, {Name: "xn--jin-noa.eu", Domain: "xn--jin-noa.cz"}}
	if err != nil || !reflect.DeepEqual(all, want) {
		t.Fatalf("Aliases(\"\") = %v, %v; want %v", all, err, want)
	}
	one, err := st.Aliases(ctx, "Firma.CZ")
	if err != nil || !reflect.DeepEqual(one, want[:2]) {
		t.Fatalf("Aliases(firma.cz) = %v, %v; want %v", one, err, want[:2])
	}
	if _, err := st.Aliases(ctx, "firma.com"); !errors.Is(err, directory.ErrConflict) {
		t.Errorf("Aliases(alias) error = %v; want directory.ErrConflict", err)
	}
	if _, err := st.Aliases(ctx, "neznama.cz"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("Aliases(unknown) error = %v; want directory.ErrNotFound", err)
	}
	if err := st.RemoveAlias(ctx, "FIRMA.COM."); err != nil {
		t.Fatal(err)
	}
	one, _ = st.Aliases(ctx, "firma.cz")
	if want := []directory.Alias{{Name: "firma.eu", Domain: "firma.cz"}}; !reflect.DeepEqual(one, want) {
		t.Fatalf("after remove, Aliases = %v; want %v", one, want)
	}
	// A removed alias may become a hosted domain.
	if err := st.AddDomain(ctx, "firma.com"); err != nil {
		t.Fatalf("AddDomain of a removed alias: %v", err)
	}
}

func domainOf(t *testing.T, open Open) {
	ctx := context.Background()
	st := fixture(t, open)
	tests := []struct {
		name, want string
		err        error
	}{
		{"firma.cz", "firma.cz", nil},
		{"FIRMA.COM.", "firma.cz", nil},
		{"firma.eu", "firma.cz", nil},
		{"jiný.cz", "xn--jin-noa.cz", nil},
		{"praha.firma.cz", "", directory.ErrNotFound}, // SPEC R6: no implied subdomains
		{"gmail.com", "", directory.ErrNotFound},
		{"bad..name", "", address.ErrInvalid},
	}
	for _, tt := range tests {
		got, err := st.DomainOf(ctx, tt.name)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("DomainOf(%q) = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func accounts(t *testing.T, open Open) {
	ctx := context.Background()
	st := fixture(t, open)
	// Created is kept to the second.
	before := time.Now().Truncate(time.Second)
	if err := st.AddAccount(ctx, "Petr@JINÝ.cz", "{ARGON2ID}petr"); err != nil {
		t.Fatal(err)
	}

	acc, err := st.Account(ctx, "PETR@xn--jin-noa.cz")
	if err != nil {
		t.Fatal(err)
	}
	want := &directory.Account{Address: "petr@xn--jin-noa.cz", Domain: "xn--jin-noa.cz", PasswordHash: "{ARGON2ID}petr",
		SMTPAccess: true, Created: before}
	if acc.Created.Before(before) || acc.Created.After(time.Now()) {
		t.Errorf("Created = %v; want between %v and now", acc.Created, before)
	}
	acc.Created = before
	if !reflect.DeepEqual(acc, want) {
		t.Errorf("directory.Account = %+v; want %+v", acc, want)
	}

	// directory.Account returns the domain's aliases and the identities.
	jan, err := st.Account(ctx, "jan@firma.cz")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"firma.com", "firma.eu"}; !reflect.DeepEqual(jan.Aliases, want) {
		t.Errorf("Aliases = %q; want %q", jan.Aliases, want)
	}
	if want := []string{"jan.novak@gmail.com"}; !reflect.DeepEqual(jan.Identities, want) || !jan.SMTPAccess {
		t.Errorf("Identities = %q, SMTPAccess %v; want %q, true", jan.Identities, jan.SMTPAccess, want)
	}

	// Password, access and identities change in place.
	if err := st.SetPassword(ctx, "JAN@firma.cz", "{BLF-CRYPT}new"); err != nil {
		t.Fatal(err)
	}
	if err := st.SetSMTPAccess(ctx, "jan@firma.cz", false); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{`"Jan Novák"@Seznam.cz`, "jan@příklad.cz"} {
		if err := st.AddIdentity(ctx, "jan@firma.cz", id); err != nil {
			t.Fatal(err)
		}
	}
	jan, _ = st.Account(ctx, "jan@firma.cz")
	wantIDs := []string{`"jan novák"@seznam.cz`, "jan.novak@gmail.com", "jan@xn--pklad-zsa96e.cz"}
	if jan.PasswordHash != "{BLF-CRYPT}new" || jan.SMTPAccess || !reflect.DeepEqual(jan.Identities, wantIDs) {
		t.Errorf("after changes: hash %q access %v identities %q; want {BLF-CRYPT}new false %q",
			jan.PasswordHash, jan.SMTPAccess, jan.Identities, wantIDs)
	}

	// Accounts lists all or one domain's, with identities; an identity whose
	// local part has a space stays one identity.
	list, err := st.Accounts(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range list {
		got = append(got, fmt.Sprintf("%s %s %v %q", a.Address, a.Domain, a.SMTPAccess, a.Identities))
	}
	wantList := []string{
		`eva@firma.cz firma.cz false []`,
		fmt.Sprintf("jan@firma.cz firma.cz false %q", wantIDs),
		`petr@xn--jin-noa.cz xn--jin-noa.cz true []`,
	}
	if !reflect.DeepEqual(got, wantList) {
		t.Errorf("Accounts(\"\") =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantList, "\n"))
	}
	list, err = st.Accounts(ctx, "jiný.cz")
	if err != nil || len(list) != 1 || list[0].Address != "petr@xn--jin-noa.cz" {
		t.Errorf("Accounts(jiný.cz) = %v, %v; want petr only", list, err)
	}
	if _, err := st.Accounts(ctx, "firma.com"); !errors.Is(err, directory.ErrConflict) {
		t.Errorf("Accounts(alias) error = %v; want directory.ErrConflict", err)
	}

	if err := st.RemoveIdentity(ctx, "jan@firma.cz", "JAN.NOVAK@GMAIL.COM"); err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveAccount(ctx, "Petr@Jiný.cz"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Account(ctx, "petr@jiný.cz"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("directory.Account after remove: %v; want directory.ErrNotFound", err)
	}
	jan, _ = st.Account(ctx, "jan@firma.cz")
	if want := []string{wantIDs[0], wantIDs[2]}; !reflect.DeepEqual(jan.Identities, want) {
		t.Errorf("Identities after remove = %q; want %q", jan.Identities, want)
	}
}

func removeDomainForce(t *testing.T, open Open) {
	ctx := context.Background()
	st := fixture(t, open)
	if err := st.RemoveDomain(ctx, "firma.cz", true); err != nil {
		t.Fatal(err)
	}
	// Aliases, accounts and identities go with the domain.
	if got := dump(t, st); !strings.HasPrefix(got, "xn--jin-noa.cz") || strings.Count(got, "\n") != 5 {
		t.Errorf("after forced remove the store holds:\n%s", got)
	}
	if _, err := st.DomainOf(ctx, "firma.com"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("alias survived its domain: %v", err)
	}
	// The names are free again, also as aliases.
	if err := st.AddAlias(ctx, "firma.cz", "jiný.cz"); err != nil {
		t.Errorf("reuse of a removed domain as alias: %v", err)
	}

	// A domain without accounts goes without -force, taking its aliases.
	if err := st.RemoveDomain(ctx, "jiný.cz", false); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, st); got != "--\n--\n--\n--\n" {
		t.Errorf("store not empty:\n%s", got)
	}
}

// OpenFeed returns a fresh, empty store and the feed of its changes, not yet
// running.
type OpenFeed func(t *testing.T) (directory.Store, directory.Feed)

// Changes runs the Feed suite: every change made through the store reaches a
// subscriber, in order, as the same kind, name and domain.
func Changes(t *testing.T, open OpenFeed) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, feed := open(t)
	type seen struct{ kind, name, domain string }
	mu := make(chan struct{}, 1)
	var got []seen
	feed.Subscribe(func(ch directory.Change) {
		if ch.Kind == directory.ChangesLost {
			return
		}
		mu <- struct{}{}
		got = append(got, seen{string(ch.Kind), ch.Name, ch.Domain})
		<-mu
	})
	done := make(chan struct{})
	go func() { defer close(done); feed.Run(ctx) }()
	defer func() { cancel(); <-done }()
	snapshot := func() []seen {
		mu <- struct{}{}
		defer func() { <-mu }()
		return append([]seen(nil), got...)
	}
	// A feed may take a moment to start following (a LISTEN to be in
	// force): changes are made until one arrives.
	for i := 0; len(snapshot()) == 0; i++ {
		if i == 100 {
			t.Fatal("no change arrived through the feed within 5s")
		}
		if err := st.AddDomain(ctx, fmt.Sprintf("probe%d.cz", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Wait for the probes to settle, then start counting.
	time.Sleep(300 * time.Millisecond)
	skip := len(snapshot())
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.AddDomain(ctx, "Firma.cz"))
	must(st.AddAlias(ctx, "firma.com", "firma.cz"))
	must(st.AddAccount(ctx, "Jan@firma.cz", "{X}1"))
	must(st.AddAccount(ctx, "eva@firma.cz", "{X}2"))
	must(st.SetPassword(ctx, "jan@firma.cz", "{X}3"))
	must(st.SetSMTPAccess(ctx, "jan@firma.cz", false))
	must(st.AddIdentity(ctx, "jan@firma.cz", "jan@gmail.com"))
	must(st.RemoveIdentity(ctx, "jan@firma.cz", "jan@gmail.com"))
	must(st.RemoveAccount(ctx, "eva@firma.cz"))
	if err := st.SetPassword(ctx, "nikdo@firma.cz", "{X}4"); !errors.Is(err, directory.ErrNotFound) {
		t.Fatalf("SetPassword of nobody: %v", err)
	}
	must(st.RemoveAlias(ctx, "firma.com"))
	must(st.RemoveDomain(ctx, "firma.cz", true))
	want := []seen{
		{"domain_added", "firma.cz", "firma.cz"},
		{"alias_added", "firma.com", "firma.cz"},
		{"account_added", "jan@firma.cz", "firma.cz"},
		{"account_added", "eva@firma.cz", "firma.cz"},
		{"password", "jan@firma.cz", "firma.cz"},
		{"access", "jan@firma.cz", "firma.cz"},
		{"identities", "jan@firma.cz", "firma.cz"},
		{"identities", "jan@firma.cz", "firma.cz"},
		{"account_removed", "eva@firma.cz", "firma.cz"},
		{"alias_removed", "firma.com", "firma.cz"},
		{"account_removed", "jan@firma.cz", "firma.cz"},
		{"domain_removed", "firma.cz", "firma.cz"},
	}
	testutil.WaitFor(t, 5*time.Second, "every change through the feed", func() bool { return len(snapshot()) >= skip+len(want) })
	time.Sleep(100 * time.Millisecond)
	if g := snapshot()[skip:]; !reflect.DeepEqual(g, want) {
		t.Errorf("changes =\n%v\nwant\n%v", g, want)
	}
}

// held: a hold sets the flag, reason and time apart from SMTP access and
// lists the account among the held ones; a release clears all three
// (SPEC R20).
func held(t *testing.T, open Open) {
	ctx := context.Background()
	st := fixture(t, open)
	if err := st.SetHeld(ctx, "JAN@firma.cz", true, "volume: 200 messages"); err != nil {
		t.Fatal(err)
	}
	a, err := st.Account(ctx, "jan@firma.cz")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Held || a.HeldReason != "volume: 200 messages" || a.HeldSince.IsZero() || !a.SMTPAccess {
		t.Fatalf("held account %+v", a)
	}
	list, err := st.HeldAccounts(ctx)
	if err != nil || len(list) != 1 || list[0].Address != "jan@firma.cz" || !list[0].Held || len(list[0].Identities) != 1 {
		t.Fatalf("HeldAccounts = %+v, %v", list, err)
	}
	all, err := st.Accounts(ctx, "firma.cz")
	if err != nil || len(all) != 2 || all[0].Held || !all[1].Held {
		t.Fatalf("Accounts = %+v, %v", all, err)
	}
	if err := st.SetHeld(ctx, "jan@firma.cz", false, "ignored"); err != nil {
		t.Fatal(err)
	}
	a, _ = st.Account(ctx, "jan@firma.cz")
	if a.Held || a.HeldReason != "" || !a.HeldSince.IsZero() {
		t.Fatalf("released account %+v", a)
	}
	if list, _ := st.HeldAccounts(ctx); len(list) != 0 {
		t.Fatalf("still held: %+v", list)
	}
	if err := st.SetHeld(ctx, "nikdo@firma.cz", true, "x"); !errors.Is(err, directory.ErrNotFound) {
		t.Fatalf("hold of an unknown account: %v", err)
	}
}
