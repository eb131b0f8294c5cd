package smtpd

import (
	"net/netip"

	"submitd/internal/guard"
)

// GuardOf gives the SMTP side the brute-force guard g.
func GuardOf(g *guard.Guard) Guard { return guardAdapter{g} }

// guardAdapter turns the guard's concrete attempt into an Attempt.
type guardAdapter struct{ g *guard.Guard }

func (a guardAdapter) Blocked(ip netip.Addr) bool { return a.g.Blocked(ip) }

func (a guardAdapter) Open(ip netip.Addr) bool { return a.g.Open(ip) }

func (a guardAdapter) Begin(ip netip.Addr, sid string) (Attempt, bool) {
	at, ok := a.g.Begin(ip, sid)
	if !ok {
		return nil, false
	}
	return at, true
}
