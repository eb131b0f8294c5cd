package pgdb_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"

	"submitd/internal/pgdb"
	"submitd/internal/testutil"
)

func open(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	p, err := pgdb.Open(context.Background(), pgdb.Options{DSN: dsn, MaxConns: 4, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestMigrateConcurrent: eight nodes starting at once on one database each
// migrate; every one succeeds, each step runs once, and a later start finds
// nothing to do.
func TestMigrateConcurrent(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	steps := []string{
		`CREATE TABLE widgets (id INTEGER PRIMARY KEY)`,
		`INSERT INTO widgets VALUES (1)`,
		`ALTER TABLE widgets ADD COLUMN name TEXT NOT NULL DEFAULT 'x'`,
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		p := open(t, dsn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pgdb.Migrate(context.Background(), p, "widgets", steps)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
	p := open(t, dsn)
	ctx := context.Background()
	var rows, version int
	if err := p.QueryRow(ctx, `SELECT count(*) FROM widgets`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("widgets rows = %d, %v; want 1 (the insert ran once)", rows, err)
	}
	if err := p.QueryRow(ctx, `SELECT version FROM schema_migrations WHERE component = 'widgets'`).Scan(&version); err != nil || version != 3 {
		t.Fatalf("version = %d, %v; want 3", version, err)
	}
	// A binary that knows fewer steps refuses a newer schema.
	if err := pgdb.Migrate(ctx, p, "widgets", steps[:2]); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("older binary on a newer schema: %v", err)
	}
	// A failing step leaves the schema as it was.
	bad := append(append([]string(nil), steps...), `ALTER TABLE widgets ADD COLUMN id2 INTEGER`, `NOT SQL`)
	if err := pgdb.Migrate(ctx, p, "widgets", bad); err == nil || !strings.Contains(err.Error(), "version 5") {
		t.Fatalf("failing step: %v", err)
	}
	var cols int
	p.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'widgets' AND column_name = 'id2'`).Scan(&cols)
	if cols != 0 {
		t.Error("step 4 of a failed migration stayed applied")
	}
}

// TestOpenBadDSN: a DSN that does not parse is reported without its
// contents, which may hold the password.
func TestOpenBadDSN(t *testing.T) {
	_, err := pgdb.Open(context.Background(), pgdb.Options{DSN: "postgres://u:s3cret@[::1:5432/x"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Open = %v", err)
	}
}

// TestListenerReconnects: the listener hears notifications, and after the
// server was down it is back by itself, saying so (Connected), so that its
// user forgets what it may have missed.
func TestListenerReconnects(t *testing.T) {
	pg := testutil.StartPostgres(t)
	p := open(t, pg.CreateDB(t))
	var connected atomic.Int32
	got := make(chan string, 10)
	l := &pgdb.Listener{Pool: p, Channel: "test_channel", Log: slog.New(slog.DiscardHandler),
		Notify:    func(s string) { got <- s },
		Connected: func() { connected.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	notify := func(payload string) {
		t.Helper()
		testutil.WaitFor(t, 20*time.Second, "a notification through the listener", func() bool {
			if _, err := p.Exec(context.Background(), `SELECT pg_notify('test_channel', $1)`, payload); err != nil {
				return false
			}
			select {
			case s := <-got:
				return s == payload
			case <-time.After(200 * time.Millisecond):
				return false
			}
		})
	}
	notify("one")
	if n := connected.Load(); n != 1 {
		t.Fatalf("Connected called %d times, want 1", n)
	}
	pg.Stop()
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	notify("two")
	if n := connected.Load(); n != 2 {
		t.Fatalf("Connected called %d times after a restart, want 2", n)
	}
}

// FuzzText: whatever the input, the result is valid UTF-8 without NUL, and
// text that already was is left as it is.
func FuzzText(f *testing.F) {
	for _, s := range []string{"", "laptop", "a\x00b", "\xff\xfe", "jiří", "\xc3(", "ok\x00\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := pgdb.Text(s)
		if !utf8.ValidString(out) || strings.ContainsRune(out, 0) {
			t.Fatalf("Text(%q) = %q", s, out)
		}
		if utf8.ValidString(s) && !strings.ContainsRune(s, 0) && out != s {
			t.Fatalf("Text(%q) changed valid text to %q", s, out)
		}
	})
}
