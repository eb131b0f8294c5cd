// Package storetest is the suite every session store passes, so that the
// PostgreSQL session log answers support as the SQLite one does.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"submitd/internal/sessionlog"
)

// Store is a session store as the node uses it.
type Store interface {
	sessionlog.BatchStore
	// Find returns the records matching q, newest first.
	Find(ctx context.Context, q sessionlog.Query) ([]*sessionlog.Record, error)
	// AuthFailures returns the session ids of ip's failed AUTHs.
	AuthFailures(ctx context.Context, ip string, since, until time.Time) ([]string, error)
}

// Open returns a fresh, empty store.
type Open func(t *testing.T) Store

// Run runs the suite.
func Run(t *testing.T, open Open) {
	t.Run("SaveGetPrune", func(t *testing.T) { saveGetPrune(t, open) })
	t.Run("Find", func(t *testing.T) { find(t, open) })
	t.Run("HostileText", func(t *testing.T) { hostileText(t, open) })
}

// hostileText: whatever bytes a client sent as its HELO name or MAIL FROM
// (a NUL, invalid UTF-8), its record is saved, and so are the others of the
// same batch.
func hostileText(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	now := time.Now()
	bad := &sessionlog.Record{ID: "hostilehostilehostile1", Start: now, End: now, Listener: "smtp", ClientIP: "192.0.2.7",
		HELO: "evil\x00\xff\xfe"}
	bad.Add("mail", "a\x00b@\xc3(.cz", "550 5.1.7 no")
	good := &sessionlog.Record{ID: "goodgoodgoodgoodgood01", Start: now, End: now, Listener: "smtp", ClientIP: "192.0.2.8", HELO: "laptop"}
	if err := st.SaveBatch(ctx, []*sessionlog.Record{bad, good}); err != nil {
		t.Fatalf("SaveBatch with hostile bytes: %v", err)
	}
	for _, r := range []*sessionlog.Record{bad, good} {
		got, err := st.Get(ctx, r.ID)
		if err != nil {
			t.Fatalf("Get(%s): %v", r.ID, err)
		}
		if !strings.HasPrefix(got.HELO, "evil") && got.HELO != "laptop" || got.ClientIP != r.ClientIP || len(got.Events) != len(r.Events) {
			t.Errorf("Get(%s) = %+v", r.ID, got)
		}
	}
}

// saveGetPrune: a record comes back as saved, and Prune deletes by end time.
func saveGetPrune(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	now := time.Now()
	old := &sessionlog.Record{ID: "oldoldoldoldoldoldold1", Start: now.Add(-40 * 24 * time.Hour), End: now.Add(-40 * 24 * time.Hour),
		Listener: "submission", ClientIP: "192.0.2.1", ClientPort: 40000}
	rec := &sessionlog.Record{ID: "piWs1j0010jifNx01iWsdh", Start: now, Listener: "submissions", ClientIP: "2001:db8::1",
		ClientPort: 50000, TLS: "TLS 1.3 TLS_AES_128_GCM_SHA256", HELO: "laptop", Account: "jan@firma.cz"}
	rec.Add("auth", "jan@firma.cz", "235 2.7.0 Authentication succeeded")
	rec.Add("mail", "jan@firma.cz", "250 2.0.0 OK")
	rec.Add("queued", "33lrhkj7b47fao68fvg29102", "")
	rec.End = now.Add(time.Second)
	for _, r := range []*sessionlog.Record{old, rec} {
		if err := st.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.Get(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Account != "jan@firma.cz" || got.ClientIP != "2001:db8::1" || got.TLS != rec.TLS || len(got.Events) != 3 ||
		got.Events[0].Reply != "235 2.7.0 Authentication succeeded" || got.QueueIDs()[0] != "33lrhkj7b47fao68fvg29102" ||
		!got.Start.Equal(rec.Start) {
		t.Fatalf("got %+v", got)
	}
	n, err := st.Prune(ctx, now.Add(-30*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	if _, err := st.Get(ctx, old.ID); !errors.Is(err, sessionlog.ErrNotFound) {
		t.Fatalf("pruned record: %v", err)
	}
	if _, err := st.Get(ctx, rec.ID); err != nil {
		t.Fatalf("recent record pruned: %v", err)
	}
}

// find: support finds sessions by client IP, by an address used as
// login, account or sender, and by queue id; AuthFailures counts the failed
// AUTHs of an IP in a time range.
func find(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	t0 := time.Now().Add(-time.Hour)
	save := func(i int, ip, account string, events ...[3]string) string {
		r := &sessionlog.Record{ID: fmt.Sprintf("sess%018d", i), Start: t0.Add(time.Duration(i) * time.Minute), ClientIP: ip, Account: account}
		for _, e := range events {
			r.Add(e[0], e[1], e[2])
			r.Events[len(r.Events)-1].Time = r.Start.Add(time.Second)
		}
		r.End = r.Start.Add(2 * time.Second)
		if err := st.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	wrong := [3]string{"auth", "jan@firma.cz", "535 5.1.0 x authentication failed"}
	s1 := save(1, "203.0.113.9", "", wrong)
	s2 := save(2, "203.0.113.9", "", wrong)
	s3 := save(3, "203.0.113.9", "jan@firma.cz", [3]string{"auth", "jan@firma.cz", "235 2.7.0 Authentication succeeded"},
		[3]string{"mail", "x@praha.firma.cz", "550 5.1.0 <x@praha.firma.cz> sender rejected"})
	s4 := save(4, "198.51.100.1", "eva@firma.cz", [3]string{"mail", "eva@firma.cz", "250 2.0.0 OK"},
		[3]string{"queued", "33lrhkj7b47fao68fvg29102", ""})

	ids := func(rs []*sessionlog.Record, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, c := range []struct {
		q    sessionlog.Query
		want []string
	}{
		{sessionlog.Query{ClientIP: "203.0.113.9"}, []string{s3, s2, s1}},
		{sessionlog.Query{ClientIP: "203.0.113.9", Limit: 1}, []string{s3}},
		{sessionlog.Query{Address: "jan@firma.cz"}, []string{s3, s2, s1}},
		{sessionlog.Query{Address: "x@praha.firma.cz"}, []string{s3}},
		{sessionlog.Query{Address: "eva@firma.cz", ClientIP: "203.0.113.9"}, nil},
		{sessionlog.Query{QueueID: "33lrhkj7b47fao68fvg29102"}, []string{s4}},
		{sessionlog.Query{ClientIP: "203.0.113.9", Since: t0.Add(90 * time.Second)}, []string{s3, s2}},
	} {
		if got := ids(st.Find(ctx, c.q)); !slices.Equal(got, c.want) {
			t.Errorf("Find(%+v) = %v, want %v", c.q, got, c.want)
		}
	}
	if _, err := st.Find(ctx, sessionlog.Query{}); err == nil {
		t.Error("Find with no criteria accepted")
	}
	fails, err := st.AuthFailures(ctx, "203.0.113.9", t0, t0.Add(time.Hour))
	if err != nil || !slices.Equal(fails, []string{s1, s2}) {
		t.Errorf("AuthFailures = %v, %v; want %v", fails, err, []string{s1, s2})
	}
	fails, _ = st.AuthFailures(ctx, "203.0.113.9", t0, t0.Add(90*time.Second))
	if !slices.Equal(fails, []string{s1}) {
		t.Errorf("AuthFailures up to s1 = %v", fails)
	}
}
