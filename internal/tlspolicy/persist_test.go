package tlspolicy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// sqliteStore is a Store in a fresh SQLite database.
func sqliteStore(t *testing.T) *SQLiteStore {
	t.Helper()
	st, err := NewSQLiteStore(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// restarted is a node's Results after a start on st.
func restarted(t *testing.T, st Store) *Results {
	t.Helper()
	r := NewResults()
	if err := r.Restore(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	return r
}

// take returns the reports of the days before now.
func take(t *testing.T, r *Results, now time.Time) map[string]map[string]*Report {
	t.Helper()
	days, err := r.Take(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	return days
}

// The day's results survive a restart: what was counted before it and
// saved is in the report after it, with what came since; a stop and start
// the next day sends no report a second time.
func TestResultsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	st := sqliteStore(t)
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	r := restarted(t, st)
	for range 3 {
		r.Add(day, Session{Domain: "example.test", Kind: MTASTS, MXHost: "mx.example.test", ReceivingIP: "192.0.2.1"})
	}
	r.Add(day, Session{Domain: "example.test", Kind: MTASTS, Result: ResultSTSPolicyFetchError})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	r = restarted(t, st)
	r.Add(day.Add(time.Hour), Session{Domain: "example.test", Kind: MTASTS, MXHost: "mx2.example.test", ReceivingIP: "192.0.2.2", Result: ResultCertificateExpired})
	if days := take(t, r, day.Add(2*time.Hour)); len(days) != 0 {
		t.Fatalf("reports during the day: %+v", days)
	}
	days := take(t, r, day.Add(14*time.Hour))
	rep := days["2026-03-01"]["example.test"]
	if len(days) != 1 || rep == nil || len(rep.Policies) != 1 {
		t.Fatalf("reports %+v", days)
	}
	p := rep.Policies[0]
	got := fmt.Sprintf("%s %v %d/%d %+v", p.Policy.Type, p.Policy.MXHost, p.Summary.Success, p.Summary.Failure, p.FailureDetails)
	want := "sts [mx.example.test mx2.example.test] 3/2 [{ResultType:certificate-expired MXHost:mx2.example.test ReceivingIP:192.0.2.2 Count:1} {ResultType:sts-policy-fetch-error MXHost: ReceivingIP: Count:1}]"
	if got != want {
		t.Errorf("report\n%s\nwant\n%s", got, want)
	}

	r = restarted(t, st)
	if days := take(t, r, day.Add(15*time.Hour)); len(days) != 0 {
		t.Errorf("reported again after a restart: %+v", days)
	}
}

// Nodes sharing a store report the cluster's sessions of a day once: the
// node that takes the day has every node's counts, the others nothing.
func TestResultsSharedStore(t *testing.T) {
	ctx := context.Background()
	st := sqliteStore(t)
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	a, b := restarted(t, st), restarted(t, st)
	a.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx.example.test"})
	b.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx.example.test"})
	b.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx.example.test", ReceivingIP: "192.0.2.1", Result: ResultValidationFailure})
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	next := day.Add(24 * time.Hour)
	days := take(t, b, next)
	if p := days["2026-03-01"]["example.test"].Policies[0]; p.Summary.Success != 2 || p.Summary.Failure != 1 {
		t.Errorf("the cluster's report: %+v", p)
	}
	if days := take(t, a, next); len(days) != 0 {
		t.Errorf("a second report of the day: %+v", days)
	}
}

// The results of a domain stay bounded whatever its hosts: past
// maxFailureDetails distinct ones, sessions count by result without
// their host, in memory and in the store, also after a restart.
func TestResultsBounded(t *testing.T) {
	ctx := context.Background()
	st := sqliteStore(t)
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	r := restarted(t, st)
	fail := func(r *Results, i int) {
		r.Add(day, Session{Domain: "example.test", Kind: MTASTS, MXHost: fmt.Sprintf("mx%d.example.test", i), ReceivingIP: "192.0.2.1", Result: ResultValidationFailure})
	}
	for i := range maxFailureDetails + 10 {
		fail(r, i)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r = restarted(t, st)
	fail(r, 1000)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cs, err := st.LoadCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != maxFailureDetails+1 {
		t.Errorf("%d counts stored, want %d", len(cs), maxFailureDetails+1)
	}
	p := take(t, r, day.Add(24*time.Hour))["2026-03-01"]["example.test"].Policies[0]
	// The details without a host sort first.
	first := p.FailureDetails[0]
	if p.Summary.Failure != maxFailureDetails+11 || len(p.FailureDetails) != maxFailureDetails+1 || first.MXHost != "" || first.Count != 11 {
		t.Errorf("%d failures in %d details, the first %+v", p.Summary.Failure, len(p.FailureDetails), first)
	}
}

// The policy cache stays within its bound over a restart: it loads the
// policies expiring last, and what it saves leaves no more in the store.
func TestCacheBounded(t *testing.T) {
	ctx := context.Background()
	st := sqliteStore(t)
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var ps []StoredPolicy
	for i := range 5 {
		ps = append(ps, StoredPolicy{Domain: fmt.Sprintf("d%d.test", i), ID: "1", Fetched: now,
			Expires: now.Add(time.Duration(i+1) * time.Hour), Policy: Policy{Mode: ModeEnforce, MaxAge: 6 * time.Hour, MX: []string{"mx.test"}}})
	}
	if err := st.SavePolicies(ctx, ps, now, 100); err != nil {
		t.Fatal(err)
	}
	c := NewCache(3)
	if err := c.Restore(ctx, st, now); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, false, true, true, true} {
		if got := c.get(fmt.Sprintf("d%d.test", i), now) != nil; got != want {
			t.Errorf("d%d.test cached %v, want %v", i, got, want)
		}
	}
	for i := range 4 {
		p := &Policy{Mode: ModeEnforce, MaxAge: 24 * time.Hour, MX: []string{"mx.test"}}
		c.put(fmt.Sprintf("new%d.test", i), &cached{policy: p, id: "1", fetched: now, expires: now.Add(p.MaxAge)}, now)
	}
	if err := c.Flush(ctx, now); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 3 {
		t.Errorf("%d policies in memory, want 3", c.Len())
	}
	got, err := st.LoadPolicies(ctx, now, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Errorf("%d policies in the store, want 3", len(got))
	}
}
