package guard

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/redisconn"
	"submitd/internal/testutil"
)

// backend is one kind of guard store for the test suite that every store
// passes: open gives another view of the same state, as a restarted server,
// the CLI or another node has it.
type backend struct {
	// name is the subtest's name.
	name string
	// open returns a store on the backend's state for a guard with cfg, or
	// nil for the memory-only guard.
	open func(t testing.TB, cfg Config) Store
}

// storeSeq numbers the Redis stores of a test, so the cases of one test
// share a redis-server without sharing state.
var storeSeq atomic.Int64

// eachBackend runs f once per backend in kinds ("memory", "sqlite",
// "redis"). The Redis one runs on a real redis-server of the test's own.
func eachBackend(t *testing.T, kinds []string, f func(t *testing.T, b backend)) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) { f(t, backendOf(t, kind)) })
	}
}

// backendOf makes a backend of kind for tb.
func backendOf(tb testing.TB, kind string) backend {
	b := backend{name: kind}
	switch kind {
	case "memory":
		b.open = func(testing.TB, Config) Store { return nil }
	case "sqlite":
		dir := tb.TempDir()
		b.open = func(t testing.TB, _ Config) Store { return openStore(t, dir) }
	case "redis":
		url := testutil.StartRedis(tb).URL()
		name := fmt.Sprintf("guard%d", storeSeq.Add(1))
		b.open = func(t testing.TB, cfg Config) Store { return openRedis(t, url, name, cfg) }
	default:
		tb.Fatalf("no backend %q", kind)
	}
	return b
}

// The kinds of backend.
var (
	allBackends     = []string{"memory", "sqlite", "redis"}
	durableBackends = []string{"sqlite", "redis"}
)

// openRedis opens the guard store called name on the redis-server at url.
func openRedis(t testing.TB, url, name string, cfg Config) *Redis {
	t.Helper()
	c, err := redisconn.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	st, err := NewRedis(c, name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// follow runs g.Run until the test ends, so that changes made elsewhere
// reach g: by pub/sub for Redis, by polling the change log for SQLite.
func follow(t testing.TB, g *Guard) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// fastPoll is the poll interval of guards that follow a store in tests.
const fastPoll = 5 * time.Millisecond
