package delivery

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"time"
)

// StepTimeouts are the limits on each step of a session, after RFC 5321
// §4.5.3.2: a server that is slow but keeps answering within them is waited
// for, however long the whole session takes. A zero field takes the RFC's
// value.
type StepTimeouts struct {
	// Greeting bounds the wait for the 220 greeting; default 5m.
	Greeting time.Duration
	// Mail bounds the reply to MAIL FROM; default 5m.
	Mail time.Duration
	// Rcpt bounds the reply to each RCPT TO; default 5m.
	Rcpt time.Duration
	// DataInit bounds the reply to the DATA command; default 2m.
	DataInit time.Duration
	// DataBlock bounds each block of message data written; the limit is
	// renewed for every block, so a transfer that makes progress goes on;
	// default 3m.
	DataBlock time.Duration
	// DataTerm bounds the reply after the final dot; default 10m.
	DataTerm time.Duration
	// Command bounds EHLO, HELO, STARTTLS with its TLS handshake, AUTH,
	// RSET and QUIT; default 5m.
	Command time.Duration
}

// withDefaults fills the zero fields with the RFC 5321 §4.5.3.2 values.
func (s StepTimeouts) withDefaults() StepTimeouts {
	s.Greeting = cmp.Or(s.Greeting, 5*time.Minute)
	s.Mail = cmp.Or(s.Mail, 5*time.Minute)
	s.Rcpt = cmp.Or(s.Rcpt, 5*time.Minute)
	s.DataInit = cmp.Or(s.DataInit, 2*time.Minute)
	s.DataBlock = cmp.Or(s.DataBlock, 3*time.Minute)
	s.DataTerm = cmp.Or(s.DataTerm, 10*time.Minute)
	s.Command = cmp.Or(s.Command, 5*time.Minute)
	return s
}

// timeoutError says which step ran out of time, and which limit did it.
type timeoutError struct {
	// step names what was awaited: "the reply to RCPT", "the greeting"…
	step string
	// limit is the limit that ran out.
	limit time.Duration
	// overall is set when the session's overall limit ran out before the
	// step's own.
	overall bool
	// err is the I/O error.
	err error
}

func (e *timeoutError) Error() string {
	if e.overall {
		return fmt.Sprintf("timeout waiting for %s: the attempt's overall limit of %v was reached", e.step, e.limit)
	}
	return fmt.Sprintf("timeout waiting for %s (limit %v)", e.step, e.limit)
}

func (e *timeoutError) Unwrap() error { return e.err }

// errInterrupted is wrapped by the I/O errors of a session that was
// cancelled (the queue is shutting down).
var errInterrupted = errors.New("delivery interrupted")

// isTimeout reports whether err is a deadline running out.
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
