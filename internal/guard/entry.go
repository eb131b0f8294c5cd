package guard

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Entry is one key as support sees it (SPEC R11a): how many failures it has
// in the window, whether it is blocked and since when, and the sessions of
// its failures, so support can look up why.
type Entry struct {
	// Key is the client key.
	Key netip.Prefix
	// Failures is the number of failures in the window.
	Failures int
	// Blocked is true while a block is in force.
	Blocked bool
	// Since and Until bound the block when Blocked.
	Since, Until time.Time
	// SIDs are the sessions of the block's failures and of the failures in
	// the window, without repeats, oldest first.
	SIDs []string
}

// Entries summarizes st at now: blocked keys first, most recently blocked
// first, then keys with failures in the window, by address.
func Entries(st *State, now time.Time, window time.Duration) []Entry {
	byKey := map[netip.Prefix]*Entry{}
	cut := now.Add(-window)
	for k, b := range st.Blocks {
		if now.Before(b.Until) {
			byKey[k] = &Entry{Key: k, Blocked: true, Since: b.Since, Until: b.Until, SIDs: slices.Clone(b.SIDs)}
		}
	}
	for k, fs := range st.Failures {
		var live []Failure
		for _, f := range fs {
			if f.Time.After(cut) {
				live = append(live, f)
			}
		}
		if len(live) == 0 {
			continue
		}
		slices.SortStableFunc(live, func(a, b Failure) int { return a.Time.Compare(b.Time) })
		e := byKey[k]
		if e == nil {
			e = &Entry{Key: k}
			byKey[k] = e
		}
		e.Failures = len(live)
		e.SIDs = sessionIDs(live, e.SIDs)
	}
	out := make([]Entry, 0, len(byKey))
	for _, e := range byKey {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		switch {
		case a.Blocked && !b.Blocked:
			return -1
		case !a.Blocked && b.Blocked:
			return 1
		case a.Blocked && !a.Since.Equal(b.Since):
			return b.Since.Compare(a.Since)
		}
		return comparePrefix(a.Key, b.Key)
	})
	return out
}

// FormatKey prints a key as support reads it: a single address without its
// prefix length, a network in CIDR form.
func FormatKey(p netip.Prefix) string {
	if !p.IsValid() {
		return "invalid"
	}
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// ParseTarget parses what support names in an unblock: an IP address or a
// CIDR network ("112.67.35.229", "2001:db8:1:2::7", "10.0.0.0/8",
// "2001:db8:1:2::/64"). Host bits of a network are cleared, and an
// IPv4-mapped IPv6 address or network means the IPv4 one.
func ParseTarget(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty address")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR network", s)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: a network cannot have a zone", s)
		}
		return normPrefix(p), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR network", s)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// normPrefix masks p and turns an IPv4-mapped IPv6 prefix into IPv4, so it
// compares with the keys, which are always IPv4 for IPv4 clients.
func normPrefix(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	a := p.Addr().WithZone("")
	bits := p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	q, _ := a.Prefix(bits)
	return q
}
