package smtpd

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// acceptErr is an accept error as the net package returns it.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestTemporaryAcceptError(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if !temporaryAcceptError(acceptErr(errno)) {
			t.Errorf("%v: not temporary", errno)
		}
	}
	for _, err := range []error{acceptErr(syscall.EBADF), acceptErr(syscall.EINVAL), errors.New("listener broke")} {
		if temporaryAcceptError(err) {
			t.Errorf("%v: temporary", err)
		}
	}
}

func TestAcceptRetryBackoff(t *testing.T) {
	var r acceptRetry
	now := time.Unix(0, 0)
	var waits []time.Duration
	for range 10 {
		w, _ := r.failed(now)
		waits = append(waits, w)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		if waits[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", waits, want)
		}
	}
	r.accepted(now)
	if w, _ := r.failed(now); w != acceptMinDelay {
		t.Errorf("first wait after a successful accept: %v, want %v", w, acceptMinDelay)
	}
}

// A run of errors is logged about once a second, and the lines together
// account for every error.
func TestAcceptRetryLogRate(t *testing.T) {
	var r acceptRetry
	now := time.Unix(0, 0)
	lines, reported, errs := 0, 0, 0
	for now.Before(time.Unix(5, 0)) {
		errs++
		_, n := r.failed(now)
		if n > 0 {
			lines++
			reported += n
		}
		now = now.Add(10 * time.Millisecond)
	}
	n, lasted, ok := r.accepted(now)
	if !ok {
		t.Fatal("no recovery line after a logged run of errors")
	}
	reported += n
	if lines < 5 || lines > 6 {
		t.Errorf("%d error lines over 5s, want about one a second", lines)
	}
	if reported != errs {
		t.Errorf("lines report %d errors, there were %d", reported, errs)
	}
	if lasted != 5*time.Second {
		t.Errorf("run lasted %v, want 5s", lasted)
	}
	if _, _, ok := r.accepted(now.Add(time.Millisecond)); ok {
		t.Error("a second recovery line without errors between")
	}
}

// Accepts that fail and succeed in turn, as at the edge of the descriptor
// limit, still give only a few lines a second.
func TestAcceptRetryFlapping(t *testing.T) {
	var r acceptRetry
	now := time.Unix(0, 0)
	lines := 0
	for now.Before(time.Unix(10, 0)) {
		if _, n := r.failed(now); n > 0 {
			lines++
		}
		now = now.Add(time.Millisecond)
		if _, _, ok := r.accepted(now); ok {
			lines++
		}
		now = now.Add(time.Millisecond)
	}
	if lines > 22 {
		t.Errorf("%d lines in 10s of flapping, want at most about two a second", lines)
	}
}

// scriptListener returns the errors in errs from Accept, in order, then
// net.ErrClosed.
type scriptListener struct {
	errs []error
}

func (l *scriptListener) Accept() (net.Conn, error) {
	if len(l.errs) == 0 {
		return nil, net.ErrClosed
	}
	err := l.errs[0]
	l.errs = l.errs[1:]
	return nil, err
}

func (l *scriptListener) Close() error   { return nil }
func (l *scriptListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// Serve waits out temporary errors and returns only a permanent one.
func TestServeAcceptErrors(t *testing.T) {
	var log bytes.Buffer
	s := &Server{Log: slog.New(slog.NewTextHandler(&log, nil))}
	ln := &scriptListener{errs: []error{acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE)}}
	if err := s.Serve(ln, ListenerConfig{Name: "submission"}); err != nil {
		t.Fatalf("Serve after temporary errors: %v", err)
	}
	if !strings.Contains(log.String(), "too many open files") || strings.Count(log.String(), "accept failed") != 1 {
		t.Errorf("want one accept error line:\n%s", log.String())
	}
	bad := acceptErr(syscall.EBADF)
	ln = &scriptListener{errs: []error{acceptErr(syscall.EMFILE), bad}}
	if err := s.Serve(ln, ListenerConfig{Name: "submission"}); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("Serve with a broken listener: %v, want EBADF", err)
	}
}
