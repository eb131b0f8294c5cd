package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"submitd/internal/admin"
	"submitd/internal/handover"
	"submitd/internal/systemd"
)

// Options are what a node takes from the process that runs it besides its
// configuration.
type Options struct {
	// Sockets are listening sockets passed to the process, by systemd's
	// socket activation or by the process this one takes over from, named
	// smtp, submission, submissions and admin. A listener with a passed
	// socket serves on it instead of binding its configured address.
	Sockets []systemd.Socket
	// Parent is the process this one takes over from (submitd restart);
	// nil when there is none.
	Parent *handover.Parent
	// Notifier tells a service manager of readiness and shutdown; nil
	// tells nobody.
	Notifier *systemd.Notifier
}

// prepareTimeout bounds how long Restart waits for the new process to read
// its configuration and open its stores.
const prepareTimeout = time.Minute

// readyTimeout bounds how long a node that handed over waits, after it let
// go of the spool, for the new process to serve; it only decides what the
// old process logs before it exits.
const readyTimeout = time.Minute

// passed is a passed socket not yet taken by a listener.
type passed struct {
	// name is its name in LISTEN_FDNAMES.
	name string
	// ln is the socket as a listener.
	ln net.Listener
}

// listenerNames are the names a passed socket may have.
var listenerNames = map[string]bool{"smtp": true, "submission": true, "submissions": true, "admin": true}

// openPassed turns the passed sockets into listeners.
func (n *Node) openPassed() error {
	for _, s := range n.opts.Sockets {
		ln, err := net.FileListener(s.File)
		s.File.Close()
		if err != nil {
			return fmt.Errorf("passed socket %s: %w", s.Name, err)
		}
		n.passed = append(n.passed, passed{name: s.Name, ln: ln})
	}
	n.opts.Sockets = nil
	return nil
}

// takeSocket returns the passed socket for the listener name configured
// at addr, or nil when none was passed: the one named name, else one with
// a name that is no listener's (a .socket unit names all its sockets
// alike) bound to addr's port, and to its IP unless addr's is unspecified.
// The socket is taken: it is returned once.
func (n *Node) takeSocket(name, addr string) net.Listener {
	match := func(p passed) bool { return p.name == name }
	if !slices.ContainsFunc(n.passed, match) {
		want, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil
		}
		match = func(p passed) bool {
			got, err := netip.ParseAddrPort(p.ln.Addr().String())
			return err == nil && !listenerNames[p.name] && got.Port() == want.Port() &&
				(want.Addr().IsUnspecified() || got.Addr().Unmap() == want.Addr().Unmap())
		}
	}
	i := slices.IndexFunc(n.passed, match)
	if i < 0 {
		return nil
	}
	ln := n.passed[i].ln
	n.passed = slices.Delete(n.passed, i, i+1)
	return ln
}

// closeUnusedSockets closes the passed sockets no listener took, and says
// so: a .socket unit with a socket submitd does not know is a mistake.
func (n *Node) closeUnusedSockets() {
	for _, p := range n.passed {
		n.Log.Warn("a passed socket matches no listener by name (smtp, submission, submissions, admin) or address; closed",
			"name", p.name, "addr", p.ln.Addr().String())
		p.ln.Close()
	}
	n.passed = nil
}

// passedOrListen returns the passed socket for listener name, or binds
// addr when none was passed ("" binds nothing).
func (n *Node) passedOrListen(name, addr string) (net.Listener, error) {
	if ln := n.takeSocket(name, addr); ln != nil {
		if addr != "" && addr != ln.Addr().String() {
			n.Log.Info("serving on the passed socket, not the configured address", "listener", name,
				"socket", ln.Addr().String(), "configured", addr)
		}
		return ln, nil
	}
	if addr == "" {
		return nil, nil
	}
	return net.Listen("tcp", addr)
}

// sockets returns copies of the node's listening sockets, named as the
// socket-passing protocol names them. The caller closes the files.
func (n *Node) sockets() ([]systemd.Socket, error) {
	var out []systemd.Socket
	add := func(name string, ln net.Listener) error {
		fl, ok := ln.(interface{ File() (*os.File, error) })
		if !ok {
			return fmt.Errorf("listener %s cannot be passed on", name)
		}
		f, err := fl.File()
		if err != nil {
			return fmt.Errorf("listener %s: %w", name, err)
		}
		out = append(out, systemd.Socket{Name: name, File: f})
		return nil
	}
	var err error
	for _, l := range n.Listeners {
		if err = add(l.Config.Name, l.Listener); err != nil {
			break
		}
	}
	if err == nil && n.adminTCP != nil {
		err = add("admin", n.adminTCP)
	}
	if err != nil {
		for _, s := range out {
			s.File.Close()
		}
		return nil, err
	}
	return out, nil
}

// Restart hands the node over to a new process of the binary at this
// process's path, which inherits the listening sockets (internal/handover).
// It returns the new process's pid once that process is prepared; Run then
// stops accepting, lets the sessions and deliveries under way finish (a
// session waiting for a command gets 421 and retries), closes the spool and
// stores, and tells the new process to take them. Meanwhile new
// connections wait in the listen backlog. On error nothing changed and this
// node goes on serving.
func (n *Node) Restart(ctx context.Context) (int, error) {
	if !n.restarting.CompareAndSwap(false, true) {
		return 0, admin.ErrRestarting
	}
	socks, err := n.sockets()
	if err != nil {
		n.restarting.Store(false)
		return 0, err
	}
	child, err := handover.Start(socks)
	for _, s := range socks {
		s.File.Close()
	}
	if err != nil {
		n.restarting.Store(false)
		return 0, err
	}
	n.Log.Info("restart: new process started; waiting until it is prepared", "pid", child.Pid())
	pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	if err := child.WaitPrepared(pctx); err != nil {
		n.restarting.Store(false)
		return 0, err
	}
	n.handoff <- child
	return child.Pid(), nil
}

// finishHandover runs once this node has closed everything: it tells the
// new process to take over and waits until it serves.
func (n *Node) finishHandover(child *handover.Child) {
	if err := child.Released(); err != nil {
		n.Log.Error("restart: cannot reach the new process", "pid", child.Pid(), "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := child.WaitReady(ctx); err != nil {
		n.Log.Error("restart: the new process did not take over", "pid", child.Pid(), "err", err)
		return
	}
	n.Log.Info("restart: the new process serves", "pid", child.Pid())
}

// prepared tells the process this one takes over from, if any, to let go
// of the spool, and waits until it has.
func (n *Node) prepared() error {
	if n.opts.Parent == nil {
		return nil
	}
	n.Log.Info("restart: prepared; waiting for the old process to hand over the spool")
	return n.opts.Parent.Prepared()
}

// notify sends one message to the service manager, ignoring its absence.
func (n *Node) notify(f func(*systemd.Notifier) error) {
	if err := f(n.Notifier); err != nil && !errors.Is(err, systemd.ErrNoSocket) {
		n.Log.Warn("cannot notify the service manager", "err", err)
	}
}

// NotifyReloading tells the service manager that a reload of the
// configuration begins (RELOADING=1, with the MONOTONIC_USEC systemd 253's
// Type=notify-reload wants). Call NotifyReady when the reload is over,
// whether it applied the new configuration or kept the old.
func (n *Node) NotifyReloading() { n.notify((*systemd.Notifier).Reloading) }

// NotifyReady tells the service manager that the node serves (READY=1),
// with a one-line status.
func (n *Node) NotifyReady(status string) {
	n.notify(func(sn *systemd.Notifier) error { return sn.Ready(status) })
}
