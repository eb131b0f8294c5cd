package smtpd

import (
	"net/netip"
	"time"
)

// Activity hears what an account does, for the detection of compromised
// accounts (SPEC R20). Its methods run on the connection's goroutine, in
// the SMTP path, so they must only count and return: no I/O, nothing that
// waits.
type Activity interface {
	// LoggedIn is told of every successful AUTH: the account, the client's
	// address and the name it gave in EHLO/HELO.
	LoggedIn(account string, ip netip.Addr, helo string, at time.Time)
	// Queued is told of every message the spool committed, with its
	// number of recipients.
	Queued(account string, rcpts int, at time.Time)
}

// CloseAccount ends every open session logged in as account at once and,
// until ReopenAccount, ends any that logs in as it later (SPEC R20: a held
// account's sessions are closed). A session in the middle of a message
// loses that message, which was never acknowledged with a 250. It returns
// how many sessions it closed.
//
// The account is marked before the sessions are looked at, and a session
// that logs in notes its account before it looks at the marks
// (closedAccount), so an AUTH whose check was under way during the hold
// cannot slip between the two.
func (s *Server) CloseAccount(account string) int {
	s.mu.Lock()
	if s.closedAccounts == nil {
		s.closedAccounts = map[string]struct{}{}
	}
	s.closedAccounts[account] = struct{}{}
	s.mu.Unlock()
	n := 0
	for _, c := range s.openConns() {
		c.mu.Lock()
		mine := c.rec.Account == account
		c.mu.Unlock()
		if mine {
			c.log.Warn("session closed: account held", "account", account)
			c.record("held", account, "")
			c.Close()
			n++
		}
	}
	return n
}

// ReopenAccount undoes CloseAccount for account, when its hold is released.
func (s *Server) ReopenAccount(account string) {
	s.mu.Lock()
	delete(s.closedAccounts, account)
	s.mu.Unlock()
}

// closedAccount reports whether CloseAccount holds account closed.
func (s *Server) closedAccount(account string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.closedAccounts[account]
	return ok
}

// activity returns the server's Activity, or one that does nothing.
func (s *Server) activity() Activity {
	if s.Activity != nil {
		return s.Activity
	}
	return noActivity{}
}

// noActivity is the Activity of a server without one.
type noActivity struct{}

func (noActivity) LoggedIn(string, netip.Addr, string, time.Time) {}
func (noActivity) Queued(string, int, time.Time)                  {}
