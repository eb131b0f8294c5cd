// Package handover replaces a running submitd with a new process of the
// binary at the same path without closing its listening sockets: the new
// process inherits them (internal/systemd's socket passing), so a client
// that connects meanwhile waits in the kernel's listen backlog instead of
// being refused.
//
// The two processes talk over a socket pair, one line at a time:
//
//	child:  "prepared" — it has read and checked its configuration and
//	        opened what it can open beside a running server; it waits.
//	parent: stops accepting, lets its sessions and deliveries finish,
//	        closes its spool, stores and control socket, then "released".
//	child:  takes the spool lock and the control socket, serves, "ready".
//
// The spool admits one server at a time (its lock), so the handover is
// sequential: no message is in two queues, and one acknowledged in either
// process is in the spool the other loads. A child that fails before
// "prepared" changes nothing: the parent keeps serving. The parent's exit
// (a crash included) closes its end of the pair, which the child takes as
// "released": the kernel has freed its locks by then.
package handover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"submitd/internal/systemd"
)

// FDEnv names the variable that gives the child the descriptor of its end
// of the socket pair.
const FDEnv = "SUBMITD_HANDOVER_FD"

// The protocol's lines.
const (
	linePrepared = "prepared"
	lineReleased = "released"
	lineReady    = "ready"
)

// Child is a process started to take over from this one.
type Child struct {
	// proc is the started process.
	proc *os.Process
	// conn is this process's end of the pair.
	conn net.Conn
	// r reads the child's lines.
	r *bufio.Reader
	// exited is closed once the process has ended.
	exited chan struct{}
	// err is how it ended, once exited is closed.
	err error
}

// Start starts the binary at this process's path (os.Executable: an
// upgrade has replaced the file there) with this process's arguments and
// environment, socks passed as inherited listening sockets (the files are
// the caller's to close once Start returns). Its output goes where this
// process's goes.
//
// It forks with syscall.StartProcess rather than os/exec: os/exec takes
// each passed file's descriptor with File.Fd, which puts it in blocking
// mode, and that mode belongs to the socket, shared with this process's
// listener. A listener left blocking (when the new process fails before
// it makes its copy non-blocking again) blocks its accept loop in the
// kernel, and then its Close for good.
func Start(socks []systemd.Socket) (*Child, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("handover: socket pair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "handover"), os.NewFile(uintptr(fds[1]), "handover-child")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	files := []uintptr{0, 1, 2}
	for _, s := range socks {
		fd, err := rawFD(s.File)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("handover: socket %s: %w", s.Name, err)
		}
		files = append(files, fd)
	}
	files = append(files, uintptr(fds[1]))
	env := append(systemd.ListenerEnv(os.Environ(), socks), FDEnv+"="+strconv.Itoa(len(files)-1))
	pid, err := syscall.ForkExec(bin, os.Args, &syscall.ProcAttr{Env: env, Files: files})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("handover: start %s: %w", bin, err)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("handover: %w", err)
	}
	c := &Child{proc: proc, conn: conn, r: bufio.NewReader(conn), exited: make(chan struct{})}
	go func() {
		st, err := proc.Wait()
		if err == nil && !st.Success() {
			err = errors.New(st.String())
		}
		c.err = err
		close(c.exited)
	}()
	return c, nil
}

// rawFD returns f's descriptor without File.Fd's switch to blocking mode.
func rawFD(f *os.File) (uintptr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd uintptr
	if err := rc.Control(func(d uintptr) { fd = d }); err != nil {
		return 0, err
	}
	return fd, nil
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.proc.Pid }

// WaitPrepared waits until the child says it is prepared. When it exits
// first, or ctx ends first (the child is then killed), the handover is off
// and the error says why; the caller goes on serving.
func (c *Child) WaitPrepared(ctx context.Context) error {
	err := c.expect(ctx, linePrepared)
	if err == nil {
		return nil
	}
	c.proc.Kill()
	<-c.exited
	c.conn.Close()
	if c.err != nil {
		return fmt.Errorf("the new process %d failed before it was ready to take over (%v); its log says why", c.Pid(), c.err)
	}
	return fmt.Errorf("the new process %d: %w", c.Pid(), err)
}

// Released tells the child that this process has let go of the spool and
// the control socket.
func (c *Child) Released() error {
	_, err := c.conn.Write([]byte(lineReleased + "\n"))
	return err
}

// WaitReady waits until the child serves, and reports its failure when it
// exits or ctx ends first. It closes this process's end of the pair.
func (c *Child) WaitReady(ctx context.Context) error {
	defer c.conn.Close()
	if err := c.expect(ctx, lineReady); err != nil {
		select {
		case <-c.exited:
			return fmt.Errorf("the new process %d exited after it took over (%v); its log says why", c.Pid(), c.err)
		default:
		}
		return fmt.Errorf("the new process %d: %w", c.Pid(), err)
	}
	return nil
}

// expect reads one line from the child and checks that it is want.
func (c *Child) expect(ctx context.Context, want string) error {
	type answer struct {
		line string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		l, err := c.r.ReadString('\n')
		got <- answer{strings.TrimSpace(l), err}
	}()
	select {
	case a := <-got:
		switch {
		case a.err != nil:
			return fmt.Errorf("ended without saying %q: %w", want, a.err)
		case a.line != want:
			return fmt.Errorf("said %q, want %q", a.line, want)
		}
		return nil
	case <-ctx.Done():
		// Unblocks the reader.
		c.conn.SetReadDeadline(time.Now())
		<-got
		return fmt.Errorf("did not say %q in time: %w", want, ctx.Err())
	}
}

// Parent is the process this one takes over from.
type Parent struct {
	// conn is this process's end of the pair.
	conn net.Conn
}

// FromParent returns the parent this process takes over from, or nil when
// it was started otherwise (systemd, a shell). It unsets FDEnv so that no
// process this one starts takes the descriptor for its own.
func FromParent() (*Parent, error) {
	v := os.Getenv(FDEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(FDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("handover: %s=%q is not a descriptor", FDEnv, v)
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "handover")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("handover: %s=%d: %w", FDEnv, fd, err)
	}
	return &Parent{conn: conn}, nil
}

// Prepared tells the parent to let go and waits until it has: until it
// says "released", or its end closes because it exited.
func (p *Parent) Prepared() error {
	if _, err := p.conn.Write([]byte(linePrepared + "\n")); err != nil {
		return fmt.Errorf("handover: the old process: %w", err)
	}
	l, err := bufio.NewReader(p.conn).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("handover: the old process: %w", err)
	}
	if l = strings.TrimSpace(l); l != lineReleased && l != "" {
		return fmt.Errorf("handover: the old process said %q, want %q", l, lineReleased)
	}
	return nil
}

// Ready tells the parent that this process serves, and closes the pair.
func (p *Parent) Ready() {
	p.conn.Write([]byte(lineReady + "\n"))
	p.conn.Close()
}

// Close closes the pair without saying ready: the parent learns this
// process failed.
func (p *Parent) Close() { p.conn.Close() }
