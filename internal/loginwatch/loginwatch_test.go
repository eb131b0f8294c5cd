package loginwatch

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

var start = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

// newWatch returns a Watch over a SQLite store in a fresh database, on a
// clock the test moves.
func newWatch(t testing.TB, cfg Config) (*Watch, *SQLite, *testutil.Clock) {
	t.Helper()
	st, err := NewSQLite(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(start)
	cfg.Now = clock.Now
	return New(cfg, st), st, clock
}

// ipN is the n-th client, each in a /24 of its own.
func ipN(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 7}) }

const jan = "jan@firma.cz"

// TestThresholdEdge: MaxFailures-1 wrong passwords from as many networks
// leave the login open; the next one puts it under attack; from then on a
// network with an earlier success goes on to the password check, a new one
// is refused with the reason support sees.
func TestThresholdEdge(t *testing.T) {
	ctx := context.Background()
	w, _, clock := newWatch(t, Config{MaxFailures: 5})
	office := netip.MustParseAddr("192.0.2.10")
	w.Succeeded(ctx, jan, office)
	for i := range 4 {
		w.Failed(ctx, jan, ipN(i))
		clock.Advance(time.Minute)
	}
	if d := w.Check(ctx, jan, ipN(100)); d.Refuse {
		t.Fatalf("after 4 failures: refused (%s)", d.Reason)
	}
	w.Failed(ctx, jan, ipN(4))
	since := clock.Now()
	if d := w.Check(ctx, jan, netip.MustParseAddr("192.0.2.200")); d.Refuse {
		t.Fatalf("the office's /24 was refused: %s", d.Reason)
	}
	d := w.Check(ctx, jan, ipN(100))
	want := "login jan@firma.cz under attack from 6 IPs since 2025-06-01 08:04 UTC; this network 10.0.100.0/24 has no earlier success"
	if !d.Refuse || d.Reason != want {
		t.Fatalf("new network: %+v, want refused with %q", d, want)
	}
	l, ok := w.Get(jan)
	if !ok || !l.UnderAttack || !l.Since.Equal(since) || l.Refused != 1 || l.Failures != 6 || l.IPs != 6 {
		t.Fatalf("Get = %+v, %v", l, ok)
	}
	if got := w.List(false); len(got) != 1 || got[0].Login != jan {
		t.Fatalf("List = %+v", got)
	}
	if d := w.Check(ctx, "eva@jina.cz", ipN(100)); d.Refuse {
		t.Fatal("another login was refused")
	}
}

// TestWindowSlides: failures older than the window do not count, so a
// slow trickle never puts a login under attack.
func TestWindowSlides(t *testing.T) {
	ctx := context.Background()
	w, _, clock := newWatch(t, Config{MaxFailures: 3, Window: time.Hour})
	for i := range 10 {
		w.Failed(ctx, jan, ipN(i))
		clock.Advance(31 * time.Minute)
	}
	if l, _ := w.Get(jan); l.UnderAttack {
		t.Fatalf("two failures per hour: %+v", l)
	}
	w.Failed(ctx, jan, ipN(20))
	w.Failed(ctx, jan, ipN(21))
	if l, _ := w.Get(jan); !l.UnderAttack {
		t.Fatalf("three within the hour: %+v", l)
	}
}

// TestAttackEnds: the state ends AttackFor after the last failure that
// kept it, and refusals keep it while the attack goes on.
func TestAttackEnds(t *testing.T) {
	ctx := context.Background()
	w, _, clock := newWatch(t, Config{MaxFailures: 3, Window: time.Hour, AttackFor: time.Hour})
	for i := range 3 {
		w.Failed(ctx, jan, ipN(i))
	}
	// The botnet goes on: each refusal counts, and three in an hour
	// extend the state.
	for i := range 6 {
		clock.Advance(20 * time.Minute)
		if d := w.Check(ctx, jan, ipN(10+i)); !d.Refuse {
			t.Fatalf("refusal %d: not refused", i)
		}
	}
	l, _ := w.Get(jan)
	if !l.UnderAttack || !l.Until.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("while refusals go on: %+v", l)
	}
	clock.Set(l.Until.Add(-time.Second))
	if d := w.Check(ctx, jan, ipN(50)); !d.Refuse {
		t.Fatal("a second before the end: not refused")
	}
	l, _ = w.Get(jan)
	clock.Set(l.Until)
	if d := w.Check(ctx, jan, ipN(51)); d.Refuse {
		t.Fatalf("after the state ended: refused (%s)", d.Reason)
	}
	clock.Advance(time.Hour)
	if got := w.List(true); len(got) != 0 {
		t.Fatalf("a quiet login is still held: %+v", got)
	}
}

// TestTrustedFailuresDoNotCount: the owner mistyping from a network they
// used cannot put their own login under attack.
func TestTrustedFailuresDoNotCount(t *testing.T) {
	ctx := context.Background()
	w, _, _ := newWatch(t, Config{MaxFailures: 3})
	home := netip.MustParseAddr("2001:db8:1:2::5")
	w.Succeeded(ctx, jan, home)
	for range 10 {
		w.Failed(ctx, jan, netip.MustParseAddr("2001:db8:1:ffff::9"))
	}
	if l, ok := w.Get(jan); ok {
		t.Fatalf("failures from the trusted /48 counted: %+v", l)
	}
	if s := w.Stats(); s.TrustedFailures != 10 || s.Failures != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTrustExpires: a success older than TrustFor no longer lets a network
// in during an attack.
func TestTrustExpires(t *testing.T) {
	ctx := context.Background()
	w, _, clock := newWatch(t, Config{MaxFailures: 2})
	office := netip.MustParseAddr("192.0.2.10")
	w.Succeeded(ctx, jan, office)
	clock.Advance(30*24*time.Hour + time.Minute)
	w.Failed(ctx, jan, ipN(1))
	w.Failed(ctx, jan, ipN(2))
	if d := w.Check(ctx, jan, office); !d.Refuse {
		t.Fatal("a network last used 30 days ago is still trusted")
	}
	w.Clear(jan)
	if d := w.Check(ctx, jan, ipN(3)); d.Refuse {
		t.Fatal("refused after Clear")
	}
	if s := w.Stats(); s.Cleared != 1 || s.Attacks != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// failingStore is a Store whose database is gone.
type failingStore struct{ SQLite }

var errGone = errors.New("database is gone")

func (failingStore) Trusted(context.Context, string, netip.Prefix, time.Time) (bool, error) {
	return false, errGone
}

// TestStoreErrorLetsAttemptsThrough: when the history cannot be read, an
// attempt goes on to the password check rather than refusing the owner.
func TestStoreErrorLetsAttemptsThrough(t *testing.T) {
	ctx := context.Background()
	clock := testutil.NewClock(start)
	w := New(Config{MaxFailures: 2, Now: clock.Now}, &failingStore{})
	w.Failed(ctx, jan, ipN(1))
	w.Failed(ctx, jan, ipN(2))
	if l, _ := w.Get(jan); !l.UnderAttack {
		t.Fatalf("not under attack: %+v", l)
	}
	if d := w.Check(ctx, jan, ipN(3)); d.Refuse {
		t.Fatal("refused although the history could not be read")
	}
	if s := w.Stats(); s.StoreErrors == 0 {
		t.Fatal("store errors not counted")
	}
}

// noHistory is a Store without successes, for tests of the memory bound
// that make 200 000 failures: the SQLite read of each would only slow
// them down.
type noHistory struct{ SQLite }

func (*noHistory) Trusted(context.Context, string, netip.Prefix, time.Time) (bool, error) {
	return false, nil
}

// TestManyLogins: a botnet trying 200 times as many logins as the table
// holds leaves at most MaxLogins in memory, and a login under attack is
// never the one forgotten.
func TestManyLogins(t *testing.T) {
	ctx := context.Background()
	clock := testutil.NewClock(start)
	w := New(Config{MaxFailures: 3, MaxLogins: 1000, Now: clock.Now}, &noHistory{})
	for i := range 3 {
		w.Failed(ctx, jan, ipN(i))
	}
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	for i := range n {
		w.Failed(ctx, fmt.Sprintf("u%d@firma.cz", i), ipN(i))
	}
	s := w.Stats()
	if s.Tracked > 1000 {
		t.Fatalf("%d logins held, want at most 1000", s.Tracked)
	}
	if l, _ := w.Get(jan); !l.UnderAttack {
		t.Fatalf("the login under attack was forgotten: %+v", l)
	}
	if s.Evicted == 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestHistoryBounded: a login keeps at most MaxNetworks networks, the
// latest; successes older than TrustFor are pruned.
func TestHistoryBounded(t *testing.T) {
	ctx := context.Background()
	w, st, clock := newWatch(t, Config{MaxNetworks: 3})
	for i := range 10 {
		w.Succeeded(ctx, jan, ipN(i))
		clock.Advance(time.Minute)
	}
	nets, err := w.Networks(ctx, jan)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range nets {
		got = append(got, n.Prefix.String())
	}
	if strings.Join(got, " ") != "10.0.9.0/24 10.0.8.0/24 10.0.7.0/24" {
		t.Fatalf("networks %v", got)
	}
	clock.Advance(31 * 24 * time.Hour)
	if err := w.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if nets, _ := st.Networks(ctx, jan, time.Time{}); len(nets) != 0 {
		t.Fatalf("after 31 days: %v", nets)
	}
}

// TestSuccessWritesRarely: a client that logs in for every message writes
// its network once an hour, and the write keeps its first success.
func TestSuccessWritesRarely(t *testing.T) {
	ctx := context.Background()
	w, st, clock := newWatch(t, Config{})
	ip := netip.MustParseAddr("192.0.2.10")
	w.Succeeded(ctx, jan, ip)
	first := clock.Now()
	clock.Advance(30 * time.Minute)
	w.Succeeded(ctx, jan, ip)
	nets, _ := st.Networks(ctx, jan, time.Time{})
	if len(nets) != 1 || !nets[0].Last.Equal(first) {
		t.Fatalf("after 30 minutes: %+v", nets)
	}
	clock.Advance(31 * time.Minute)
	w.Succeeded(ctx, jan, ip)
	nets, _ = st.Networks(ctx, jan, time.Time{})
	if len(nets) != 1 || !nets[0].First.Equal(first) || !nets[0].Last.Equal(clock.Now()) {
		t.Fatalf("after 61 minutes: %+v", nets)
	}
}

// BenchmarkFailed is the cost of counting one wrong password.
func BenchmarkFailed(b *testing.B) {
	ctx := context.Background()
	w, _, _ := newWatch(b, Config{})
	i := 0
	for b.Loop() {
		w.Failed(ctx, jan, ipN(i%5000))
		i++
	}
}

// BenchmarkCheckQuiet is the cost on every AUTH of a login not under
// attack.
func BenchmarkCheckQuiet(b *testing.B) {
	ctx := context.Background()
	w, _, _ := newWatch(b, Config{})
	ip := netip.MustParseAddr("192.0.2.10")
	for b.Loop() {
		w.Check(ctx, jan, ip)
	}
}
