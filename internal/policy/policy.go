// Package policy decides whether an authenticated account may send as a given
// address (SPEC R5–R10). It knows nothing of SMTP: the session asks, policy
// answers, and the session turns the answer into a reply.
package policy

import (
	"net/netip"
	"slices"

	"submitd/internal/address"
)

// Account is what the policy needs to know of a logged-in account.
type Account struct {
	// Domain is the account's hosted domain, normalized.
	Domain string
	// Aliases are the alias domains of Domain, normalized.
	Aliases []string
	// Identities are extra sender addresses verified in webmail, normalized.
	Identities []string
}

// Policy holds the operator's settings.
type Policy struct {
	// Webmail are the networks that may use extra identities (SPEC R9).
	Webmail []netip.Prefix
}

// MaySend reports whether acct, connected from client, may use sender as an
// envelope sender or in a From:/Sender: header.
//
// The domain must equal the account's domain or one of its aliases after
// normalization (SPEC R5); any local part is allowed there. Nothing else is
// implied: not subdomains, not other hosted domains, not foreign domains
// (SPEC R6). The one exception is the account's extra identities, and only
// from a webmail network (SPEC R9). An address that does not parse is refused.
func (p *Policy) MaySend(acct *Account, client netip.Addr, sender string) bool {
	a, err := address.Parse(sender)
	if err != nil {
		return false
	}
	if a.Domain == acct.Domain || slices.Contains(acct.Aliases, a.Domain) {
		return true
	}
	return p.FromWebmail(client) && slices.Contains(acct.Identities, a.String())
}

// FromWebmail reports whether client is in a webmail network.
func (p *Policy) FromWebmail(client netip.Addr) bool {
	client = client.Unmap()
	for _, n := range p.Webmail {
		if n.Contains(client) {
			return true
		}
	}
	return false
}
