package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// changesAfter returns the kinds and names of the log after seq.
func changesAfter(t *testing.T, st *SQLite, seq int64) []string {
	t.Helper()
	chs, err := st.Changes(context.Background(), seq, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range chs {
		out = append(out, fmt.Sprintf("%s %s %s", ch.Kind, ch.Name, ch.Domain))
	}
	return out
}

// TestChangeLogRecordsEveryMutation: each change a subscriber may depend on
// leaves exactly its entries; a refused change leaves none.
func TestChangeLogRecordsEveryMutation(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	steps := []struct {
		do   func() error
		want []string
	}{
		{func() error { return st.AddDomain(ctx, "Firma.CZ") }, []string{"domain_added firma.cz firma.cz"}},
		{func() error { return st.AddAlias(ctx, "firma.com", "firma.cz") }, []string{"alias_added firma.com firma.cz"}},
		{func() error { return st.AddAccount(ctx, "Jan@firma.cz", "{X}h") }, []string{"account_added jan@firma.cz firma.cz"}},
		{func() error { return st.AddAccount(ctx, "eva@firma.cz", "{X}h") }, []string{"account_added eva@firma.cz firma.cz"}},
		{func() error { return st.SetPassword(ctx, "jan@firma.cz", "{X}h2") }, []string{"password jan@firma.cz firma.cz"}},
		{func() error { return st.SetSMTPAccess(ctx, "jan@firma.cz", false) }, []string{"access jan@firma.cz firma.cz"}},
		{func() error { return st.AddIdentity(ctx, "jan@firma.cz", "jan@seznam.cz") }, []string{"identities jan@firma.cz firma.cz"}},
		{func() error { return st.RemoveIdentity(ctx, "jan@firma.cz", "jan@seznam.cz") }, []string{"identities jan@firma.cz firma.cz"}},
		{func() error { return st.RemoveAlias(ctx, "firma.com") }, []string{"alias_removed firma.com firma.cz"}},
		{func() error { return st.RemoveAccount(ctx, "eva@firma.cz") }, []string{"account_removed eva@firma.cz firma.cz"}},
		// Refused changes: nothing is recorded.
		{func() error { return st.SetPassword(ctx, "nikdo@firma.cz", "{X}h") }, nil},
		{func() error { return st.RemoveAlias(ctx, "firma.cz") }, nil},
		{func() error { return st.RemoveDomain(ctx, "firma.cz", false) }, nil},
		{func() error { return st.AddAccount(ctx, "jan@firma.cz", "{X}h") }, nil},
		// A forced removal tells of each account it takes along.
		{func() error { return st.RemoveDomain(ctx, "firma.cz", true) }, []string{"account_removed jan@firma.cz firma.cz", "domain_removed firma.cz firma.cz"}},
	}
	for i, step := range steps {
		before, err := st.LastChange(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = step.do()
		if (err != nil) != (step.want == nil) {
			t.Fatalf("step %d: err = %v", i, err)
		}
		if got := changesAfter(t, st, before); !reflect.DeepEqual(got, step.want) {
			t.Errorf("step %d: changes %q, want %q", i, got, step.want)
		}
	}
}

// TestChangeLogPrune: pruning by age and by count keeps the log bounded, and
// a reader behind the pruned part is told, not silently skipped ahead.
func TestChangeLogPrune(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st.now = clock.Now
	if err := st.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := st.AddAccount(ctx, fmt.Sprintf("u%d@firma.cz", i), "{X}h"); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
	}
	// Entries 1 (domain) and 2, 3 (u0, u1) are older than 3m30s.
	if err := st.PruneChanges(ctx, clock.Now().Add(-210*time.Second), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Changes(ctx, 2, 10); !errors.Is(err, ErrChangesPruned) {
		t.Fatalf("Changes after a pruned entry: %v, want ErrChangesPruned", err)
	}
	if got := changesAfter(t, st, 3); len(got) != 3 {
		t.Fatalf("after pruning by age: %q, want the 3 newest", got)
	}
	if err := st.PruneChanges(ctx, time.Time{}, 1); err != nil {
		t.Fatal(err)
	}
	if got := changesAfter(t, st, 5); !reflect.DeepEqual(got, []string{"account_added u4@firma.cz firma.cz"}) {
		t.Fatalf("after keeping 1: %q", got)
	}
	if n, err := st.LastChange(ctx); err != nil || n != 6 {
		t.Fatalf("LastChange = %d, %v; want 6", n, err)
	}
	// Everything gone: the position survives.
	if err := st.PruneChanges(ctx, clock.Now().Add(time.Hour), 100); err != nil {
		t.Fatal(err)
	}
	if n, err := st.LastChange(ctx); err != nil || n != 6 {
		t.Fatalf("LastChange after pruning all = %d, %v; want 6", n, err)
	}
}

// TestWatcherFollowsAnotherProcess: changes made through a second
// connection to the database file (as the CLI makes them) reach the
// watcher's subscribers in order; a watcher that fell behind the pruned log
// gets ChangesLost and then continues.
func TestWatcherFollowsAnotherProcess(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	server, err := NewSQLite(ctx, testutil.OpenDBIn(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewSQLite(ctx, testutil.OpenDBIn(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(ctx, server, WatcherConfig{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	w.Subscribe(func(ch Change) { got = append(got, string(ch.Kind)+" "+ch.Name) })
	if err := w.Sync(ctx); err != nil || got != nil {
		t.Fatalf("first Sync delivered %q, %v; want nothing (the watcher starts at the end)", got, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cli.AddAccount(ctx, "jan@firma.cz", "{X}h"))
	must(cli.SetPassword(ctx, "jan@firma.cz", "{X}h2"))
	must(cli.SetSMTPAccess(ctx, "jan@firma.cz", false))
	must(w.Sync(ctx))
	want := []string{"account_added jan@firma.cz", "password jan@firma.cz", "access jan@firma.cz"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}

	got = nil
	must(cli.SetPassword(ctx, "jan@firma.cz", "{X}h3"))
	must(cli.PruneChanges(ctx, time.Now().Add(time.Hour), 0))
	must(cli.SetSMTPAccess(ctx, "jan@firma.cz", true))
	must(w.Sync(ctx))
	// Lost covers the access change too: the watcher goes on from the end.
	want = []string{"lost "}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after the log was pruned past the watcher: %q, want %q", got, want)
	}
	must(cli.RemoveAccount(ctx, "jan@firma.cz"))
	must(w.Sync(ctx))
	want = append(want, "account_removed jan@firma.cz")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after ChangesLost: %q, want %q", got, want)
	}
}

// TestChangeLogTwinRemoval: removing one of two accounts whose names differ
// only in Unicode normalization records the removal and the survivor's
// rename to the normalized name, which is now another account.
func TestChangeLogTwinRemoval(t *testing.T) {
	ctx := context.Background()
	old := oldDirectory(t,
		`INSERT INTO domains VALUES ('firma.cz', 1)`,
		`INSERT INTO accounts VALUES ('`+jiriNFC+`', 'firma.cz', '{X}nfc', 1, 1)`,
		`INSERT INTO accounts VALUES ('`+jiriNFD+`', 'firma.cz', '{X}nfd', 1, 2)`,
	)
	st, err := NewSQLite(ctx, old.db)
	if err != nil {
		t.Fatal(err)
	}
	before, err := st.LastChange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveTwin(ctx, "", jiriNFC); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"account_removed " + jiriNFC + " firma.cz",
		"account_removed " + jiriNFD + " firma.cz",
		"account_added " + jiriNFC + " firma.cz",
	}
	if got := changesAfter(t, st, before); !reflect.DeepEqual(got, want) {
		t.Fatalf("changes %+q, want %+q", got, want)
	}
}

// TestOnCommitDeliversBeforeReturn checks that, with OnCommit wired to the
// watcher's Sync, a change made through the store has reached the
// subscribers when the write returns, without waiting for a poll.
func TestOnCommitDeliversBeforeReturn(t *testing.T) {
	ctx := context.Background()
	s, err := NewSQLite(ctx, testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(ctx, s, WatcherConfig{PollInterval: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []ChangeKind
	w.Subscribe(func(ch Change) { mu.Lock(); got = append(got, ch.Kind); mu.Unlock() })
	s.OnCommit(func() { w.Sync(ctx) })
	if err := s.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != ChangeDomainAdded {
		t.Fatalf("subscribers got %v when AddDomain returned, want [%v]", got, ChangeDomainAdded)
	}
}
