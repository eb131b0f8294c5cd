package handover

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"submitd/internal/systemd"
)

// childEnv makes the test binary, started by Start, act as the new
// process: "serve" takes over and answers one connection, "fail" exits
// before it is prepared.
const childEnv = "HANDOVER_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "fail":
		fmt.Fprintln(os.Stderr, "child: bad configuration")
		os.Exit(1)
	default:
		serveChild()
	}
}

// serveChild takes over as a new server process does: the sockets, then
// prepared, wait for released, accept, ready.
func serveChild() {
	socks, err := systemd.Listeners()
	if err != nil || len(socks) != 1 {
		os.Exit(2)
	}
	p, err := FromParent()
	if err != nil || p == nil {
		os.Exit(3)
	}
	ln, err := net.FileListener(socks[0].File)
	if err != nil {
		os.Exit(4)
	}
	if err := p.Prepared(); err != nil {
		os.Exit(5)
	}
	p.Ready()
	c, err := ln.Accept()
	if err != nil {
		os.Exit(6)
	}
	fmt.Fprintln(c, "served by the new process")
	c.Close()
	os.Exit(0)
}

// listen binds a loopback listener and returns it with its socket's file.
func listen(t *testing.T) (net.Listener, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	return ln, f
}

// TestHandover: the new process gets the listening socket and says it is
// prepared; the old one closes its own listener; a client that connects
// then is not refused but waits in the backlog, and is served by the new
// process once the old one has released and the new one is ready.
func TestHandover(t *testing.T) {
	t.Setenv(childEnv, "serve")
	ln, f := listen(t)
	child, err := Start([]systemd.Socket{{Name: "smtp", File: f}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.proc.Kill(); <-child.exited })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := child.WaitPrepared(ctx); err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("a client connecting during the handover: %v", err)
	}
	defer c.Close()
	if err := child.Released(); err != nil {
		t.Fatal(err)
	}
	if err := child.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || l != "served by the new process\n" {
		t.Errorf("client got %q, %v", l, err)
	}
}

// TestHandoverChildFails: a new process that exits before it is prepared
// (a broken configuration or binary) calls the handover off with an error
// that says so; the old process's listener goes on accepting, and can
// still be closed while it waits for a connection (its socket left in
// non-blocking mode, which passing it on must not change).
func TestHandoverChildFails(t *testing.T) {
	t.Setenv(childEnv, "fail")
	ln, f := listen(t)
	child, err := Start([]systemd.Socket{{Name: "smtp", File: f}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = child.WaitPrepared(ctx)
	if err == nil || !strings.Contains(err.Error(), "failed before it was ready") {
		t.Fatalf("got %v, want the child's failure", err)
	}
	// O_NONBLOCK belongs to the socket, which the listener shares with the
	// copy passed on: blocking, the listener's accept would wait in the
	// kernel, where its Close cannot end it.
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	rc.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if err != nil || flags&unix.O_NONBLOCK == 0 {
		t.Errorf("the listener's socket is in blocking mode after the handover (flags %#x, %v)", flags, err)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("the old listener after a failed handover: %v", err)
	}
	c.Close()
	ln.Close()
}

// TestFromParentAlone: a process not started by a handover has no parent
// to take over from.
func TestFromParentAlone(t *testing.T) {
	t.Setenv(FDEnv, "")
	if p, err := FromParent(); p != nil || err != nil {
		t.Errorf("got %v, %v", p, err)
	}
	t.Setenv(FDEnv, "two")
	if _, err := FromParent(); err == nil || !strings.Contains(err.Error(), FDEnv) {
		t.Errorf("a damaged %s: %v", FDEnv, err)
	}
}
