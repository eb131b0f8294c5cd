package sessionlog

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"submitd/internal/testutil"
)

func newStore(t *testing.T) *SQLite {
	t.Helper()
	st, err := NewSQLite(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestWriter: records handed to the background writer are stored by Close.
func TestWriter(t *testing.T) {
	st := newStore(t)
	w := NewWriter(st, 30*24*time.Hour, slog.New(slog.DiscardHandler))
	ids := []string{"aaaaaaaaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaaaaaaaa2", "aaaaaaaaaaaaaaaaaaaaa3"}
	for _, id := range ids {
		w.Save(&Record{ID: id, Start: time.Now(), End: time.Now(), Listener: "smtp", ClientIP: "127.0.0.1"})
	}
	w.Close()
	for _, id := range ids {
		if _, err := st.Get(context.Background(), id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
}

func TestRecordBounded(t *testing.T) {
	r := &Record{ID: "piWs1j0010jifNx01iWsdh"}
	for i := 0; i < 3*MaxEvents; i++ {
		r.Add("mail", "x@gmail.com", "550 5.1.0 <x@gmail.com> sender rejected")
		if i%1000 == 0 {
			r.Add("queued", "33lrhkj7b47fao68fvg29102", "")
		}
	}
	r.Add("close", "", "")
	if len(r.Events) > MaxEvents+5 {
		t.Fatalf("%d events", len(r.Events))
	}
	if n := len(r.QueueIDs()); n != 3 {
		t.Fatalf("%d queue ids, want 3", n)
	}
	om := r.Events[MaxEvents]
	if om.Kind != "omitted" || om.Detail != "2001 further events not recorded" {
		t.Fatalf("omitted event %+v", om)
	}
	if r.Events[len(r.Events)-1].Kind != "close" {
		t.Fatalf("last event %+v", r.Events[len(r.Events)-1])
	}
}

// TestWriterStatsBacklogAndDrops: while the database is locked the writer's
// backlog fills up to its capacity, records past it are dropped and
// counted, and once the lock is gone what waited is written.
func TestWriterStatsBacklogAndDrops(t *testing.T) {
	ctx := context.Background()
	db := testutil.OpenDB(t)
	st, err := NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(st, 30*24*time.Hour, slog.New(slog.DiscardHandler))
	const n = 5000
	for i := range n {
		w.Save(&Record{ID: fmt.Sprintf("backlog%015d", i), Start: time.Now(), End: time.Now(), Listener: "smtp", ClientIP: "127.0.0.1"})
	}
	s := w.Stats()
	// The writer took at most one batch (256) out before it blocked.
	if s.Capacity != 4096 || s.Backlog < s.Capacity-256 || s.Dropped == 0 || int(s.Dropped)+s.Backlog > n {
		t.Fatalf("with the database locked: %+v", s)
	}
	if _, err := lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	after := w.Stats()
	if after.Backlog != 0 || after.Failed != 0 || after.Dropped != s.Dropped {
		t.Fatalf("after the lock: %+v", after)
	}
	var stored int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sessions").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != n-int(s.Dropped) {
		t.Fatalf("stored %d records, want %d (%d dropped)", stored, n-int(s.Dropped), s.Dropped)
	}
}

// TestWriterStatsFailed: records the store cannot save are counted.
func TestWriterStatsFailed(t *testing.T) {
	db := testutil.OpenDB(t)
	st, err := NewSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(st, 30*24*time.Hour, slog.New(slog.DiscardHandler))
	db.Close()
	w.Save(&Record{ID: "failedfailedfailedfail", Start: time.Now(), End: time.Now(), Listener: "smtp", ClientIP: "127.0.0.1"})
	w.Close()
	if s := w.Stats(); s.Failed != 1 || s.Dropped != 0 {
		t.Fatalf("%+v", s)
	}
}
