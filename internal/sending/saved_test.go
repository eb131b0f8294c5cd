package sending

import (
	"context"
	"fmt"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// restarting is a Memory counter that is saved to SQLite and loaded into a
// new Memory, as at a restart, after every change: the counter suite then
// shows that what the windows hold survives one.
type restarting struct {
	t  *testing.T
	st *SQLiteWindows
	m  *Memory
}

func (r *restarting) restart(now time.Time) {
	r.t.Helper()
	if err := r.m.Flush(context.Background(), now); err != nil {
		r.t.Fatal(err)
	}
	r.m = NewMemory()
	if err := r.m.Restore(context.Background(), r.st, now); err != nil {
		r.t.Fatal(err)
	}
}

func (r *restarting) Take(ctx context.Context, now time.Time, reqs []Request) ([]Taken, int, time.Time, error) {
	taken, refused, until, err := r.m.Take(ctx, now, reqs)
	r.restart(now)
	return taken, refused, until, err
}

func (r *restarting) Give(ctx context.Context, now time.Time, taken []Taken) error {
	err := r.m.Give(ctx, now, taken)
	r.restart(now)
	return err
}

func (r *restarting) Count(ctx context.Context, now time.Time, key string, window time.Duration) (int64, error) {
	return r.m.Count(ctx, now, key, window)
}

// TestMemorySavedCounter runs the counter suite on a Memory counter that
// restarts from its SQLite table after every change.
func TestMemorySavedCounter(t *testing.T) {
	counterSuite(t, func(t *testing.T) Counter {
		st, err := NewSQLiteWindows(context.Background(), testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		r := &restarting{t: t, st: st, m: NewMemory()}
		r.restart(time.Time{})
		return r
	})
}

// TestSavedWindowsPruned: rows that left their window are deleted at the
// next flush, and an emptied window's rows with it.
func TestSavedWindowsPruned(t *testing.T) {
	ctx := context.Background()
	db := testutil.OpenDB(t)
	st, err := NewSQLiteWindows(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMemory()
	if err := m.Restore(ctx, st, time.Time{}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	for i := range 100 {
		m.Take(ctx, at.Add(time.Duration(i)*time.Minute), []Request{{Key: "h", Window: time.Hour, Max: 1000, N: 1}})
	}
	m.Take(ctx, at, []Request{{Key: "d", Window: 24 * time.Hour, Max: 1000, N: 1}})
	if err := m.Flush(ctx, at.Add(100*time.Minute)); err != nil {
		t.Fatal(err)
	}
	rows := func() (n int) {
		t.Helper()
		if err := db.QueryRow(`SELECT COUNT(*) FROM sending_windows`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// At 10:40 the minutes 9:41 to 10:39 of "h" are in its window, and
	// the one of "d".
	if n := rows(); n != 60 {
		t.Fatalf("%d rows, want 60", n)
	}
	later := at.Add(25 * time.Hour)
	m.Take(ctx, later, []Request{{Key: "x", Window: time.Hour, Max: 1000, N: 1}})
	if err := m.Flush(ctx, later); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 1 {
		t.Fatalf("%d rows a day later, want 1", n)
	}
}

// BenchmarkFlush: 100 accounts that sent every minute of the day each send
// one more message, and the node saves their windows.
func BenchmarkFlush(b *testing.B) {
	ctx := context.Background()
	st, err := NewSQLiteWindows(ctx, testutil.OpenDB(b))
	if err != nil {
		b.Fatal(err)
	}
	m := NewMemory()
	if err := m.Restore(ctx, st, time.Time{}); err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("rcpt-day:%d@firma.cz", i)
	}
	send := func(now time.Time) {
		for _, k := range keys {
			if _, refused, _, err := m.Take(ctx, now, []Request{{Key: k, Window: 24 * time.Hour, N: 1}}); err != nil || refused >= 0 {
				b.Fatalf("take: %v, refused %d", err, refused)
			}
		}
	}
	for i := range 1440 {
		send(at.Add(time.Duration(i) * time.Minute))
	}
	now := at.Add(1439 * time.Minute)
	if err := m.Flush(ctx, now); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		send(now)
		if err := m.Flush(ctx, now); err != nil {
			b.Fatal(err)
		}
	}
}
