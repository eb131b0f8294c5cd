package sending

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"submitd/internal/redisconn"
	"submitd/internal/testutil"
)

// evalCalls returns how many Lua calls the server has run.
func evalCalls(t *testing.T, cl redis.UniversalClient) int64 {
	t.Helper()
	info, err := cl.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				var n int64
				fmt.Sscanf(rest, "calls=%d", &n)
				total += n
			}
		}
	}
	return total
}

// TestLimitsAcrossNodes: two nodes' limiters on one Redis count one
// account's messages together, one Lua call per check; while Redis is down
// each counts by itself and logs the outage once, and they share again
// when it is back.
func TestLimitsAcrossNodes(t *testing.T) {
	r := testutil.StartRedis(t)
	clock := testutil.NewClock(time.Date(2026, 3, 2, 13, 7, 30, 0, time.UTC))
	var logs [2]*testutil.SyncBuffer
	var nodes [2]*Limiter
	var clients [2]redis.UniversalClient
	for i := range nodes {
		cl, err := redisconn.Open(r.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		clients[i] = cl
		logs[i] = &testutil.SyncBuffer{}
		nodes[i] = New(Config{
			Account: Limits{MessagesPerHour: 4, RecipientsPerHour: 100},
			Counter: NewRedis(cl), Now: clock.Now,
			Log: slog.New(slog.NewTextHandler(logs[i], nil)),
		})
	}
	// The scripts are loaded once; from then on a check is one EVALSHA.
	if err := takeScript.Load(context.Background(), clients[0]).Err(); err != nil {
		t.Fatal(err)
	}
	before := evalCalls(t, clients[0])
	for i := range 4 {
		tx, hit := nodes[i%2].Begin("jan@firma.cz", "firma.cz")
		if hit != nil {
			t.Fatalf("message %d refused: %s", i+1, hit.Text())
		}
		if hit := tx.Recipient("a@example.org"); hit != nil {
			t.Fatalf("recipient refused: %s", hit.Text())
		}
		tx.Accepted()
	}
	// 4 MAIL and 4 RCPT checks, one Lua call each (plus the INFO call
	// itself, which is not a Lua call).
	if got := evalCalls(t, clients[0]) - before; got != 8 {
		t.Errorf("%d Lua calls for 8 checks, want 8", got)
	}
	for i := range nodes {
		if _, hit := nodes[i].Begin("jan@firma.cz", "firma.cz"); hit == nil || hit.Text() != "4 messages per hour" || hit.Until.Format("15:04") != "14:07" {
			t.Fatalf("node %d let a 5th message through, or said %+v", i, hit)
		}
	}

	r.Stop()
	// Down, the node counts by itself: its own four messages of the
	// hour are not known here, so it lets four through and no more.
	for i := range 5 {
		tx, hit := nodes[0].Begin("jan@firma.cz", "firma.cz")
		if (hit != nil) != (i == 4) {
			t.Fatalf("message %d while Redis is down: %+v", i+1, hit)
		}
		tx.Accepted()
	}
	if n := strings.Count(logs[0].String(), "shared counter failed"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, logs[0])
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	nodes[0].retryShared, nodes[1].retryShared = 0, 0
	// A restarted Redis is empty: the window starts afresh, shared again.
	clock.Advance(time.Minute)
	for i := range 4 {
		tx, hit := nodes[i%2].Begin("jan@firma.cz", "firma.cz")
		if hit != nil {
			t.Fatalf("after Redis came back, message %d refused: %s", i+1, hit.Text())
		}
		tx.Accepted()
	}
	if _, hit := nodes[1].Begin("jan@firma.cz", "firma.cz"); hit == nil {
		t.Fatal("after Redis came back the nodes do not share the count")
	}
	if !strings.Contains(logs[0].String(), "shared counter answers again") {
		t.Errorf("recovery not logged:\n%s", logs[0])
	}
}

// TestHistoryBounded: a hostile account cannot grow the recipient history
// beyond its first-time budget: recipients refused as new add no rows,
// and old rows are pruned.
func TestHistoryBounded(t *testing.T) {
	ctx := context.Background()
	db := testutil.OpenDB(t)
	h, err := NewSQLiteHistory(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Date(2026, 3, 2, 13, 7, 30, 0, time.UTC))
	l := New(Config{Account: Limits{NewRecipientsPerDay: 50}, History: h, Now: clock.Now})
	rows := func() int { return historyRows(t, db) }
	for m := range 20 {
		tx, hit := l.Begin("spam@firma.cz", "firma.cz")
		if hit != nil {
			t.Fatal(hit.Text())
		}
		for i := range 100 {
			tx.Recipient(fmt.Sprintf("victim%d.%d@example.org", m, i))
		}
		tx.Accepted()
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 50 {
		t.Fatalf("%d history rows after 2000 tries, want the budget's 50", n)
	}
	// Every row the same small size, however long the address.
	var maxLen int
	db.QueryRow(`SELECT max(length(recipient)) FROM sending_history`).Scan(&maxLen)
	if maxLen != 16 {
		t.Fatalf("recipient keys of %d bytes", maxLen)
	}
	clock.Advance(HistoryWindow + time.Hour)
	l.Prune(clock.Now())
	if n := rows(); n != 0 {
		t.Fatalf("%d rows left after 30 days", n)
	}
}

// TestHistoryWriteBehind: recorded recipients are known at once, written
// in one transaction by the flush, written at once when maxPending wait,
// and written by Close.
func TestHistoryWriteBehind(t *testing.T) {
	ctx := context.Background()
	db := testutil.OpenDB(t)
	h, err := NewSQLiteHistory(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	rows := func() int { return historyRows(t, db) }
	now := time.Date(2026, 3, 2, 13, 0, 0, 0, time.UTC)
	if err := h.Record(ctx, "jan@firma.cz", []string{"a@example.org", "b@example.org"}, now); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.Known(ctx, "JAN@firma.cz", "A@example.org", now.Add(-time.Hour)); !ok || err != nil {
		t.Fatalf("a pending recipient is not known: %v", err)
	}
	if ok, _ := h.Known(ctx, "eva@jina.cz", "a@example.org", now.Add(-time.Hour)); ok {
		t.Fatal("another account's recipient is known")
	}
	if n := rows(); n != 0 {
		t.Fatalf("%d rows written before the flush", n)
	}
	testutil.WaitFor(t, 5*time.Second, "the write-behind flush", func() bool { return rows() == 2 })
	if ok, _ := h.Known(ctx, "jan@firma.cz", "b@example.org", now); !ok {
		t.Fatal("a written recipient is not known")
	}
	if ok, _ := h.Known(ctx, "jan@firma.cz", "b@example.org", now.Add(time.Second)); ok {
		t.Fatal("a recipient last sent to before since is known")
	}
	big := make([]string, maxPending)
	for i := range big {
		big[i] = fmt.Sprintf("r%d@example.org", i)
	}
	if err := h.Record(ctx, "jan@firma.cz", big, now); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 2+maxPending {
		t.Fatalf("%d rows after a full buffer, want %d written at once", n, 2+maxPending)
	}
	h.Record(ctx, "jan@firma.cz", []string{"last@example.org"}, now)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 3+maxPending {
		t.Fatalf("%d rows after Close", n)
	}
}

// historyRows counts the rows of the history table.
func historyRows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sending_history`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// failingOverrides is an override store that is down.
type failingOverrides struct{}

func (failingOverrides) SendingLimits(context.Context, string) (map[string]int64, error) {
	return nil, errors.New("database is locked")
}

// TestOverridesUnreadable: with the override store down, the configured
// limits apply and the outage is logged once, not at every command.
func TestOverridesUnreadable(t *testing.T) {
	log := &testutil.SyncBuffer{}
	l := New(Config{Account: Limits{MessagesPerHour: 2}, Overrides: failingOverrides{}, Log: slog.New(slog.NewTextHandler(log, nil))})
	for i := range 3 {
		tx, hit := l.Begin("jan@firma.cz", "firma.cz")
		if (hit != nil) != (i == 2) {
			t.Fatalf("message %d: %+v", i+1, hit)
		}
		tx.Accepted()
	}
	if n := strings.Count(log.String(), "overrides unreadable"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, log)
	}
}

// TestUsageFrees: the usage of a full window names the minute it frees a
// slot, the same minute a refusal names, on both counters; reading it
// counts nothing, and a window with room names none.
func TestUsageFrees(t *testing.T) {
	counters := map[string]func(t *testing.T) Counter{
		"memory": func(t *testing.T) Counter { return NewMemory() },
		"redis": func(t *testing.T) Counter {
			r := testutil.StartRedis(t)
			cl, err := redisconn.Open(r.URL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cl.Close() })
			return NewRedis(cl)
		},
	}
	for name, counter := range counters {
		t.Run(name, func(t *testing.T) {
			clock := testutil.NewClock(time.Date(2026, 3, 2, 13, 7, 30, 0, time.UTC))
			l := New(Config{Account: Limits{MessagesPerHour: 2}, Domain: Limits{MessagesPerHour: 10}, Counter: counter(t), Now: clock.Now})
			send := func() *Hit {
				tx, hit := l.Begin("jan@firma.cz", "firma.cz")
				tx.Accepted()
				return hit
			}
			if hit := send(); hit != nil {
				t.Fatalf("first message refused: %v", hit.Text())
			}
			clock.Advance(13 * time.Minute)
			if hit := send(); hit != nil {
				t.Fatalf("second message refused: %v", hit.Text())
			}
			for range 2 {
				acct, dom, err := l.Usage("jan@firma.cz", "firma.cz")
				if err != nil {
					t.Fatal(err)
				}
				if acct.Used[MessagesPerHour] != 2 || dom.Used[MessagesPerHour] != 2 {
					t.Fatalf("used %d and %d, want 2 and 2", acct.Used[MessagesPerHour], dom.Used[MessagesPerHour])
				}
				if want := time.Date(2026, 3, 2, 14, 7, 0, 0, time.UTC); !acct.Frees[MessagesPerHour].Equal(want) {
					t.Fatalf("account frees at %v, want %v", acct.Frees[MessagesPerHour], want)
				}
				if !dom.Frees[MessagesPerHour].IsZero() {
					t.Fatalf("domain with room frees at %v, want none", dom.Frees[MessagesPerHour])
				}
			}
			hit := send()
			if hit == nil || hit.Until.Format("15:04") != "14:07" {
				t.Fatalf("third message: %+v, want refused until 14:07", hit)
			}
			// Past the first message's hour one slot is free, and the
			// usage says so.
			clock.Advance(47 * time.Minute)
			acct, _, err := l.Usage("jan@firma.cz", "firma.cz")
			if err != nil {
				t.Fatal(err)
			}
			if acct.Used[MessagesPerHour] != 1 || !acct.Frees[MessagesPerHour].IsZero() {
				t.Fatalf("after an hour: used %d, frees %v; want 1 and none", acct.Used[MessagesPerHour], acct.Frees[MessagesPerHour])
			}
		})
	}
}
