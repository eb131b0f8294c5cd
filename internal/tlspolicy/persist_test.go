package tlspolicy

import (
	"context"
	"fmt"
	"slices"
	"strings"
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

// flush saves r's counts in its store.
func flush(t *testing.T, r *Results) {
	t.Helper()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
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
	st := sqliteStore(t)
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	sts := STSApplied(&Policy{Mode: ModeEnforce, MaxAge: 86400 * time.Second, MX: []string{"*.example.test"}})
	r := restarted(t, st)
	for range 3 {
		r.Add(day, Session{Domain: "example.test", Kind: MTASTS, MXHost: "mx.example.test", ReceivingIP: "192.0.2.1", Applied: sts})
	}
	r.Add(day, Session{Domain: "example.test", Kind: MTASTS, Result: ResultSTSPolicyFetchError})
	flush(t, r)

	r = restarted(t, st)
	r.Add(day.Add(time.Hour), Session{Domain: "example.test", Kind: MTASTS, MXHost: "mx2.example.test", ReceivingIP: "192.0.2.2", Result: ResultCertificateExpired, Applied: sts})
	if days := take(t, r, day.Add(2*time.Hour)); len(days) != 0 {
		t.Fatalf("reports during the day: %+v", days)
	}
	days := take(t, r, day.Add(14*time.Hour))
	rep := days["2026-03-01"]["example.test"]
	if len(days) != 1 || rep == nil || len(rep.Policies) != 2 {
		t.Fatalf("reports %+v", days)
	}
	var got []string
	for _, p := range rep.Policies {
		got = append(got, fmt.Sprintf("%s %q %q %d/%d %+v", p.Policy.Type, p.Policy.String, p.Policy.MXHost, p.Summary.Success, p.Summary.Failure, p.FailureDetails))
	}
	want := []string{
		`sts [] [] 0/1 [{ResultType:sts-policy-fetch-error MXHost: ReceivingIP: Count:1}]`,
		`sts ["version: STSv1" "mode: enforce" "mx: *.example.test" "max_age: 86400"] ["*.example.test"] 3/1 [{ResultType:certificate-expired MXHost:mx2.example.test ReceivingIP:192.0.2.2 Count:1}]`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("report\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	r = restarted(t, st)
	if days := take(t, r, day.Add(15*time.Hour)); len(days) != 0 {
		t.Errorf("reported again after a restart: %+v", days)
	}
}

// Nodes sharing a store report the cluster's sessions of a day once: the
// node that takes the day has every node's counts, the others nothing.
func TestResultsSharedStore(t *testing.T) {
	st := sqliteStore(t)
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	a, b := restarted(t, st), restarted(t, st)
	a.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx.example.test"})
	b.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx.example.test"})
	b.Add(day, Session{Domain: "example.test", Kind: DANE, MXHost: "mx.example.test", ReceivingIP: "192.0.2.1", Result: ResultValidationFailure})
	flush(t, a)
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
	flush(t, r)
	r = restarted(t, st)
	fail(r, 1000)
	flush(t, r)
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

// The policies of a domain stay bounded whatever it publishes: past
// maxPolicies distinct ones in a day, and for one longer than
// maxPolicyKey, sessions count under their policy type without the
// policy, in memory and in the store, also after a restart.
func TestResultsPoliciesBounded(t *testing.T) {
	ctx := context.Background()
	st := sqliteStore(t)
	day := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	r := restarted(t, st)
	// A policy that changes every second, each a success.
	add := func(r *Results, i int) {
		p := STSApplied(&Policy{Mode: ModeEnforce, MaxAge: time.Duration(i+1) * time.Second, MX: []string{"mx.example.test"}})
		r.Add(day.Add(time.Duration(i)*time.Second), Session{Domain: "example.test", Kind: MTASTS, MXHost: "mx.example.test", Applied: p})
	}
	for i := range maxPolicies + 5 {
		add(r, i)
	}
	huge := STSApplied(&Policy{Mode: ModeEnforce, MaxAge: time.Hour, MX: []string{"mx.example.test"}})
	for len(huge.policyKey()) <= maxPolicyKey {
		huge.Policy = append(huge.Policy, "mx: "+strings.Repeat("x", 60)+".example.test")
	}
	r.Add(day, Session{Domain: "huge.test", Kind: MTASTS, MXHost: "mx.huge.test", Applied: huge})
	flush(t, r)
	r = restarted(t, st)
	add(r, 1000)
	add(r, 0) // one of those counted with their policy
	flush(t, r)
	cs, err := st.LoadCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != maxPolicies+1+1 {
		t.Errorf("%d counts stored, want %d", len(cs), maxPolicies+2)
	}
	days := take(t, r, day.Add(24*time.Hour))
	ps := days["2026-03-01"]["example.test"].Policies
	if len(ps) != maxPolicies+1 {
		t.Fatalf("%d policies reported, want %d", len(ps), maxPolicies+1)
	}
	// The policy-less entry sorts first.
	if p := ps[0]; p.Policy.Type != "sts" || p.Policy.String != nil || p.Policy.MXHost != nil || p.Summary.Success != 6 {
		t.Errorf("the sessions past the bound: %+v", p)
	}
	if p := ps[1]; p.Policy.String[len(p.Policy.String)-1] != "max_age: 1" || p.Summary.Success != 2 {
		t.Errorf("the first policy: %+v", p)
	}
	if p := days["2026-03-01"]["huge.test"].Policies[0]; p.Policy.Type != "sts" || p.Policy.String != nil || p.Summary.Success != 1 {
		t.Errorf("the huge policy: %+v", p)
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
