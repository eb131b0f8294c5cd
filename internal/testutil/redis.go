package testutil

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server a test started for itself on a loopback port it
// chose, keeping nothing on disk. Fault tests stop and start it on the same
// port, as when a Redis machine goes away and comes back.
type Redis struct {
	// Addr is host:port of the server.
	Addr string
	// bin is the redis-server program.
	bin string
	// dir is the server's working directory.
	dir string
	// proc runs the server.
	proc process
}

// StartRedis starts a redis-server for this test and stops it when the test
// ends. The test is skipped when redis-server is not installed (failed
// under CI=true, where .ci/run installs the redis-server package).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := NeedTool(t, "redis-server")
	r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "127.0.0.1"))), bin: bin, dir: t.TempDir()}
	_, port, _ := net.SplitHostPort(r.Addr)
	r.proc = process{
		name: "redis-server on " + r.Addr, logPath: filepath.Join(r.dir, "redis.log"), within: 20 * time.Second,
		stop: syscall.SIGKILL,
		command: func() *exec.Cmd {
			return exec.Command(r.bin, "--bind", "127.0.0.1", "--port", port, "--save", "",
				"--appendonly", "no", "--dir", r.dir, "--protected-mode", "no", "--loglevel", "warning")
		},
		ready: r.ping,
	}
	if err := r.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// URL returns the redis:// URL of the server, as [guard] redis_url takes it.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Start starts the server (again, after Stop) and waits until it answers
// PING. A restarted server is empty, as a Redis without persistence is.
func (r *Redis) Start() error { return r.proc.start() }

// ping sends one PING in the Redis protocol and expects +PONG.
func (r *Redis) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop kills the server at once, as when its machine fails.
func (r *Redis) Stop() { r.proc.halt() }
