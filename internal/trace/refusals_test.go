package trace

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"submitd/internal/ids"
	"submitd/internal/sessionlog"
	"submitd/internal/testutil"
)

// kept collects what Refusals hands to the session log.
type kept struct {
	mu   sync.Mutex
	recs map[string]*sessionlog.Record
}

func (k *kept) Save(r *sessionlog.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.recs[r.ID] = r
}

// TestRefusalEpisodes: the refusals of one client share a tag until it has
// not been refused for episodeGap; IPv6 clients are one per /64; past
// maxEpisodes open episodes a refusal gets a plain id, counted, so a flood
// from many addresses holds a bounded map; once the flood has been idle a
// minute, a new client is recorded again.
func TestRefusalEpisodes(t *testing.T) {
	k := &kept{recs: map[string]*sessionlog.Record{}}
	r := NewRefusals(k)
	defer r.Close()
	clock := time.Date(2026, 12, 6, 13, 7, 0, 0, time.UTC)
	r.now = func() time.Time { return clock }
	line := func(sid string) string { return "554 5.1.0 " + sid + " Connection refused" }
	ip := netip.MustParseAddr("127.0.0.77")
	a := r.Refused(ids.Session(), ip, "submission", "blocked", line)
	b := r.Refused(ids.Session(), ip, "submission", "blocked", line)
	if a[:tagLen] != b[:tagLen] || a == b {
		t.Fatalf("one episode gave %s and %s", a, b)
	}
	v6a := r.Refused(ids.Session(), netip.MustParseAddr("2001:db8::1"), "submission", "blocked", line)
	v6b := r.Refused(ids.Session(), netip.MustParseAddr("2001:db8::2"), "submission", "blocked", line)
	if v6a[:tagLen] != v6b[:tagLen] || v6a[:tagLen] == a[:tagLen] {
		t.Errorf("IPv6 /64: %s and %s (IPv4 %s)", v6a, v6b, a)
	}
	clock = clock.Add(episodeGap + time.Second)
	if c := r.Refused(ids.Session(), ip, "submission", "blocked", line); c[:tagLen] == a[:tagLen] {
		t.Errorf("after an idle hour the same tag: %s, %s", a, c)
	}
	k.mu.Lock()
	rec := k.recs[a[:tagLen]+episodeSuffix]
	k.mu.Unlock()
	if rec == nil || rec.Events[0].Detail == "" || rec.Events[0].Reply != line(a) {
		t.Fatalf("the first episode's record: %+v", rec)
	}
	for i := range maxEpisodes + 10 {
		r.Refused(ids.Session(), netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "smtp", "blocked", line)
	}
	if n := r.Unrecorded(); n == 0 || n > 20 {
		t.Errorf("unrecorded = %d", n)
	}
	r.mu.Lock()
	n := len(r.episodes)
	r.mu.Unlock()
	if n > maxEpisodes {
		t.Errorf("%d episodes open", n)
	}
	// A minute later the flood's episodes are idle: a new client's
	// refusal ends them and is recorded again.
	clock = clock.Add(time.Minute + time.Second)
	before := r.Unrecorded()
	if sid := r.Refused(ids.Session(), netip.MustParseAddr("192.0.2.9"), "smtp", "blocked", line); r.Unrecorded() != before {
		t.Errorf("after the flood went idle, %s unrecorded", sid)
	}
}

// BenchmarkRefusedFlood is a refusal while maxEpisodes episodes are open
// and none is idle: a flood from more clients than the map holds.
func BenchmarkRefusedFlood(b *testing.B) {
	r := NewRefusals(&kept{recs: map[string]*sessionlog.Record{}})
	defer r.Close()
	clock := time.Date(2026, 12, 6, 13, 7, 0, 0, time.UTC)
	r.now = func() time.Time { return clock }
	line := func(sid string) string { return "421 4.7.0 " + sid + " Too many connections" }
	for i := range maxEpisodes {
		r.Refused(ids.Session(), netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "smtp", "limits", line)
	}
	ip := netip.MustParseAddr("10.1.0.1")
	sid := ids.Session()
	for b.Loop() {
		r.Refused(sid, ip, "smtp", "limits", line)
	}
}

// saveNow saves each record in the session log at once.
type saveNow struct {
	t  *testing.T
	st *sessionlog.SQLite
}

func (s saveNow) Save(r *sessionlog.Record) {
	if err := s.st.Save(context.Background(), r); err != nil {
		s.t.Error(err)
	}
}

// TestSession: a session id answers its own record, the id of a refused
// connection the record of its refusals told with that id, and an unknown
// id is not found.
func TestSession(t *testing.T) {
	ctx := context.Background()
	st, err := sessionlog.NewSQLite(ctx, testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	own := &sessionlog.Record{ID: ids.Session(), Start: time.Now(), End: time.Now(), Listener: "submission", ClientIP: "192.0.2.7"}
	if err := st.Save(ctx, own); err != nil {
		t.Fatal(err)
	}
	r := NewRefusals(saveNow{t, st})
	defer r.Close()
	refused := r.Refused(ids.Session(), netip.MustParseAddr("192.0.2.66"), "smtp", "blocked",
		func(sid string) string { return "554 5.1.0 " + sid + " Connection refused" })
	if rec, err := Session(ctx, st, own.ID); err != nil || rec.ID != own.ID || rec.ClientIP != "192.0.2.7" {
		t.Errorf("own record: %+v, %v", rec, err)
	}
	if rec, err := Session(ctx, st, refused); err != nil || rec.ID != refused || rec.ClientIP != "192.0.2.66" ||
		rec.Events[0].Reply != "554 5.1.0 "+refused+" Connection refused" {
		t.Errorf("refused connection's record: %+v, %v", rec, err)
	}
	if _, err := Session(ctx, st, ids.Session()); !errors.Is(err, sessionlog.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
}
