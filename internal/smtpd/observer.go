package smtpd

import "time"

// Observer hears of the events metrics count. Its methods run in the SMTP
// path, on the connection's goroutine, so they must only count and return:
// no I/O, no locks held for long. Arguments are listener names, reply keys
// and a few fixed words, never an address, an IP or a session id, so that
// what is counted stays a small set of series.
type Observer interface {
	// Connection is told of every connection a listener took and what
	// became of it: "accepted", "proxy_refused" (no valid PROXY header
	// from a trusted proxy), or the reply key it was refused with
	// (blocked, shutting_down, server_busy, too_many_connections).
	Connection(listener, outcome string)
	// Closed is told when an accepted connection ends.
	Closed(listener string)
	// Auth is told how every AUTH command ended: auth_ok, the reply key of
	// the failure, "blocked" when the guard refused it at its limit, or
	// "abandoned" when the client went away in the middle of it.
	Auth(outcome string)
	// Refused is told of every refused MAIL, RCPT, DATA, BDAT or AUTH
	// command, by command ("mail", "rcpt", "data", "bdat", "auth") and reply
	// key, as the session record shows it.
	Refused(command, key string)
	// Queued is told of every message the spool committed: its size in
	// bytes and how long Commit took, which is how long the client waited
	// for the disk (SPEC R15).
	Queued(size int64, commit time.Duration)
}

// noObserver is the Observer of a server without one.
type noObserver struct{}

func (noObserver) Connection(string, string)   {}
func (noObserver) Closed(string)               {}
func (noObserver) Auth(string)                 {}
func (noObserver) Refused(string, string)      {}
func (noObserver) Queued(int64, time.Duration) {}

// observer returns the server's Observer, or one that does nothing.
func (s *Server) observer() Observer {
	if s.Metrics != nil {
		return s.Metrics
	}
	return noObserver{}
}
