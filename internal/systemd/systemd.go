// Package systemd speaks the two small protocols a service shares with
// systemd, written out here rather than taken from a library: socket
// activation (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and
// readiness notification (sd_notify(3): datagrams to $NOTIFY_SOCKET).
//
// The same socket-passing protocol carries a running server's listening
// sockets to the process that takes over from it (submitd restart), so that
// connections arriving meanwhile wait in the kernel's listen backlog. Go
// cannot set LISTEN_PID to the child's pid between fork and exec, so such a
// child gets HandoverEnv instead: the pid of the parent that passed the
// sockets, which the child checks against its own parent.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first passed descriptor (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// maxFDs bounds LISTEN_FDS: a service takes a handful of sockets, and a
// larger number is a damaged environment, not a reason to touch thousands
// of descriptors.
const maxFDs = 64

// HandoverEnv names the variable that stands for LISTEN_PID when a running
// submitd passes its sockets to the process that replaces it: its value is
// the passing process's pid, which must be the receiver's parent.
const HandoverEnv = "SUBMITD_LISTEN_PPID"

// Socket is one passed listening socket.
type Socket struct {
	// Name is its name from LISTEN_FDNAMES (FileDescriptorName= of the
	// .socket unit), "unknown" when none was given.
	Name string
	// File is the descriptor.
	File *os.File
}

// Environment is the part of the process environment the protocols read;
// tests pass their own.
type Environment struct {
	// Getenv reads a variable; os.Getenv in a real process.
	Getenv func(string) string
	// Pid and Ppid are the process's and its parent's ids.
	Pid, Ppid int
}

// Process is the real process's environment.
func Process() Environment {
	return Environment{Getenv: os.Getenv, Pid: os.Getpid(), Ppid: os.Getppid()}
}

// Listeners returns the sockets passed to this process, in descriptor
// order, and unsets the variables so that no process this one starts takes
// them for its own (sd_listen_fds with unset_environment). Sockets are
// passed by systemd when LISTEN_PID is this process's pid, or by the
// process this one takes over from when HandoverEnv is its parent's pid;
// otherwise there are none. Each descriptor is marked close-on-exec.
func Listeners() ([]Socket, error) {
	socks, err := ListenersFrom(Process())
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", HandoverEnv} {
		os.Unsetenv(v)
	}
	return socks, err
}

// ListenersFrom is Listeners for the environment env; it leaves the
// variables as they are.
func ListenersFrom(env Environment) ([]Socket, error) {
	names, err := parseEnv(env)
	if err != nil || len(names) == 0 {
		return nil, err
	}
	socks := make([]Socket, len(names))
	for i, name := range names {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		socks[i] = Socket{Name: name, File: os.NewFile(uintptr(fd), name)}
	}
	return socks, nil
}

// parseEnv checks that the sockets in env are meant for this process and
// returns their names, one per socket ("unknown" where LISTEN_FDNAMES has
// none); none when they are not this process's.
func parseEnv(env Environment) ([]string, error) {
	fds := env.Getenv("LISTEN_FDS")
	if fds == "" {
		return nil, nil
	}
	switch pid, ppid := env.Getenv("LISTEN_PID"), env.Getenv(HandoverEnv); {
	case pid != "":
		if pid != strconv.Itoa(env.Pid) {
			// sd_listen_fds(3): the sockets are another process's, left in
			// an environment this one inherited.
			return nil, nil
		}
	case ppid != "":
		if ppid != strconv.Itoa(env.Ppid) {
			return nil, nil
		}
	default:
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > maxFDs {
		return nil, fmt.Errorf("systemd: LISTEN_FDS=%q: want a number of sockets from 0 to %d", fds, maxFDs)
	}
	var given []string
	if v := env.Getenv("LISTEN_FDNAMES"); v != "" {
		given = strings.SplitN(v, ":", n+1)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = "unknown"
		if i < len(given) && given[i] != "" && !strings.Contains(given[i], ":") {
			names[i] = given[i]
		}
	}
	return names, nil
}

// ListenerEnv is the environment that passes socks to a child process whose
// ExtraFiles are the sockets' files in the same order (so that the first is
// descriptor 3): LISTEN_FDS, LISTEN_FDNAMES and HandoverEnv with this
// process's pid. The variables env had for these names are left out.
func ListenerEnv(env []string, socks []Socket) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", HandoverEnv:
		default:
			out = append(out, kv)
		}
	}
	names := make([]string, len(socks))
	for i, s := range socks {
		names[i] = s.Name
	}
	return append(out,
		"LISTEN_FDS="+strconv.Itoa(len(socks)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
		HandoverEnv+"="+strconv.Itoa(os.Getpid()))
}

// ErrNoSocket means $NOTIFY_SOCKET is unset: no service manager listens.
var ErrNoSocket = errors.New("systemd: NOTIFY_SOCKET is not set")

// Notifier sends sd_notify messages.
type Notifier struct {
	// Socket is the notification socket's address: a path, or an abstract
	// name starting with "@"; "" sends nothing.
	Socket string
}

// NewNotifier returns the notifier of $NOTIFY_SOCKET, which it leaves set:
// the process that takes over from this one inherits the service manager.
func NewNotifier() *Notifier { return &Notifier{Socket: os.Getenv("NOTIFY_SOCKET")} }

// Notify sends one message of newline-separated KEY=VALUE assignments. It
// returns ErrNoSocket when there is no service manager, which callers that
// run with or without one ignore.
func (n *Notifier) Notify(state string) error {
	if n == nil || n.Socket == "" {
		return ErrNoSocket
	}
	// A name starting with "@" is an abstract socket, which the net
	// package turns into the leading NUL the kernel wants.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Net: "unixgram", Name: n.Socket})
	if err != nil {
		return fmt.Errorf("systemd: notify %s: %w", n.Socket, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("systemd: notify %s: %w", n.Socket, err)
	}
	return nil
}

// Ready says the service has started (READY=1), with its main pid, so that
// a process that took over from another becomes the one systemd follows.
func (n *Notifier) Ready(status string) error {
	return n.Notify(fmt.Sprintf("READY=1\nMAINPID=%d\nSTATUS=%s", os.Getpid(), oneLine(status)))
}

// Reloading says a reload of the configuration begins (RELOADING=1). It
// carries MONOTONIC_USEC, which systemd 253 and later require of a service
// of Type=notify-reload; Ready ends the reload.
func (n *Notifier) Reloading() error {
	return n.Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
}

// Stopping says the service is shutting down (STOPPING=1).
func (n *Notifier) Stopping(status string) error {
	return n.Notify("STOPPING=1\nSTATUS=" + oneLine(status))
}

// Status sets the one-line status "systemctl status" shows (STATUS=).
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + oneLine(status)) }

// MainPID names pid as the service's main process (MAINPID=): the process
// that hands its sockets over sends it, so that systemd follows the new
// process and does not take the old one's exit for the service's.
func (n *Notifier) MainPID(pid int) error { return n.Notify("MAINPID=" + strconv.Itoa(pid)) }

// oneLine keeps a status to one line: a newline would start a new
// assignment.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// monotonicUsec reads CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / int64(time.Microsecond)
}
