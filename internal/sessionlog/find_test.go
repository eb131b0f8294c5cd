package sessionlog

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestFind: support finds sessions by client IP, by an address used as
// login, account or sender, and by queue id; AuthFailures counts the failed
// AUTHs of an IP in a time range.
func TestFind(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	t0 := time.Now().Add(-time.Hour)
	save := func(i int, ip, account string, events ...[3]string) string {
		r := &Record{ID: fmt.Sprintf("sess%018d", i), Start: t0.Add(time.Duration(i) * time.Minute), ClientIP: ip, Account: account}
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

	ids := func(rs []*Record, err error) []string {
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
		q    Query
		want []string
	}{
		{Query{ClientIP: "203.0.113.9"}, []string{s3, s2, s1}},
		{Query{ClientIP: "203.0.113.9", Limit: 1}, []string{s3}},
		{Query{Address: "jan@firma.cz"}, []string{s3, s2, s1}},
		{Query{Address: "x@praha.firma.cz"}, []string{s3}},
		{Query{Address: "eva@firma.cz", ClientIP: "203.0.113.9"}, nil},
		{Query{QueueID: "33lrhkj7b47fao68fvg29102"}, []string{s4}},
		{Query{ClientIP: "203.0.113.9", Since: t0.Add(90 * time.Second)}, []string{s3, s2}},
	} {
		if got := ids(st.Find(ctx, c.q)); !slices.Equal(got, c.want) {
			t.Errorf("Find(%+v) = %v, want %v", c.q, got, c.want)
		}
	}
	if _, err := st.Find(ctx, Query{}); err == nil {
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
