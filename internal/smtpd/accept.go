package smtpd

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Accept backoff: after a temporary accept error a listener waits, first
// acceptMinDelay and doubling up to acceptMaxDelay, so that a process out of
// file descriptors neither spins nor gives up; it logs such errors at most
// once per acceptLogEvery.
const (
	acceptMinDelay = 5 * time.Millisecond
	acceptMaxDelay = time.Second
	acceptLogEvery = time.Second
)

// temporaryAcceptError reports whether an accept error passes by itself: the
// process or system is out of descriptors or memory, or the connection was
// gone before it could be taken (accept(2) lists ECONNABORTED and EPROTO for
// that). Anything else means the listener is broken.
func temporaryAcceptError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// net.Error's Temporary is deprecated for callers who cannot act on
	// it, but an accept loop is the case it was meant for.
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// acceptRetry is one listener's state across temporary accept errors. It
// decides the waits and which log lines are due: an error line at most once
// per acceptLogEvery, counting the errors since the previous line, and a
// recovery line at the first accept after an error line. A client that keeps
// the process at the edge of its descriptor limit, so that accepts fail and
// succeed in turn, thus gets no more than about two lines a second.
type acceptRetry struct {
	// delay is the last wait; zero after a successful accept.
	delay time.Duration
	// since is when the current run of errors began; zero outside a run.
	since time.Time
	// lastLog is when a line was last due.
	lastLog time.Time
	// unlogged counts the errors no line has reported yet.
	unlogged int
	// pending is set by an error line and cleared by the recovery line.
	pending bool
}

// failed records a temporary error at now. It returns how long to wait
// before the next accept and, when an error line is due, the number of
// errors it reports (zero when no line is due).
func (r *acceptRetry) failed(now time.Time) (wait time.Duration, report int) {
	if r.since.IsZero() {
		r.since = now
	}
	r.unlogged++
	r.delay = min(max(2*r.delay, acceptMinDelay), acceptMaxDelay)
	if r.lastLog.IsZero() || now.Sub(r.lastLog) >= acceptLogEvery {
		report, r.unlogged = r.unlogged, 0
		r.lastLog, r.pending = now, true
	}
	return r.delay, report
}

// accepted records a successful accept at now. When a recovery line is due
// it returns ok with the errors no line has reported yet and how long the
// run of errors lasted.
func (r *acceptRetry) accepted(now time.Time) (report int, lasted time.Duration, ok bool) {
	r.delay = 0
	if r.since.IsZero() {
		return 0, 0, false
	}
	if !r.pending && now.Sub(r.lastLog) < acceptLogEvery {
		// The errors since the last recovery line are left for the next
		// line, so that flapping cannot flood the log.
		return 0, 0, false
	}
	report, lasted = r.unlogged, now.Sub(r.since)
	r.since, r.unlogged, r.pending, r.lastLog = time.Time{}, 0, false, now
	return report, lasted, true
}
