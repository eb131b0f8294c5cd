package auth

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/directory"
	"submitd/internal/guard"
	"submitd/internal/password"
	"submitd/internal/testutil"
)

const (
	testPassword = "correct horse battery"
	// testHash is testPassword as {SHA512-CRYPT} with the fewest rounds
	// crypt(3) allows: cheap, where the cost of a hash is not the point.
	testHash = "{SHA512-CRYPT}$6$rounds=1000$saltsalt$cR7uED9S9icrxa11Lj7F5D.7U8449gpqBXyD2HSpuHRpxCc17kJRpsJMsHp434Y8yykgmcefOmxgCH44Cw7tW/"
)

const (
	// newHash is "new password", testHash2 testPassword with another salt
	// (openssl passwd -6).
	newHash   = "{SHA512-CRYPT}$6$newsalt$j3MqATxclvcPdqjO8B665/SfoINP65QcZn6YjUfG9WNq.OgGI9/.IrsykVSBx2QZkKar45YTs.GcA0EqbqR2X/"
	testHash2 = "$6$othersalt$KT6y0L.qbQhCrys/kUvlFXNisrY6kyG3ZUIZFBdEc3A5Pnp5JcANoD4/ZeoFXGpUlZKibT6zLyPxRMGdjGM2Z1"
)

var key1 = netip.MustParsePrefix("192.0.2.1/32")

// counter wraps password.Verify and counts the hashes it runs, by stored
// hash.
type counter struct {
	mu     sync.Mutex
	hashes map[string]int
}

func (c *counter) verify(hash, pw string) (bool, error) {
	c.mu.Lock()
	if c.hashes == nil {
		c.hashes = map[string]int{}
	}
	c.hashes[hash]++
	c.mu.Unlock()
	return password.Verify(hash, pw)
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.hashes {
		n += v
	}
	return n
}

// testDir is a real directory with firma.cz and the account jan@firma.cz.
func testDir(t testing.TB) *directory.SQLite {
	t.Helper()
	ctx := context.Background()
	dir, err := directory.NewSQLite(ctx, testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.AddDomain(ctx, "firma.cz"); err != nil {
		t.Fatal(err)
	}
	if err := dir.AddAccount(ctx, "jan@firma.cz", testHash); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newTestAuth returns an Authenticator on dir with a counting verify.
func newTestAuth(t testing.TB, dir Directory, cfg Config) (*Authenticator, *counter) {
	t.Helper()
	c := &counter{}
	cfg.Directory = dir
	cfg.Verify = c.verify
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

func check(t *testing.T, a *Authenticator, login, pw string, want Verdict, cached bool) Result {
	t.Helper()
	r := a.Check(context.Background(), key1, login, pw)
	if r.Verdict != want || r.Cached != cached {
		t.Fatalf("Check(%s, %q) = %v cached=%v (err %v); want %v cached=%v", login, pw, r.Verdict, r.Cached, r.Err, want, cached)
	}
	return r
}

// TestCacheAnswersRepeats: the second check of the same login and password
// runs no hash, for a right and for a wrong password; another password is
// hashed.
func TestCacheAnswersRepeats(t *testing.T) {
	a, c := newTestAuth(t, testDir(t), Config{})
	r := check(t, a, "jan@firma.cz", testPassword, OK, false)
	if r.Account == nil || r.Account.Address != "jan@firma.cz" {
		t.Fatalf("account %+v", r.Account)
	}
	check(t, a, "jan@firma.cz", testPassword, OK, true)
	check(t, a, "jan@firma.cz", "wrong", WrongPassword, false)
	check(t, a, "jan@firma.cz", "wrong", WrongPassword, true)
	check(t, a, "jan@firma.cz", "wrong2", WrongPassword, false)
	if n := c.total(); n != 3 {
		t.Fatalf("%d hashes, want 3", n)
	}
	if s := a.Stats(); s.Right != 1 || s.Wrong != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestCacheTiedToStoredHash: even before the change log is read, a cached
// answer is not used once the stored hash differs, nor once the account is
// disabled (SPEC R4), nor after the TTL.
func TestCacheTiedToStoredHash(t *testing.T) {
	ctx := context.Background()
	dir := testDir(t)
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a, _ := newTestAuth(t, dir, Config{Now: clock.Now, CacheTTL: 15 * time.Minute})
	check(t, a, "jan@firma.cz", testPassword, OK, false)
	check(t, a, "jan@firma.cz", "wrong", WrongPassword, false)
	if err := dir.SetPassword(ctx, "jan@firma.cz", newHash); err != nil {
		t.Fatal(err)
	}
	check(t, a, "jan@firma.cz", testPassword, WrongPassword, false)
	check(t, a, "jan@firma.cz", "new password", OK, false)
	check(t, a, "jan@firma.cz", "new password", OK, true)
	if err := dir.SetSMTPAccess(ctx, "jan@firma.cz", false); err != nil {
		t.Fatal(err)
	}
	check(t, a, "jan@firma.cz", "new password", Disabled, false)
	if err := dir.SetSMTPAccess(ctx, "jan@firma.cz", true); err != nil {
		t.Fatal(err)
	}
	clock.Advance(15 * time.Minute)
	check(t, a, "jan@firma.cz", "new password", OK, false)
}

// TestDirectoryChangesDropCache: a password change, a hash change (same
// password, new hash, as an import brings), a disable and a removal made
// through another connection to the database reach the cache through the
// change log and drop the account's entries, and only that account's.
func TestDirectoryChangesDropCache(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	serverDir, err := directory.NewSQLite(ctx, testutil.OpenDBIn(t, dataDir))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := directory.NewSQLite(ctx, testutil.OpenDBIn(t, dataDir))
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cli.AddDomain(ctx, "firma.cz"))
	must(cli.AddAccount(ctx, "jan@firma.cz", testHash))
	must(cli.AddAccount(ctx, "eva@firma.cz", testHash))
	a, _ := newTestAuth(t, serverDir, Config{})
	w, err := directory.NewWatcher(ctx, serverDir, directory.WatcherConfig{}, slog.New(slog.DiscardHandler))
	must(err)
	w.Subscribe(a.DirectoryChanged)

	fill := func(t *testing.T) {
		t.Helper()
		for _, l := range []string{"jan@firma.cz", "Jan@Firma.cz", "eva@firma.cz"} {
			a.Check(ctx, key1, l, testPassword)
			a.Check(ctx, key1, l, "wrong")
		}
		if s := a.Stats(); s.Right != 3 || s.Wrong != 3 {
			t.Fatalf("filled: %+v, want 3 and 3", s)
		}
	}
	for _, change := range []struct {
		name string
		do   func() error
	}{
		{"password change", func() error { return cli.SetPassword(ctx, "jan@firma.cz", newHash) }},
		{"hash change", func() error { return cli.SetPassword(ctx, "jan@firma.cz", testHash2) }},
		{"disable", func() error { return cli.SetSMTPAccess(ctx, "jan@firma.cz", false) }},
		{"identity", func() error { return cli.AddIdentity(ctx, "eva@firma.cz", "eva@seznam.cz") }},
		{"removal", func() error { return cli.RemoveAccount(ctx, "jan@firma.cz") }},
	} {
		t.Run(change.name, func(t *testing.T) {
			fill(t)
			must(change.do())
			must(w.Sync(ctx))
			want := Stats{Right: 1, Wrong: 1} // eva's
			if change.name == "identity" {
				want = Stats{Right: 3, Wrong: 3}
			}
			if s := a.Stats(); s != want {
				t.Fatalf("after the %s: %+v, want %+v", change.name, s, want)
			}
		})
		if change.name != "removal" {
			// Back to where the next change starts from.
			must(cli.SetPassword(ctx, "jan@firma.cz", testHash))
			must(cli.SetSMTPAccess(ctx, "jan@firma.cz", true))
			must(w.Sync(ctx))
		}
	}
	w.Subscribe(func(directory.Change) {})
	must(cli.PruneChanges(ctx, time.Now().Add(time.Hour), 0))
	must(cli.SetPassword(ctx, "eva@firma.cz", testHash))
	must(cli.PruneChanges(ctx, time.Now().Add(time.Hour), 0))
	must(w.Sync(ctx))
	if s := a.Stats(); s != (Stats{}) {
		t.Fatalf("after the change log was lost: %+v, want empty", s)
	}
}

// TestCacheBounded: random wrong passwords, for one account or for many,
// never grow the cache past its bounds, and never evict right answers.
func TestCacheBounded(t *testing.T) {
	ctx := context.Background()
	dir := testDir(t)
	for i := range 40 {
		if err := dir.AddAccount(ctx, fmt.Sprintf("u%d@firma.cz", i), testHash); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := newTestAuth(t, dir, Config{CacheEntries: 40})
	check(t, a, "jan@firma.cz", testPassword, OK, false)
	for i := range 50 {
		a.Check(ctx, key1, "jan@firma.cz", fmt.Sprintf("guess %d", i))
	}
	if s := a.Stats(); s.Wrong != perAccount || s.Right != 1 {
		t.Fatalf("after 50 wrong passwords for one account: %+v, want %d wrong and 1 right", s, perAccount)
	}
	for i := range 40 {
		for j := range 3 {
			a.Check(ctx, key1, fmt.Sprintf("u%d@firma.cz", i), fmt.Sprintf("guess %d", j))
		}
	}
	if s := a.Stats(); s.Wrong != 40/4 || s.Right != 1 {
		t.Fatalf("after wrong passwords for 40 accounts: %+v, want 10 wrong and 1 right", s)
	}
	check(t, a, "jan@firma.cz", testPassword, OK, true)
	for i := range 40 {
		a.Check(ctx, key1, fmt.Sprintf("u%d@firma.cz", i), testPassword)
	}
	if s := a.Stats(); s.Right != 40 {
		t.Fatalf("after 41 right logins with room for 40: %+v", s)
	}
}

// TestUnknownLoginCostsAHash: an unknown login is checked against a hash
// of the configured scheme, on the pool, so it costs what a wrong password
// costs and is refused Busy like one when the pool is full.
func TestUnknownLoginCostsAHash(t *testing.T) {
	a, c := newTestAuth(t, testDir(t), Config{Workers: 1, Queue: 1, Wait: time.Minute})
	check(t, a, "nikdo@firma.cz", testPassword, UnknownLogin, false)
	check(t, a, "nikdo@firma.cz", testPassword, UnknownLogin, false)
	c.mu.Lock()
	n := c.hashes[a.dummy]
	c.mu.Unlock()
	if n != 2 {
		t.Fatalf("the dummy hash ran %d times, want 2 (hashes: %v)", n, c.hashes)
	}
	if password.NeedsRehash(a.dummy, password.Argon2id) {
		t.Fatal("the dummy hash is not argon2id, the default scheme")
	}
	if b, err := New(Config{Directory: testDir(t), Scheme: password.Bcrypt}); err != nil || password.NeedsRehash(b.dummy, password.Bcrypt) {
		t.Fatalf("with scheme bcrypt the dummy hash is not bcrypt (%v)", err)
	}
	if _, err := New(Config{Directory: testDir(t), Scheme: "md5"}); err == nil {
		t.Fatal("New accepted an unknown scheme")
	}

	// With the only worker and the only queue place taken, an unknown
	// login and a wrong password from other clients are both Busy.
	release := fill(t, a.pool, 2)
	defer release()
	other := netip.MustParsePrefix("198.51.100.9/32")
	for _, login := range []string{"nikdo@firma.cz", "jan@firma.cz"} {
		if r := a.Check(context.Background(), other, login, "wrong"); r.Verdict != Busy {
			t.Fatalf("%s with the pool full: %v, want busy", login, r.Verdict)
		}
	}
	// A cached login does not wait behind the pool.
	release()
	check(t, a, "jan@firma.cz", testPassword, OK, false)
	release2 := fill(t, a.pool, 2)
	defer release2()
	check(t, a, "jan@firma.cz", testPassword, OK, true)
}

// fill occupies n places of p (workers first, then the queue) with runs
// that block until release is called, from distinct keys, and returns once
// they hold their places.
func fill(t *testing.T, p *Pool, n int) (release func()) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		k := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 32)
		go func() {
			defer wg.Done()
			p.Do(context.Background(), k, func() { <-stop })
		}()
	}
	testutil.WaitFor(t, 30*time.Second, "the runs to take their places", func() bool { return len(p.admitted) == n })
	var once sync.Once
	return func() {
		once.Do(func() { close(stop); wg.Wait() })
	}
}

// TestPoolBoundsConcurrency: however many checks arrive at once, no more
// than Workers run together, and all finish.
func TestPoolBoundsConcurrency(t *testing.T) {
	const workers = 3
	p := NewPool(workers, 100, time.Minute)
	var running, peak, done atomic.Int32
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		k := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)
		go func() {
			defer wg.Done()
			err := p.Do(context.Background(), k, func() {
				n := running.Add(1)
				for {
					m := peak.Load()
					if n <= m || peak.CompareAndSwap(m, n) {
						break
					}
				}
				<-gate
				running.Add(-1)
			})
			if err != nil {
				t.Error(err)
			}
			done.Add(1)
		}()
	}
	testutil.WaitFor(t, 30*time.Second, "all workers busy and all attempts queued", func() bool { return running.Load() == workers && len(p.admitted) == 60 })
	close(gate)
	wg.Wait()
	if peak.Load() != workers || done.Load() != 60 {
		t.Fatalf("peak %d running (want %d), %d done (want 60)", peak.Load(), workers, done.Load())
	}
}

// TestPoolOneHashPerKey: many attempts from one client key run one at a
// time, even with idle workers, and take one place in the queue; another
// key runs meanwhile.
func TestPoolOneHashPerKey(t *testing.T) {
	p := NewPool(4, 2, time.Minute)
	var running, peak atomic.Int32
	gate := make(chan struct{})
	var wg sync.WaitGroup
	run := func(k netip.Prefix, count bool) {
		defer wg.Done()
		err := p.Do(context.Background(), k, func() {
			if count {
				n := running.Add(1)
				if n > peak.Load() {
					peak.Store(n)
				}
			}
			<-gate
			if count {
				running.Add(-1)
			}
		})
		if err != nil {
			t.Error(err)
		}
	}
	for range 10 {
		wg.Add(1)
		go run(key1, true)
	}
	testutil.WaitFor(t, 30*time.Second, "the key's first run", func() bool { return running.Load() == 1 })
	// The queue (2 places beyond the 4 workers) still has room for others.
	for i := range 5 {
		wg.Add(1)
		go run(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 32), false)
	}
	testutil.WaitFor(t, 30*time.Second, "the other keys to queue", func() bool { return len(p.admitted) == 6 })
	for range 10 {
		gate <- struct{}{}
	}
	close(gate)
	wg.Wait()
	if peak.Load() != 1 {
		t.Fatalf("one key ran %d hashes at once, want 1", peak.Load())
	}
}

// TestPoolBusy: a full queue refuses at once; an attempt waiting for a
// worker, or for its key's turn, past the deadline is refused; neither runs.
func TestPoolBusy(t *testing.T) {
	p := NewPool(1, 1, 50*time.Millisecond)
	release := fill(t, p, 1)
	defer release()
	ran := false
	if err := p.Do(context.Background(), netip.MustParsePrefix("10.2.0.1/32"), func() { ran = true }); err != ErrBusy || ran {
		t.Fatalf("waiting for a worker past the deadline: %v, ran %v; want ErrBusy", err, ran)
	}
	// Queue full: the worker busy, its one queue place taken by a waiter.
	p2 := NewPool(1, 1, time.Minute)
	release2 := fill(t, p2, 2)
	defer release2()
	if err := p2.Do(context.Background(), netip.MustParsePrefix("10.2.0.2/32"), func() { ran = true }); err != ErrBusy || ran {
		t.Fatalf("queue full: %v, ran %v; want ErrBusy", err, ran)
	}
	// The key's turn: its own earlier attempt is running.
	p3 := NewPool(2, 1, 50*time.Millisecond)
	stop := make(chan struct{})
	started := make(chan struct{})
	go p3.Do(context.Background(), key1, func() { close(started); <-stop })
	<-started
	if err := p3.Do(context.Background(), key1, func() { ran = true }); err != ErrBusy || ran {
		t.Fatalf("key's turn past the deadline: %v, ran %v; want ErrBusy", err, ran)
	}
	close(stop)
}

// TestPoolBoundsArgon2idMemory: a flood of concurrent argon2id checks (each
// 19 MiB) runs at most Workers hashes at once, so hashing memory is bounded
// by the pool, not by the number of connections. The real hash runs; the
// injected function only counts.
func TestPoolBoundsArgon2idMemory(t *testing.T) {
	ctx := context.Background()
	hash, err := password.Hash(password.Argon2id, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	dir := testDir(t)
	if err := dir.SetPassword(ctx, "jan@firma.cz", hash); err != nil {
		t.Fatal(err)
	}
	var running, peak, hashes atomic.Int32
	const workers = 2
	a, err := New(Config{
		Directory: dir,
		Verify: func(h, pw string) (bool, error) {
			n := running.Add(1)
			defer running.Add(-1)
			hashes.Add(1)
			for {
				m := peak.Load()
				if n <= m || peak.CompareAndSwap(m, n) {
					break
				}
			}
			return password.Verify(h, pw)
		},
		Workers: workers, Queue: 100, Wait: 10 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	const clients = 24
	var wg sync.WaitGroup
	verdicts := make([]Verdict, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 3, 0, byte(i)}), 32)
			login := "jan@firma.cz"
			if i%3 == 0 {
				login = "nikdo@firma.cz"
			}
			verdicts[i] = a.Check(ctx, k, login, fmt.Sprintf("wrong %d", i)).Verdict
		}()
	}
	wg.Wait()
	for i, v := range verdicts {
		if v != WrongPassword && v != UnknownLogin {
			t.Fatalf("client %d: %v", i, v)
		}
	}
	if hashes.Load() != clients || peak.Load() > workers {
		t.Fatalf("%d hashes with at most %d at once; want %d with at most %d", hashes.Load(), peak.Load(), clients, workers)
	}
}

// TestPoolKeepsAWorkerForCleanClients: clients with failed logins share all
// workers but one, so while they keep every other worker busy, a client
// without failures is still served at once (SPEC R16a).
func TestPoolKeepsAWorkerForCleanClients(t *testing.T) {
	p := NewPool(3, 20, time.Minute)
	var running atomic.Int32
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 3, 0, byte(i)}), 32)
			p.DoClean(context.Background(), k, false, func() { running.Add(1); <-gate; running.Add(-1) })
		}()
	}
	testutil.WaitFor(t, 30*time.Second, "two failing clients hashing", func() bool { return running.Load() == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := running.Load(); n != 2 {
		t.Fatalf("failing clients run %d hashes on 3 workers, want 2", n)
	}
	done := make(chan error)
	go func() { done <- p.DoClean(context.Background(), key1, true, func() {}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a clean client waited behind the failing ones")
	}
	close(gate)
	wg.Wait()
}

// TestHeldAndForget: a held account (SPEC R20) is refused as disabled
// whatever the password, even with its right answer cached, and Forget
// drops that answer at once, so a release needs a real check again.
func TestHeldAndForget(t *testing.T) {
	ctx := context.Background()
	dir := testDir(t)
	a, c := newTestAuth(t, dir, Config{})
	check(t, a, "jan@firma.cz", testPassword, OK, false)
	check(t, a, "jan@firma.cz", testPassword, OK, true)
	if err := dir.SetHeld(ctx, "jan@firma.cz", true, "volume rise"); err != nil {
		t.Fatal(err)
	}
	check(t, a, "jan@firma.cz", testPassword, Disabled, false)
	check(t, a, "jan@firma.cz", "wrong", Disabled, false)
	if n := a.Forget("jan@firma.cz"); n != 1 {
		t.Fatalf("Forget dropped %d entries, want 1", n)
	}
	if err := dir.SetHeld(ctx, "jan@firma.cz", false, ""); err != nil {
		t.Fatal(err)
	}
	before := c.total()
	check(t, a, "jan@firma.cz", testPassword, OK, false)
	if c.total() != before+1 {
		t.Fatal("after Forget the password was not hashed again")
	}
}

// guardGate is the gate of one attempt under a real brute-force guard, as
// the SMTP side makes it: Admit takes a place, Open only looks.
type guardGate struct {
	g  *guard.Guard
	ip netip.Addr
	a  *guard.Attempt
}

func (gg *guardGate) Admit() bool {
	var ok bool
	gg.a, ok = gg.g.Begin(gg.ip, "test")
	return ok
}

func (gg *guardGate) Open() bool { return gg.g.Open(gg.ip) }

// TestCachedAnswerUnderGuard: an answer from the cache hashes nothing and
// takes no place, but once the client's key is at its limit (SPEC R11) it
// is refused like a check that needs a hash, right password or wrong: a
// cache lookup tests a password too.
func TestCachedAnswerUnderGuard(t *testing.T) {
	ctx := context.Background()
	g, err := guard.New(ctx, guard.Config{MaxFailures: 3}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("192.0.2.1")
	a, c := newTestAuth(t, testDir(t), Config{})
	try := func(pw string) (Result, *guardGate) {
		gg := &guardGate{g: g, ip: ip}
		return a.CheckAdmitted(ctx, g.Key(ip), "jan@firma.cz", pw, gg), gg
	}
	for _, pw := range []string{testPassword, "wrong"} {
		r, gg := try(pw)
		if r.Cached || gg.a == nil {
			t.Fatalf("first check of %q: cached %v, place %v", pw, r.Cached, gg.a)
		}
		gg.a.Succeed()
	}
	// Two attempts in flight: one place left, and a cached answer takes
	// none.
	var held []*guard.Attempt
	for range 2 {
		at, _ := g.Begin(ip, "held")
		held = append(held, at)
	}
	if r, gg := try(testPassword); r.Verdict != OK || !r.Cached || gg.a != nil {
		t.Fatalf("cached login inside the limit: %v cached=%v place %v", r.Verdict, r.Cached, gg.a)
	}
	if s := g.Stats(); s.InFlight != 2 {
		t.Fatalf("%d attempts in flight, want 2", s.InFlight)
	}
	last, _ := g.Begin(ip, "last")
	for _, pw := range []string{testPassword, "wrong"} {
		if r, _ := try(pw); r.Verdict != Refused || r.Cached {
			t.Fatalf("cached %q at the limit: %v cached=%v", pw, r.Verdict, r.Cached)
		}
	}
	for _, at := range append(held, last) {
		at.Fail()
	}
	if r, _ := try(testPassword); r.Verdict != Refused {
		t.Fatalf("cached login of a blocked key: %v", r.Verdict)
	}
	if n := c.total(); n != 2 {
		t.Fatalf("%d hashes, want the 2 first checks", n)
	}
}
