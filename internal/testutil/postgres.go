package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a PostgreSQL server a test started for itself: a throwaway
// cluster in a temporary directory, listening on a loopback port the test
// chose, with trust authentication for the superuser "submitd". Fault tests
// stop and start it; everything else takes a fresh database on the cluster
// shared by the test binary (PostgresDSN).
type Postgres struct {
	// Addr is host:port of the server.
	Addr string
	// dir holds the cluster's data and socket directories.
	dir string
	// bin is the directory of initdb and postgres.
	bin string
	// proc runs the server.
	proc process
}

// pgBinDir finds the directory holding Debian's PostgreSQL programs (the
// newest version installed), or "" when there is none.
func pgBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

// needPostgres returns the PostgreSQL program directory or skips the test
// (fails it under CI=true, where .ci/run installs the postgresql package).
func needPostgres(t testing.TB) string {
	t.Helper()
	bin := pgBinDir()
	if bin != "" {
		return bin
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL (Debian package postgresql: initdb, postgres) not found (CI=true)")
	}
	t.Skipf("skipping: PostgreSQL not installed (Debian package postgresql: initdb and postgres under /usr/lib/postgresql)")
	return ""
}

// runAs returns the credential to run PostgreSQL with: it refuses to run as
// root, so as root the server runs as the "postgres" user (or "nobody").
func runAs() *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return &syscall.Credential{Uid: 65534, Gid: 65534}
}

// StartPostgres starts a private PostgreSQL cluster for this test and stops
// it when the test ends. Use it where the test stops and starts the server;
// otherwise PostgresDSN is cheaper.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := needPostgres(t)
	dir, err := os.MkdirTemp("", "submitd-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPostgres(bin, dir, FreePort(t, "127.0.0.1"))
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		p.Stop()
		os.RemoveAll(dir)
	})
	return p
}

// newPostgres initializes a cluster in dir and starts it on port.
func newPostgres(bin, dir string, port int) (*Postgres, error) {
	cred := runAs()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, sub := range []string{"data", "run"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
		if cred != nil {
			if err := os.Chown(filepath.Join(dir, sub), int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "submitd", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	p := &Postgres{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, bin: bin}
	p.proc = process{
		name: "postgres on " + p.Addr, logPath: filepath.Join(dir, "postgres.log"), within: 60 * time.Second,
		// SIGQUIT is PostgreSQL's immediate shutdown.
		stop: syscall.SIGQUIT,
		command: func() *exec.Cmd {
			cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", filepath.Join(dir, "data"),
				"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-k", filepath.Join(dir, "run"),
				"-c", "fsync=off", "-c", "full_page_writes=off",
				"-c", "max_connections=200", "-c", "shared_buffers=32MB", "-c", "log_min_messages=fatal")
			cmd.Dir = dir
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: runAs()}
			return cmd
		},
		ready: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, p.DSN("postgres"))
			if err != nil {
				return err
			}
			return c.Close(ctx)
		},
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// DSN returns a connection string for database db on this server.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://submitd@%s/%s?sslmode=disable", p.Addr, db)
}

// Start starts the server (again, after Stop) on the same port and data,
// and waits until it accepts connections.
func (p *Postgres) Start() error { return p.proc.start() }

// Stop stops the server at once (the "immediate" shutdown: clients see
// their connections cut, as when a database machine fails).
func (p *Postgres) Stop() { p.proc.halt() }

// CreateDB creates a fresh, empty database on the server and returns its DSN.
func (p *Postgres) CreateDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect to PostgreSQL on %s: %v", p.Addr, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return p.DSN(name)
}

// dbSeq numbers the databases CreateDB makes in this test binary.
var dbSeq atomic.Int64

// shared is the cluster PostgresDSN hands databases out of, started on first
// use and left to die with the test binary.
var shared struct {
	once sync.Once
	pg   *Postgres
	err  error
}

// PostgresDSN returns the DSN of a fresh, empty database for this test on a
// PostgreSQL cluster shared by the test binary. The test is skipped when
// PostgreSQL is not installed (failed under CI=true).
func PostgresDSN(t testing.TB) string {
	t.Helper()
	bin := needPostgres(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "submitd-pg-shared-")
		if err != nil {
			shared.err = err
			return
		}
		shared.pg, shared.err = newPostgres(bin, dir, FreePort(t, "127.0.0.1"))
	})
	if shared.err != nil {
		t.Fatalf("start shared PostgreSQL: %v", shared.err)
	}
	return shared.pg.CreateDB(t)
}
