package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"submitd/internal/node"
)

func init() {
	register(&command{
		name:    "restart",
		summary: "hand the running server over to a new process of its binary, keeping its sockets open",
		usage:   "restart [-wait DURATION]",
		run:     runRestart,
	})
}

// runRestart asks the running server to start its binary anew with its
// listening sockets (internal/handover), then waits until the new process
// answers on the control socket.
func runRestart(e *env, args []string) error {
	wait := e.fs.Duration("wait", 2*time.Minute, "how long to wait for the new process to serve")
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, 0); err != nil {
		return err
	}
	cfg, err := e.config()
	if err != nil {
		return err
	}
	// Only a running server can be restarted: the stores are not opened
	// in-process as other commands do when none runs.
	sock := node.SocketPath(cfg)
	c, err := dialServer(sock, time.Minute)
	if err != nil {
		return errors.New("no server runs on this data_dir; start it with \"submitd serve\"")
	}
	defer c.done()
	var r struct {
		Result string `json:"result"`
		PID    int    `json:"pid"`
	}
	if err := c.call("POST", "/api/v1/restart", nil, &r); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, r.Result)
	// The new process binds the control socket once the old one has let
	// go of the spool; the socket's owner then is the new process.
	deadline := time.Now().Add(*wait)
	for {
		if pid, err := socketOwner(sock); err == nil && pid == r.PID {
			fmt.Fprintf(e.stdout, "process %d serves\n", pid)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d does not answer on %s after %s; the server's log says why", r.PID, sock, *wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// socketOwner returns the pid of the process listening on the unix socket
// at path, which the kernel records at connect (SO_PEERCRED).
func socketOwner(path string) (int, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return int(cred.Pid), nil
}
