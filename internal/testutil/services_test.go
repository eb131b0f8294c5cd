package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresStartStop checks the private cluster serves, refuses while
// stopped, and serves the same data after a restart.
func TestPostgresStartStop(t *testing.T) {
	pg := StartPostgres(t)
	dsn := pg.CreateDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec := func(q string) error {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, q)
		return err
	}
	if err := exec("CREATE TABLE x (v int); INSERT INTO x VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	pg.Stop()
	if err := exec("SELECT 1"); err == nil {
		t.Fatal("stopped PostgreSQL still answered")
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := exec("SELECT v FROM x"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if a, b := PostgresDSN(t), PostgresDSN(t); a == b {
		t.Fatalf("two tests got the same database %s", a)
	}
}

// TestRedisStartStop checks the server answers, stops answering, and
// answers again after a restart on the same port.
func TestRedisStartStop(t *testing.T) {
	r := StartRedis(t)
	if err := r.ping(); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if err := r.ping(); err == nil {
		t.Fatal("stopped redis-server still answered")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := r.ping(); err != nil {
		t.Fatal(err)
	}
}
