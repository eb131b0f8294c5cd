package contain

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/pgdb/pgtest"
	"submitd/internal/testutil"
)

// TestVolumeFirstHourWithinLimits: on a start without history, an account
// mailing 180 an hour within its limit of 200 is no trip, nor at the
// limit itself; one without a limit trips at the floor as before; and once
// rise_days of history are known, the floor and the mean decide again.
func TestVolumeFirstHourWithinLimits(t *testing.T) {
	th := testThresholds
	th.RiseFloor, th.RiseDays = 150, 1
	d, tr, clk := newTestDetector(th)
	d.SetHourlyLimit(func(account string) int64 {
		if strings.HasPrefix(account, "firma@") {
			return 200
		}
		return 0
	})
	for range 180 {
		d.Queued("firma@firma.cz", 1, clk.Now())
		clk.Advance(time.Second)
	}
	for range 20 {
		d.Queued("firma@firma.cz", 1, clk.Now())
	}
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("an account within its hourly limit of 200 tripped: %+v", got)
	}
	for range 150 {
		d.Queued("jan@firma.cz", 1, clk.Now())
	}
	wantTrip(t, tr.take(), SignalVolume)

	// A day later the history is known: 200 a day is a mean of 8.3 an
	// hour, so the floor of 150 decides, below the hourly limit.
	clk.Advance(24 * time.Hour)
	for range 149 {
		d.Queued("firma@firma.cz", 1, clk.Now())
	}
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped below the floor: %+v", got)
	}
	d.Queued("firma@firma.cz", 1, clk.Now())
	if trip := tr.take(); len(trip) != 1 || trip[0].Figures["history_hours"] != 24 {
		t.Fatalf("trips %+v, want one with 24 hours of history", trip)
	}
}

// testSignalStore runs the checks every SignalStore passes.
func testSignalStore(t *testing.T, st SignalStore) {
	ctx := context.Background()
	h := int64(time.Hour)
	save := func(resets []Reset, counts ...Count) {
		t.Helper()
		if err := st.SaveCounts(ctx, resets, counts); err != nil {
			t.Fatal(err)
		}
	}
	load := func() []Count {
		t.Helper()
		var cs []Count
		if err := st.LoadCounts(ctx, func(c Count) { cs = append(cs, c) }); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(cs, func(a, b Count) int {
			return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Kind, b.Kind), cmp.Compare(a.At, b.At), strings.Compare(a.Key, b.Key))
		})
		return cs
	}
	save(nil,
		Count{Account: "", Kind: KindSince, N: 10 * h},
		Count{Account: "jan@firma.cz", Kind: KindHour, At: 100 * h, N: 3},
		Count{Account: "jan@firma.cz", Kind: KindHit, At: 5, N: 1},
		Count{Account: "jan@firma.cz", Kind: KindNetwork, Key: "192.0.2.0/24", N: 7},
		Count{Account: "eva@firma.cz", Kind: KindSlice, At: 9, N: 4})
	// A second node adds to the counts, keeps the latest login and the
	// earliest start.
	save(nil,
		Count{Account: "", Kind: KindSince, N: 20 * h},
		Count{Account: "jan@firma.cz", Kind: KindHour, At: 100 * h, N: 2},
		Count{Account: "jan@firma.cz", Kind: KindHit, At: 5, N: 1},
		Count{Account: "jan@firma.cz", Kind: KindNetwork, Key: "192.0.2.0/24", N: 6})
	want := []Count{
		{Account: "", Kind: KindSince, N: 10 * h},
		{Account: "eva@firma.cz", Kind: KindSlice, At: 9, N: 4},
		{Account: "jan@firma.cz", Kind: KindHour, At: 100 * h, N: 5},
		{Account: "jan@firma.cz", Kind: KindHit, At: 5, N: 1},
		{Account: "jan@firma.cz", Kind: KindNetwork, Key: "192.0.2.0/24", N: 7},
	}
	if got := load(); !slices.Equal(got, want) {
		t.Fatalf("loaded %+v\nwant %+v", got, want)
	}
	// A reset forgets its kinds of one account before the new figures.
	save([]Reset{{Account: "jan@firma.cz", Kinds: KindHour + KindHit}}, Count{Account: "jan@firma.cz", Kind: KindHour, At: 101 * h, N: 1})
	want = []Count{want[0], want[1], {Account: "jan@firma.cz", Kind: KindHour, At: 101 * h, N: 1}, want[4]}
	if got := load(); !slices.Equal(got, want) {
		t.Fatalf("after a reset %+v\nwant %+v", got, want)
	}
	if err := st.PruneCounts(ctx, map[string]int64{KindHour: 101*h + 1, KindNetwork: 8, KindSlice: 9}); err != nil {
		t.Fatal(err)
	}
	want = []Count{want[0], want[1]}
	if got := load(); !slices.Equal(got, want) {
		t.Fatalf("after pruning %+v\nwant %+v", got, want)
	}
}

// TestSignalStore runs the same checks on SQLite and PostgreSQL.
func TestSignalStore(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) {
		st, err := NewSQLiteSignals(context.Background(), testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		testSignalStore(t, st)
	})
	t.Run("Postgres", func(t *testing.T) {
		st, err := NewPostgresSignals(context.Background(), pgtest.Pool(t))
		if err != nil {
			t.Fatal(err)
		}
		testSignalStore(t, st)
	})
}

// TestDetectorRestore: what a detector counted and flushed, a new one on
// the same store carries on with: the volume of the last hour, the limit
// hits, the refused recipients and the networks, each tripping where it
// would have without the restart. A reset after a trip is saved too.
func TestDetectorRestore(t *testing.T) {
	ctx := context.Background()
	st, err := NewSQLiteSignals(ctx, testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	d, tr, clk := newTestDetector(testThresholds)
	if err := d.Restore(ctx, st); err != nil {
		t.Fatal(err)
	}
	for range 19 {
		d.Queued("jan@firma.cz", 1, clk.Now())
	}
	d.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now())
	d.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now().Add(time.Minute))
	refused := make([]delivery.Result, 9)
	for i := range refused {
		refused[i].Status = delivery.Permanent
	}
	d.Delivered("jan@firma.cz", refused)
	for i := range 3 {
		d.LoggedIn("jan@firma.cz", netip.AddrFrom4([4]byte{192, 0, byte(i), 1}), "", clk.Now())
	}
	// Eva trips the volume: her slices are reset, and stay so.
	for range 20 {
		d.Queued("eva@firma.cz", 1, clk.Now())
	}
	wantTripOf(t, tr.take(), "eva@firma.cz", SignalVolume)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	clk.Advance(2 * time.Minute)
	d2 := NewDetector(testThresholds, 0, clk.Now, tr.add)
	if err := d2.Restore(ctx, st); err != nil {
		t.Fatal(err)
	}
	d2.Queued("eva@firma.cz", 1, clk.Now())
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("the reset after a trip was not kept: %+v", got)
	}
	d2.Queued("jan@firma.cz", 1, clk.Now())
	wantTrip(t, tr.take(), SignalVolume)
	d2.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now())
	wantTrip(t, tr.take(), SignalLimits)
	d2.Delivered("jan@firma.cz", refused[:1])
	wantTrip(t, tr.take(), SignalBounces)
	d2.LoggedIn("jan@firma.cz", netip.MustParseAddr("198.51.100.1"), "", clk.Now())
	wantTrip(t, tr.take(), SignalNetworks)

	// A detector whose signals are all off loads nothing.
	d3 := NewDetector(Thresholds{RiseDays: 7}, 0, clk.Now, tr.add)
	if err := d3.Restore(ctx, st); err != nil {
		t.Fatal(err)
	}
	if n := d3.Tracked(); n != 0 {
		t.Fatalf("%d accounts loaded with every signal off", n)
	}

	// A release forgets the account in the store as well.
	d2.Forget("jan@firma.cz")
	if err := d2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.LoadCounts(ctx, func(c Count) {
		if c.Account == "jan@firma.cz" {
			t.Errorf("a forgotten account's figure was kept: %+v", c)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// wantTripOf checks that exactly one trip of signal of account fired.
func wantTripOf(t *testing.T, got []Trip, account, signal string) {
	t.Helper()
	if len(got) != 1 || got[0].Signal != signal || got[0].Account != account {
		t.Fatalf("trips %+v, want one %s of %s", got, signal, account)
	}
}

// TestDetectorFlushBounded: the figures waiting to be saved are bounded,
// and what is past the bound is counted as unsaved, not kept.
func TestDetectorFlushBounded(t *testing.T) {
	ctx := context.Background()
	st, err := NewSQLiteSignals(ctx, testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	th := testThresholds
	th.RiseFloor = 1 << 30
	d := NewDetector(th, 1000, nil, nil)
	if err := d.Restore(ctx, st); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	for i := range maxPendingCounts / 2 {
		d.Queued(fmt.Sprintf("u%d@firma.cz", i), 1, at)
	}
	d.Queued("jan@firma.cz", 1, at)
	d.mu.Lock()
	n := d.npending
	d.mu.Unlock()
	if n > maxPendingCounts || d.Unsaved() == 0 {
		t.Fatalf("%d waiting, %d unsaved; bound %d", n, d.Unsaved(), maxPendingCounts)
	}
}

// BenchmarkQueuedSaved is BenchmarkQueued with a store: the SMTP path
// adds to what waits for the next flush and writes nothing.
func BenchmarkQueuedSaved(b *testing.B) {
	d, accts := savedDetector(b)
	at := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Queued(accts[i%len(accts)], 1, at)
	}
}

// BenchmarkFlush is one flush after 1000 accounts sent a message each:
// 2000 figures (their slice and hour) in one SQLite transaction, what the
// server writes every StateSaveEvery at that rate.
func BenchmarkFlush(b *testing.B) {
	d, accts := savedDetector(b)
	at := time.Now()
	for i := 0; b.Loop(); i++ {
		for _, a := range accts {
			d.Queued(a, 1, at.Add(time.Duration(i)*time.Hour))
		}
		if err := d.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// savedDetector is a detector on a SQLite store, whose volume signal never
// trips, and 1000 accounts.
func savedDetector(b *testing.B) (*Detector, []string) {
	st, err := NewSQLiteSignals(context.Background(), testutil.OpenDB(b))
	if err != nil {
		b.Fatal(err)
	}
	th := testThresholds
	th.RiseFloor = 1 << 30
	d := NewDetector(th, 0, nil, nil)
	if err := d.Restore(context.Background(), st); err != nil {
		b.Fatal(err)
	}
	accts := make([]string, 1000)
	for i := range accts {
		accts[i] = fmt.Sprintf("u%d@firma.cz", i)
	}
	return d, accts
}

// TestDetectorRestoreSpam: the spam verdicts of SPEC R22 survive a
// restart like the other signals, on SQLite and PostgreSQL: two verdicts
// before it and one after trip the hold at three; the reset after the
// trip is kept, and verdicts that left the window are not loaded.
func TestDetectorRestoreSpam(t *testing.T) {
	ctx := context.Background()
	th := testThresholds
	th.Spam, th.SpamWindow = 3, time.Hour
	for name, open := range map[string]func(t *testing.T) SignalStore{
		"SQLite": func(t *testing.T) SignalStore {
			st, err := NewSQLiteSignals(ctx, testutil.OpenDB(t))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		"Postgres": func(t *testing.T) SignalStore {
			st, err := NewPostgresSignals(ctx, pgtest.Pool(t))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			d, tr, clk := newTestDetector(th)
			restart := func() {
				t.Helper()
				if err := d.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				d = NewDetector(th, 0, clk.Now, tr.add)
				if err := d.Restore(ctx, st); err != nil {
					t.Fatal(err)
				}
			}
			restart()
			// Two verdicts at the same moment, as a message to two
			// recipients of one pipelined session can give, count twice.
			d.Spam("jan@firma.cz", "reject", clk.Now())
			d.Spam("jan@firma.cz", "add header", clk.Now())
			d.Spam("eva@firma.cz", "reject", clk.Now())
			clk.Advance(time.Minute)
			restart()
			d.Spam("jan@firma.cz", "reject", clk.Now())
			wantTripOf(t, tr.take(), "jan@firma.cz", SignalSpam)

			// The trip started Jan's count afresh, after a restart too.
			d.Spam("jan@firma.cz", "reject", clk.Now())
			restart()
			d.Spam("jan@firma.cz", "reject", clk.Now())
			if got := tr.take(); len(got) != 0 {
				t.Fatalf("verdicts counted before the trip tripped again after a restart: %+v", got)
			}

			// Eva's verdict leaves the window while the server is down.
			d.Spam("eva@firma.cz", "reject", clk.Now())
			clk.Advance(time.Hour)
			restart()
			d.Spam("eva@firma.cz", "reject", clk.Now())
			if got := tr.take(); len(got) != 0 {
				t.Fatalf("a verdict older than the window was counted: %+v", got)
			}
			d.Spam("eva@firma.cz", "reject", clk.Now())
			d.Spam("eva@firma.cz", "reject", clk.Now())
			wantTripOf(t, tr.take(), "eva@firma.cz", SignalSpam)
		})
	}
}
