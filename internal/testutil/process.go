package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// process is an outside server a test runs (PostgreSQL, Redis) that it can
// stop and start again on the same port and data, as a fault test needs.
type process struct {
	// name says what runs, in errors.
	name string
	// logPath receives the server's output.
	logPath string
	// command builds the command of each start.
	command func() *exec.Cmd
	// ready reports whether the started server answers.
	ready func() error
	// within is how long a start may take before it is a failure.
	within time.Duration
	// stop is the signal that ends the server at once.
	stop syscall.Signal
	// run holds the running server process, nil while stopped.
	run *exec.Cmd
	// exited is closed when run's process has ended.
	exited chan struct{}
	// mu serializes start and halt.
	mu sync.Mutex
}

// start starts the server unless it runs and waits until ready holds; a
// server that exits first is reported with its log.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil {
		return nil
	}
	cmd := p.command()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// The server dies with the test binary even if it is killed: the
	// parent-death signal is tied to the starting thread, which
	// startLocked keeps for the life of the process.
	cmd.SysProcAttr.Pdeathsig = p.stop
	logf, err := os.Create(p.logPath)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := startLocked(cmd); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	p.run, p.exited = cmd, exited
	deadline := time.Now().Add(p.within)
	for {
		err := p.ready()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(p.logPath)
			p.run = nil
			return fmt.Errorf("%s exited: %s", p.name, log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready: %v", p.name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// halt ends the server at once with the stop signal, as when its machine
// fails, killing it if it has not gone within 30 seconds.
func (p *process) halt() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return
	}
	p.run.Process.Signal(p.stop)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.run.Process.Kill()
		<-p.exited
	}
	p.run = nil
}

// startLocked starts cmd from a goroutine whose OS thread stays locked and
// alive until the process ends, so the child's parent-death signal fires
// only when the test binary itself dies.
func startLocked(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		// Keep this thread until the process ends; Wait runs elsewhere.
		for {
			if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	return <-errc
}
