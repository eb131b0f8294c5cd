package loginwatch

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"submitd/internal/redisconn"
	"submitd/internal/testutil"
)

// stores is what both backends implement.
type stores interface {
	Store
	StateStore
}

// eachStore runs f on a fresh SQLite store and on a fresh Redis store.
func eachStore(t *testing.T, f func(t *testing.T, st stores)) {
	t.Run("SQLite", func(t *testing.T) {
		st, err := NewSQLite(context.Background(), testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		f(t, st)
	})
	t.Run("Redis", func(t *testing.T) {
		_, st := startRedis(t)
		f(t, st)
	})
}

// startRedis starts a Redis server for the test and returns it and the
// stores on it.
func startRedis(t *testing.T) (*testutil.Redis, *Redis) {
	t.Helper()
	rs := testutil.StartRedis(t)
	c, err := redisconn.Open(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return rs, NewRedis(c)
}

// TestStores: the history of successes and the saved logins behave the
// same in SQLite and Redis.
func TestStores(t *testing.T) {
	eachStore(t, func(t *testing.T, st stores) {
		ctx := context.Background()
		net := func(i int) netip.Prefix { return netip.PrefixFrom(ipN(i), 24).Masked() }
		for i := range 5 {
			if err := st.Record(ctx, jan, net(i), start.Add(time.Duration(i)*time.Minute), 3, start.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Record(ctx, jan, net(4), start.Add(time.Hour), 3, start); err != nil {
			t.Fatal(err)
		}
		nets, err := st.Networks(ctx, jan, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nets) != 3 || nets[0].Prefix != net(4) || !nets[0].First.Equal(start.Add(4*time.Minute)) ||
			!nets[0].Last.Equal(start.Add(time.Hour)) || nets[1].Prefix != net(3) || nets[2].Prefix != net(2) {
			t.Fatalf("networks %+v", nets)
		}
		if ok, err := st.Trusted(ctx, jan, net(3), start.Add(3*time.Minute)); err != nil || !ok {
			t.Fatalf("Trusted(net 3) = %v, %v", ok, err)
		}
		if ok, err := st.Trusted(ctx, jan, net(3), start.Add(4*time.Minute)); err != nil || ok {
			t.Fatalf("Trusted(net 3) after its success = %v, %v", ok, err)
		}
		if ok, err := st.Trusted(ctx, jan, net(0), time.Time{}); err != nil || ok {
			t.Fatalf("Trusted(a network beyond the bound) = %v, %v", ok, err)
		}

		eva := Saved{Login: "eva@firma.cz", Failures: []time.Time{start}, Total: 1, First: start, Last: start, Expires: start.Add(time.Hour)}
		sv := Saved{Login: jan, Failures: []time.Time{start, start.Add(time.Minute)}, Total: 7, IPs: []uint32{1, 2},
			First: start, Last: start.Add(time.Minute), Since: start.Add(time.Minute), Until: start.Add(2 * time.Hour),
			Refused: 3, Expires: start.Add(2 * time.Hour)}
		if err := st.SaveLogins(ctx, start, []Saved{eva, sv}, nil); err != nil {
			t.Fatal(err)
		}
		got, err := st.LoadLogins(ctx, start.Add(90*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Login != jan || got[0].Total != 7 || len(got[0].Failures) != 2 || !got[0].Until.Equal(sv.Until) ||
			got[0].Refused != 3 || len(got[0].IPs) != 2 || !got[0].Expires.Equal(sv.Expires) {
			t.Fatalf("loaded %+v, want only %+v (eva's expired)", got, sv)
		}
		if err := st.SaveLogins(ctx, start, nil, []string{jan}); err != nil {
			t.Fatal(err)
		}
		if got, err := st.LoadLogins(ctx, start); err != nil || len(got) != 0 {
			t.Fatalf("after drop: %+v, %v", got, err)
		}
	})
}

// TestStoresForgetQuiet: a saved login whose drop never came (a process
// stopped before its last flush) is forgotten by the next save after it went
// quiet, not only when a process starts, so a long run keeps the stored
// logins bounded.
func TestStoresForgetQuiet(t *testing.T) {
	eachStore(t, func(t *testing.T, st stores) {
		ctx := context.Background()
		eva := Saved{Login: "eva@firma.cz", Failures: []time.Time{start}, Total: 1, First: start, Last: start, Expires: start.Add(time.Hour)}
		if err := st.SaveLogins(ctx, start, []Saved{eva}, nil); err != nil {
			t.Fatal(err)
		}
		later := start.Add(2 * time.Hour)
		sv := Saved{Login: jan, Failures: []time.Time{later}, Total: 1, First: later, Last: later, Expires: later.Add(time.Hour)}
		if err := st.SaveLogins(ctx, later, []Saved{sv}, nil); err != nil {
			t.Fatal(err)
		}
		if n := storedLogins(t, st); n != 1 {
			t.Fatalf("%d logins stored, want only %s (eva's went quiet)", n, jan)
		}
	})
}

// storedLogins counts the logins st holds, quiet or not.
func storedLogins(t *testing.T, st stores) int {
	t.Helper()
	ctx := context.Background()
	switch s := st.(type) {
	case *SQLite:
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM login_failures`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	case *Redis:
		n, err := s.c.HLen(ctx, redisLogins).Result()
		if err != nil {
			t.Fatal(err)
		}
		z, err := s.c.ZCard(ctx, redisExpires).Result()
		if err != nil || z != n {
			t.Fatalf("%d logins but %d expiries (%v)", n, z, err)
		}
		return int(n)
	}
	t.Fatalf("unknown store %T", st)
	return 0
}

// TestRestore: a login under attack is still under attack for a watch
// that starts on the same store, with its failures, IPs and refusals; a
// login cleared since is not; failures below the threshold carry over
// and the next ones complete it.
func TestRestore(t *testing.T) {
	eachStore(t, func(t *testing.T, st stores) {
		ctx := context.Background()
		clock := testutil.NewClock(start)
		cfg := Config{MaxFailures: 5, Now: clock.Now}
		w := New(cfg, st)
		if err := w.Restore(ctx, st); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			w.Failed(ctx, jan, ipN(i))
		}
		w.Failed(ctx, "eva@firma.cz", ipN(1))
		w.Failed(ctx, "eva@firma.cz", ipN(2))
		for i := range 5 {
			w.Failed(ctx, "petr@firma.cz", ipN(i))
		}
		w.Clear("petr@firma.cz")
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}

		clock.Advance(time.Minute)
		w2 := New(cfg, st)
		if err := w2.Restore(ctx, st); err != nil {
			t.Fatal(err)
		}
		if d := w2.Check(ctx, jan, ipN(100)); !d.Refuse {
			t.Fatal("the attack state did not survive")
		}
		l, ok := w2.Get(jan)
		if !ok || l.Failures != 6 || l.IPs != 6 || l.Refused != 1 || !l.Since.Equal(start) {
			t.Fatalf("restored %+v", l)
		}
		if _, ok := w2.Get("petr@firma.cz"); ok {
			t.Fatal("a cleared login came back")
		}
		// Eva's two failures count: three more make five, from one IP
		// already counted.
		w2.Failed(ctx, "eva@firma.cz", ipN(2))
		w2.Failed(ctx, "eva@firma.cz", ipN(3))
		if d := w2.Check(ctx, "eva@firma.cz", ipN(100)); d.Refuse {
			t.Fatal("under attack at 4 failures")
		}
		w2.Failed(ctx, "eva@firma.cz", ipN(4))
		l, _ = w2.Get("eva@firma.cz")
		if !l.UnderAttack || l.IPs != 4 {
			t.Fatalf("eva after 5 failures: %+v", l)
		}
	})
}

// TestRedisMerges: two nodes saving one login in Redis each keep what the
// other counted: the failures of both, once each, their IPs and the later
// end of the attack; a state of an episode that ended before is dropped.
func TestRedisMerges(t *testing.T) {
	_, st := startRedis(t)
	ctx := context.Background()
	m := func(i int) time.Time { return start.Add(time.Duration(i) * time.Minute) }
	a := Saved{Login: jan, Failures: []time.Time{m(0), m(2)}, Total: 2, IPs: []uint32{1, 2}, First: m(0), Last: m(2), Expires: m(62)}
	b := Saved{Login: jan, Failures: []time.Time{m(1), m(2), m(3)}, Total: 3, IPs: []uint32{2, 3}, First: m(1), Last: m(3),
		Since: m(3), Until: m(63), Expires: m(63)}
	old := Saved{Login: "eva@firma.cz", Failures: []time.Time{start.Add(-3 * time.Hour)}, Total: 1, First: start.Add(-3 * time.Hour),
		Last: start.Add(-3 * time.Hour), Expires: start.Add(-2 * time.Hour)}
	if err := st.SaveLogins(ctx, start, []Saved{a, old}, nil); err != nil {
		t.Fatal(err)
	}
	eva := Saved{Login: "eva@firma.cz", Failures: []time.Time{m(5)}, Total: 1, First: m(5), Last: m(5), Expires: m(65)}
	if err := st.SaveLogins(ctx, start, []Saved{b, eva}, nil); err != nil {
		t.Fatal(err)
	}
	got, err := st.LoadLogins(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]Saved{}
	for _, s := range got {
		by[s.Login] = s
	}
	j := by[jan]
	if len(j.Failures) != 4 || j.Total != 4 || len(j.IPs) != 3 || !j.First.Equal(m(0)) || !j.Last.Equal(m(3)) ||
		!j.Until.Equal(m(63)) || !j.Since.Equal(m(3)) || !j.Expires.Equal(m(63)) {
		t.Fatalf("merged %+v", j)
	}
	if e := by["eva@firma.cz"]; e.Total != 1 || !e.First.Equal(m(5)) {
		t.Fatalf("eva %+v, want only the new episode", e)
	}
}

// TestRestoreWithoutRedis: a node that starts while the shared Redis is
// away counts afresh, and once Redis is back what it counts is saved there,
// so its next restart (or another node's) still finds the attack.
func TestRestoreWithoutRedis(t *testing.T) {
	rs, st := startRedis(t)
	ctx := context.Background()
	clock := testutil.NewClock(start)
	cfg := Config{MaxFailures: 3, Now: clock.Now}
	rs.Stop()
	w := New(cfg, st)
	if err := w.Restore(ctx, st); err == nil {
		t.Fatal("Restore without Redis reported no error")
	}
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		w.Failed(ctx, jan, ipN(i))
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w2 := New(cfg, st)
	if err := w2.Restore(ctx, st); err != nil {
		t.Fatal(err)
	}
	if l, ok := w2.Get(jan); !ok || !l.UnderAttack || l.Failures != 3 {
		t.Fatalf("after a restart: %+v (held %v), want the attack counted after the failed load", l, ok)
	}
}
