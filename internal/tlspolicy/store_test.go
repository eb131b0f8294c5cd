package tlspolicy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"submitd/internal/pgdb/pgtest"
	"submitd/internal/testutil"
)

// TestStore runs the same checks on SQLite and PostgreSQL.
func TestStore(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) {
		st, err := NewSQLiteStore(context.Background(), testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		testStore(t, st)
	})
	t.Run("Postgres", func(t *testing.T) {
		st, err := NewPostgresStore(context.Background(), pgtest.Pool(t))
		if err != nil {
			t.Fatal(err)
		}
		testStore(t, st)
	})
}

func testStore(t *testing.T, st Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pol := func(domain, id string, mode Mode, expires time.Duration, mx ...string) StoredPolicy {
		return StoredPolicy{Domain: domain, ID: id, Policy: Policy{Mode: mode, MaxAge: 86400 * time.Second, MX: mx},
			Fetched: t0.Add(-time.Hour), Expires: t0.Add(expires)}
	}
	load := func(now time.Time, max int) []string {
		t.Helper()
		ps, err := st.LoadPolicies(ctx, now, max)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprintf("%s %s %s %v %v %s %s", p.Domain, p.ID, p.Policy.Mode, p.Policy.MaxAge, p.Policy.MX,
				p.Fetched.UTC().Format(time.RFC3339Nano), p.Expires.UTC().Format(time.RFC3339Nano)))
		}
		return out
	}

	// Policies: the latest of a domain replaces the one before, the
	// expired are neither loaded nor kept, and LoadPolicies returns those
	// expiring last first.
	a := pol("a.test", "1", ModeEnforce, 3*time.Hour, "mx.a.test", "*.a.test")
	a.Expires = a.Expires.Add(123) // nanoseconds survive
	if err := st.SavePolicies(ctx, []StoredPolicy{
		a, pol("b.test", "1", ModeTesting, time.Hour, "mx.b.test"), pol("gone.test", "9", ModeEnforce, -time.Minute, "mx.gone.test"),
	}, t0, 10); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"a.test 1 enforce 24h0m0s [mx.a.test *.a.test] 2026-03-01T11:00:00Z 2026-03-01T15:00:00.000000123Z",
		"b.test 1 testing 24h0m0s [mx.b.test] 2026-03-01T11:00:00Z 2026-03-01T13:00:00Z",
	}
	if got := load(t0, 10); !slices.Equal(got, want) {
		t.Fatalf("loaded\n%q\nwant\n%q", got, want)
	}
	if got := load(t0, 1); !slices.Equal(got, want[:1]) {
		t.Fatalf("loaded at most 1:\n%q", got)
	}
	if err := st.SavePolicies(ctx, []StoredPolicy{pol("b.test", "2", ModeNone, 2*time.Hour)}, t0, 10); err != nil {
		t.Fatal(err)
	}
	want[1] = "b.test 2 none 24h0m0s [] 2026-03-01T11:00:00Z 2026-03-01T14:00:00Z"
	if got := load(t0, 10); !slices.Equal(got, want) {
		t.Fatalf("after replacing b.test\n%q\nwant\n%q", got, want)
	}
	// A save keeps the bound: the policies expiring first go, and those
	// expired by then.
	if err := st.SavePolicies(ctx, []StoredPolicy{pol("c.test", "1", ModeEnforce, 4*time.Hour, "mx.c.test")}, t0.Add(150*time.Minute), 2); err != nil {
		t.Fatal(err)
	}
	if got := load(t0, 10); len(got) != 2 || got[0][:7] != "c.test " || got[1][:7] != "a.test " {
		t.Fatalf("bounded to 2, with b.test expired:\n%q", got)
	}

	// Counts add up under their key, of which the policy is part;
	// TakeCounts takes the days before the one given, once.
	v1 := STSApplied(&Policy{Mode: ModeEnforce, MaxAge: time.Hour, MX: []string{"mx.a.test"}}).policyKey()
	v2 := STSApplied(&Policy{Mode: ModeEnforce, MaxAge: 2 * time.Hour, MX: []string{"mx.a.test"}}).policyKey()
	// The longest key Results keeps, with the longest names, fits
	// PostgreSQL's limit on an index entry.
	long := Applied{PolicyMX: []string{"mx.long.test"}}
	for len(long.policyKey()) <= maxPolicyKey-80 {
		long.Policy = append(long.Policy, fmt.Sprintf("3 1 1 %x", sha256.Sum256([]byte(fmt.Sprint(len(long.Policy))))))
	}
	longKey := long.policyKey() + strings.Repeat(" ", maxPolicyKey-len(long.policyKey()))
	longName := strings.Repeat(strings.Repeat("x", 62)+".", 4)[:250] + ".ab"
	cs := []Count{
		{Day: "2026-02-28", Domain: "a.test", Kind: MTASTS, Policy: v1, MXHost: "mx.a.test", N: 3},
		{Day: "2026-02-28", Domain: "a.test", Kind: MTASTS, Policy: v2, MXHost: "mx.a.test", N: 1},
		{Day: "2026-02-28", Domain: "a.test", Kind: MTASTS, Result: ResultSTSPolicyFetchError, N: 1},
		{Day: "2026-03-01", Domain: "a.test", Kind: DANE, Result: ResultValidationFailure, MXHost: "mx.a.test", ReceivingIP: "192.0.2.1", N: 2},
		{Day: "2026-03-01", Domain: "b.test", Kind: Opportunistic, MXHost: "mx.b.test", N: 1},
		{Day: "2026-03-01", Domain: longName, Kind: DANE, Policy: longKey, Result: ResultCertificateHostMismatch, MXHost: longName,
			ReceivingIP: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", N: 1},
	}
	if len(longKey) != maxPolicyKey || len(longName) != 253 {
		t.Fatalf("the long key is %d bytes, the long name %d", len(longKey), len(longName))
	}
	if err := st.AddCounts(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if err := st.AddCounts(ctx, []Count{{Day: "2026-02-28", Domain: "a.test", Kind: MTASTS, Policy: v1, MXHost: "mx.a.test", N: 4}}); err != nil {
		t.Fatal(err)
	}
	cs[0].N = 7
	sortCounts(cs)
	got, err := st.LoadCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sortCounts(got); !slices.Equal(got, cs) {
		t.Fatalf("counts\n%+v\nwant\n%+v", got, cs)
	}
	got, err = st.TakeCounts(ctx, "2026-03-01")
	if err != nil {
		t.Fatal(err)
	}
	if sortCounts(got); !slices.Equal(got, cs[:3]) {
		t.Fatalf("took\n%+v\nwant\n%+v", got, cs[:3])
	}
	if got, err = st.TakeCounts(ctx, "2026-03-01"); err != nil || len(got) != 0 {
		t.Fatalf("took again %+v, %v", got, err)
	}
	got, err = st.LoadCounts(ctx)
	if sortCounts(got); err != nil || !slices.Equal(got, cs[3:]) {
		t.Fatalf("left %+v, %v", got, err)
	}

	// Takers side by side get each count once.
	if err := st.AddCounts(ctx, []Count{{Day: "2026-03-02", Domain: "c.test", Kind: MTASTS, N: 5}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var n int64
	for range 4 {
		wg.Go(func() {
			got, err := st.TakeCounts(ctx, "2026-03-03")
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, c := range got {
				n += c.N
			}
		})
	}
	wg.Wait()
	if n != 2+1+1+5 {
		t.Errorf("takers side by side got %d sessions in all, want 9", n)
	}
}

func sortCounts(cs []Count) {
	sort.Slice(cs, func(i, j int) bool { return fmt.Sprint(cs[i]) < fmt.Sprint(cs[j]) })
}
