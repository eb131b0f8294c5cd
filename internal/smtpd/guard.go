package smtpd

import (
	"net/netip"

	"submitd/internal/guard"
)

// GuardOf gives the SMTP side the brute-force guard g.
func GuardOf(g *guard.Guard) Guard { return guardAdapter{g} }

type guardAdapter struct{ g *guard.Guard }

func (a guardAdapter) Blocked(ip netip.Addr) bool { return a.g.Blocked(ip) }

func (a guardAdapter) Begin(ip netip.Addr, sid string) (Attempt, bool) {
	if a.g.Blocked(ip) {
		return nil, false
	}
	return &legacyAttempt{g: a.g, ip: ip, sid: sid}, true
}

type legacyAttempt struct {
	g   *guard.Guard
	ip  netip.Addr
	sid string
}

func (l *legacyAttempt) Fail() bool { return l.g.Failure(l.ip, l.sid) }
func (l *legacyAttempt) Succeed()   {}
