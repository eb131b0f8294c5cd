package directory_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"submitd/internal/directory"
	"submitd/internal/pgdb"
	"submitd/internal/pgdb/pgtest"
	"submitd/internal/testutil"
)

// node is one node's view of a shared PostgreSQL directory: its own pool,
// store, listener and account cache.
type node struct {
	// store is the node's directory; cache its account cache.
	store *directory.Postgres
	cache *directory.Cache
	// mu guards changes, the changes the listener delivered.
	mu      sync.Mutex
	changes []directory.Change
}

// saw reports whether the node's listener delivered a change of kind to name.
func (n *node) saw(kind directory.ChangeKind, name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ch := range n.changes {
		if ch.Kind == kind && ch.Name == name {
			return true
		}
	}
	return false
}

// startNode opens a node on dsn with an account cache of ttl, following the
// NOTIFY channel until the test ends.
func startNode(t *testing.T, dsn string, ttl time.Duration) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := pgdb.Open(ctx, pgdb.Options{DSN: dsn, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := directory.NewPostgres(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{store: st, cache: directory.NewCache(st, ttl, 0, nil)}
	ln := directory.NewListener(pool, slog.New(slog.DiscardHandler))
	var once sync.Once
	up := make(chan struct{})
	ln.Subscribe(func(ch directory.Change) {
		if ch.Kind == directory.ChangesLost {
			once.Do(func() { close(up) })
		}
	})
	ln.Subscribe(n.cache.Changed)
	ln.Subscribe(func(ch directory.Change) {
		n.mu.Lock()
		n.changes = append(n.changes, ch)
		n.mu.Unlock()
	})
	done := make(chan struct{})
	go func() { defer close(done); ln.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; pool.Close() })
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatal("listener did not connect")
	}
	return n
}

// TestCacheTwoNodes: an account disabled through node B is seen disabled by
// node A's cache at once, through NOTIFY, long before its TTL of an hour;
// a password change and a removal likewise. A cache that nothing tells
// keeps the old answer, so the test would fail without the notice.
func TestCacheTwoNodes(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	a := startNode(t, dsn, time.Hour)
	b := startNode(t, dsn, time.Hour)
	ctx := context.Background()
	if err := b.store.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AddAccount(ctx, "jan@firma.cz", "{X}1"); err != nil {
		t.Fatal(err)
	}
	// Once node A has heard of the addition, what it caches next stays
	// until a change drops it.
	testutil.WaitFor(t, 5*time.Second, "node A hears of the new account", func() bool {
		return a.saw(directory.ChangeAccountAdded, "jan@firma.cz")
	})
	deaf := directory.NewCache(a.store, time.Hour, 0, nil)
	for _, c := range []*directory.Cache{a.cache, deaf} {
		if acc, err := c.Account(ctx, "Jan@Firma.cz"); err != nil || !acc.SMTPAccess {
			t.Fatalf("first lookup = %+v, %v", acc, err)
		}
	}
	if err := b.store.SetSMTPAccess(ctx, "jan@firma.cz", false); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node A sees the disable made on node B", func() bool {
		acc, err := a.cache.Account(ctx, "jan@firma.cz")
		return err == nil && !acc.SMTPAccess
	})
	if acc, _ := deaf.Account(ctx, "jan@firma.cz"); !acc.SMTPAccess {
		t.Fatal("a cache without notices saw the change: the test shows nothing")
	}
	if err := b.store.SetPassword(ctx, "jan@firma.cz", "{X}2"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node A sees the new password hash", func() bool {
		acc, err := a.cache.Account(ctx, "jan@firma.cz")
		return err == nil && acc.PasswordHash == "{X}2"
	})
	if err := b.store.AddAlias(ctx, "firma.com", "firma.cz"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node A sees the domain's new alias", func() bool {
		acc, err := a.cache.Account(ctx, "jan@firma.cz")
		return err == nil && len(acc.Aliases) == 1
	})
	if err := b.store.RemoveAccount(ctx, "jan@firma.cz"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node A sees the account gone", func() bool {
		_, err := a.cache.Account(ctx, "jan@firma.cz")
		return errors.Is(err, directory.ErrNotFound)
	})
}

// TestCacheDroppedOnReconnect: notices sent while the listener's connection
// was down are lost, so when it is back the whole cache goes; meanwhile
// lookups fail rather than answer from nothing.
func TestCacheDroppedOnReconnect(t *testing.T) {
	pg := testutil.StartPostgres(t)
	a := startNode(t, pg.CreateDB(t), time.Hour)
	ctx := context.Background()
	if err := a.store.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	if err := a.store.AddAccount(ctx, "jan@firma.cz", "{X}1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the listener hears of the new account", func() bool {
		return a.saw(directory.ChangeAccountAdded, "jan@firma.cz")
	})
	if _, err := a.cache.Account(ctx, "jan@firma.cz"); err != nil || a.cache.Len() != 1 {
		t.Fatalf("lookup: %v, %d cached", err, a.cache.Len())
	}
	pg.Stop()
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the cache emptied after the reconnect", func() bool { return a.cache.Len() == 0 })
}

// countingSource counts lookups.
type countingSource struct {
	// mu guards n; n counts lookups; acct is the answer.
	mu   sync.Mutex
	n    int
	acct directory.Account
	err  error
}

func (c *countingSource) Account(ctx context.Context, addr string) (*directory.Account, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.err != nil {
		return nil, c.err
	}
	a := c.acct
	return &a, nil
}

// TestCacheTTL: an account is used for the TTL and looked up again after
// it; failures are never remembered; the cache holds at most its bound.
func TestCacheTTL(t *testing.T) {
	clk := testutil.NewClock(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	src := &countingSource{acct: directory.Account{Address: "jan@firma.cz", Domain: "firma.cz", SMTPAccess: true}}
	c := directory.NewCache(src, 5*time.Second, 2, clk.Now)
	ctx := context.Background()
	for range 3 {
		if _, err := c.Account(ctx, "JAN@firma.cz"); err != nil {
			t.Fatal(err)
		}
	}
	if src.n != 1 {
		t.Fatalf("%d lookups within the TTL, want 1", src.n)
	}
	clk.Advance(5 * time.Second)
	c.Account(ctx, "jan@firma.cz")
	if src.n != 2 {
		t.Fatalf("%d lookups after the TTL, want 2", src.n)
	}
	src.err = errors.New("database down")
	if _, err := c.Account(ctx, "eva@firma.cz"); err == nil {
		t.Fatal("error not passed on")
	}
	if _, err := c.Account(ctx, "eva@firma.cz"); err == nil || src.n != 4 {
		t.Fatalf("failure remembered: %d lookups", src.n)
	}
	src.err = nil
	for _, a := range []string{"a@firma.cz", "b@firma.cz", "c@firma.cz", "d@firma.cz"} {
		c.Account(ctx, a)
	}
	if n := c.Len(); n > 2 {
		t.Fatalf("%d cached, bound is 2", n)
	}
}

// TestPostgresOnCommitDeliversBeforeReturn: with OnCommit wired to the
// listener, a change made through this process's store has reached the
// subscribers when the write returns, though the listener is not even
// running, so no NOTIFY could have brought it.
func TestPostgresOnCommitDeliversBeforeReturn(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	store, err := directory.NewPostgres(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	ln := directory.NewListener(pool, slog.New(slog.DiscardHandler))
	var mu sync.Mutex
	var got []directory.ChangeKind
	ln.Subscribe(func(ch directory.Change) { mu.Lock(); got = append(got, ch.Kind); mu.Unlock() })
	store.OnCommit(ln.Deliver)
	if err := store.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	if err := store.AddAccount(ctx, "jan@firma.cz", "{X}1"); err != nil {
		t.Fatal(err)
	}
	if err := store.SetSMTPAccess(ctx, "jan@firma.cz", false); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []directory.ChangeKind{directory.ChangeDomainAdded, directory.ChangeAccountAdded, directory.ChangeAccess}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("subscribers got %v when the writes returned, want %v", got, want)
	}
}
