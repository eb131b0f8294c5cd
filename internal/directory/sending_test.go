package directory_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"testing"
	"time"

	"submitd/internal/directory"
)

// sendingStore is a directory that keeps sending-limit overrides.
type sendingStore interface {
	directory.Store
	directory.SendingStore
}

func TestSQLiteSendingLimits(t *testing.T) { sendingSuite(t, openSQLite(t)) }

func TestPostgresSendingLimits(t *testing.T) { sendingSuite(t, openPostgres(t)) }

// sendingSuite: overrides are set, merged, read, cleared by key or all at
// once, refused for names that are not an account or a hosted domain, and
// go with their account or domain.
func sendingSuite(t *testing.T, st sendingStore) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.AddDomain(ctx, "firma.cz"))
	must(st.AddAlias(ctx, "firma.com", "firma.cz"))
	must(st.AddAccount(ctx, "jan@firma.cz", "{BLF-CRYPT}x"))
	want := func(name string, w map[string]int64) {
		t.Helper()
		got, err := st.SendingLimits(ctx, name)
		if err != nil || !maps.Equal(got, w) {
			t.Fatalf("SendingLimits(%s) = %v, %v; want %v", name, got, err, w)
		}
	}
	want("jan@firma.cz", map[string]int64{})
	must(st.SetSendingLimits(ctx, "JAN@firma.cz", map[string]int64{"recipients_per_hour": 1000, "messages_per_hour": 0}))
	must(st.SetSendingLimits(ctx, "jan@firma.cz", map[string]int64{"recipients_per_hour": 700}))
	want("jan@firma.cz", map[string]int64{"recipients_per_hour": 700, "messages_per_hour": 0})
	must(st.SetSendingLimits(ctx, "FIRMA.cz", map[string]int64{"recipients_per_day": 5}))
	want("firma.cz", map[string]int64{"recipients_per_day": 5})

	must(st.ClearSendingLimits(ctx, "jan@firma.cz", []string{"messages_per_hour", "not_set"}))
	want("jan@firma.cz", map[string]int64{"recipients_per_hour": 700})
	must(st.ClearSendingLimits(ctx, "jan@firma.cz", nil))
	want("jan@firma.cz", map[string]int64{})

	for _, name := range []string{"nikdo@firma.cz", "jina.cz", "nikdo@jina.cz"} {
		if err := st.SetSendingLimits(ctx, name, map[string]int64{"messages_per_hour": 1}); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("SetSendingLimits(%s) = %v, want ErrNotFound", name, err)
		}
	}
	if err := st.SetSendingLimits(ctx, "firma.com", map[string]int64{"messages_per_hour": 1}); !errors.Is(err, directory.ErrConflict) {
		t.Errorf("alias: %v, want ErrConflict", err)
	}
	if _, err := st.SendingLimits(ctx, "bad..domain"); err == nil {
		t.Error("a malformed name was taken")
	}

	// Removed and added again, an account or domain starts without the
	// overrides of its namesake.
	must(st.SetSendingLimits(ctx, "jan@firma.cz", map[string]int64{"messages_per_hour": 9}))
	must(st.RemoveAccount(ctx, "jan@firma.cz"))
	must(st.AddAccount(ctx, "jan@firma.cz", "{BLF-CRYPT}x"))
	want("jan@firma.cz", map[string]int64{})
	must(st.RemoveDomain(ctx, "firma.cz", true))
	must(st.AddDomain(ctx, "firma.cz"))
	want("firma.cz", map[string]int64{})
}

// TestSendingLimitsAnnounced: a change of overrides reaches the directory's
// change feed, on SQLite and PostgreSQL alike, as a change that is not the
// account's own (credentials stay cached).
func TestSendingLimitsAnnounced(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) (sendingStore, directory.Feed){
		"sqlite": func(t *testing.T) (sendingStore, directory.Feed) {
			st := openSQLite(t)
			w, err := directory.NewWatcher(context.Background(), st, directory.WatcherConfig{}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			return st, w
		},
		"postgres": func(t *testing.T) (sendingStore, directory.Feed) {
			st := openPostgres(t)
			return st, directory.NewListener(st.Pool(), slog.New(slog.DiscardHandler))
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, feed := open(t)
			got := make(chan directory.Change, 1000)
			feed.Subscribe(func(ch directory.Change) { got <- ch })
			done := make(chan struct{})
			go func() { defer close(done); feed.Run(ctx) }()
			defer func() { cancel(); <-done }()
			if err := st.AddDomain(ctx, "firma.cz"); err != nil {
				t.Fatal(err)
			}
			// A feed may take a moment to start following (a LISTEN to be
			// in force): overrides are set until a change arrives.
			for i := range 100 {
				if err := st.SetSendingLimits(ctx, "firma.cz", map[string]int64{"messages_per_hour": int64(i)}); err != nil {
					t.Fatal(err)
				}
				wait := time.After(50 * time.Millisecond)
				for {
					select {
					case ch := <-got:
						if ch.Kind != directory.ChangeSendingLimits {
							continue
						}
						if ch.Name != "firma.cz" || ch.Domain != "firma.cz" || ch.IsAccount() {
							t.Fatalf("change %+v", ch)
						}
						return
					case <-wait:
					}
					break
				}
			}
			t.Fatal("no change arrived through the feed within 5s")
		})
	}
}
