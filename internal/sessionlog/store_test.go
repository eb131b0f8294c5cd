package sessionlog_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"submitd/internal/pgdb/pgtest"
	"submitd/internal/sessionlog"
	"submitd/internal/sessionlog/storetest"
	"submitd/internal/testutil"
)

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		st, err := sessionlog.NewSQLite(context.Background(), testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		st, err := sessionlog.NewPostgres(context.Background(), pgtest.Pool(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

// TestWriterHoldsThroughOutage: records closed while PostgreSQL is down are
// held and saved once it is back, so support finds the sessions of an
// outage afterwards.
func TestWriterHoldsThroughOutage(t *testing.T) {
	pg := testutil.StartPostgres(t)
	st, err := sessionlog.NewPostgres(context.Background(), pgtest.PoolOn(t, pg.CreateDB(t)))
	if err != nil {
		t.Fatal(err)
	}
	w := sessionlog.NewWriter(st, 30*24*time.Hour, slog.New(slog.DiscardHandler))
	defer w.Close()
	pg.Stop()
	now := time.Now()
	w.Save(&sessionlog.Record{ID: "outageoutageoutageout1", Start: now, End: now, Listener: "smtp", ClientIP: "192.0.2.1"})
	testutil.WaitFor(t, 10*time.Second, "the record held", func() bool { return w.Stats().Backlog == 1 })
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "the held record saved", func() bool {
		_, err := st.Get(context.Background(), "outageoutageoutageout1")
		return err == nil
	})
	if s := w.Stats(); s.Failed != 0 || s.Backlog != 0 {
		t.Errorf("stats after the outage: %+v", s)
	}
}
