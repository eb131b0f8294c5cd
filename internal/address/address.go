// Package address parses mail addresses and normalizes domain names to the one
// form submitd compares them in: lowercase IDNA A-labels without a trailing dot
// (SPEC §1).
package address

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 5321 §4.5.3.1.
const (
	maxLocalLen  = 64
	maxDomainLen = 253
	maxLabelLen  = 63
)

// ErrInvalid is wrapped by every error this package returns, so callers can
// tell bad input from other failures.
var ErrInvalid = errors.New("invalid")

// Address is a mail address split at its last "@". Domain is normalized; Local
// is lowercased, since submitd compares local parts case-insensitively (SPEC §1).
type Address struct {
	// Local is the part before the "@", lowercased.
	Local string
	// Domain is the normalized domain (see Domain).
	Domain string
}

// String returns "local@domain".
func (a Address) String() string { return a.Local + "@" + a.Domain }

// profile is the IDNA profile for names as they appear in mail: the lookup
// profile maps case and width and applies the STD3 host-name rules.
var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(true),
	idna.ValidateLabels(true),
	idna.VerifyDNSLength(true),
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Domain returns name in normalized form: lowercase, IDNA A-labels
// (příklad.cz becomes xn--pklad-zsa96e.cz), no trailing dot. A name must have at
// least two labels; IP literals and single labels are refused.
func Domain(name string) (string, error) {
	orig := name
	if name == "" {
		return "", invalid("empty domain name")
	}
	if !utf8.ValidString(name) {
		return "", invalid("domain %q is not valid UTF-8", orig)
	}
	name = strings.TrimSuffix(name, ".")
	if name == "" || strings.HasPrefix(name, "[") {
		return "", invalid("%q is not a domain name", orig)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return "", invalid("domain %q contains a space or control character", orig)
		}
	}
	a, err := profile.ToASCII(name)
	if err != nil {
		return "", invalid("domain %q: %v", orig, err)
	}
	a = strings.ToLower(a)
	if len(a) > maxDomainLen {
		return "", invalid("domain %q is longer than %d characters", orig, maxDomainLen)
	}
	labels := strings.Split(a, ".")
	if len(labels) < 2 {
		return "", invalid("domain %q needs at least two labels (like example.cz)", orig)
	}
	for _, l := range labels {
		if l == "" {
			return "", invalid("domain %q has an empty label", orig)
		}
		if len(l) > maxLabelLen {
			return "", invalid("domain %q has a label longer than %d characters", orig, maxLabelLen)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", invalid("domain %q has a label that starts or ends with a hyphen", orig)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", invalid("domain %q contains %q", orig, c)
			}
		}
	}
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return "", invalid("domain %q has a numeric top-level label", orig)
	}
	return a, nil
}

// Unicode returns the U-label form of a normalized domain for display; on any
// error it returns the input.
func Unicode(domain string) string {
	u, err := idna.Display.ToUnicode(domain)
	if err != nil {
		return domain
	}
	return u
}

// Parse splits s at its last "@" and normalizes both parts. It accepts the
// forms a mail client or an SMTP path carries: dot-atom local parts, quoted
// local parts, and UTF-8 local parts (RFC 6531). Surrounding angle brackets are
// not accepted; the caller strips them.
func Parse(s string) (Address, error) {
	if !utf8.ValidString(s) {
		return Address{}, invalid("address %q is not valid UTF-8", s)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, invalid("%q is not a full address (local@domain)", s)
	}
	local, dom := s[:at], s[at+1:]
	if err := checkLocal(local); err != nil {
		return Address{}, invalid("address %q: %v", s, err)
	}
	d, err := Domain(dom)
	if err != nil {
		return Address{}, invalid("address %q: %v", s, errors.Unwrap(err))
	}
	return Address{Local: strings.ToLower(local), Domain: d}, nil
}

// checkLocal enforces RFC 5321 §4.1.2 Local-part syntax, extended to UTF-8 by
// RFC 6531 §3.3.
func checkLocal(local string) error {
	if local == "" {
		return errors.New("empty local part")
	}
	if len(local) > maxLocalLen {
		return fmt.Errorf("local part longer than %d octets", maxLocalLen)
	}
	if local[0] == '"' {
		if len(local) < 2 || local[len(local)-1] != '"' {
			return errors.New("unterminated quoted local part")
		}
		inner := local[1 : len(local)-1]
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			switch {
			case c == '\\':
				i++
				if i >= len(inner) || inner[i] < ' ' || inner[i] == 0x7f {
					return errors.New("bad escape in quoted local part")
				}
			case c == '"' || c < ' ' || c == 0x7f:
				return fmt.Errorf("character %q not allowed in quoted local part", c)
			}
		}
		return nil
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return errors.New("local part has a leading, trailing or double dot")
	}
	for _, r := range local {
		if r < 0x80 && !isAtext(byte(r)) && r != '.' {
			return fmt.Errorf("character %q not allowed in local part", r)
		}
	}
	return nil
}

// isAtext reports whether c is an RFC 5322 §3.2.3 atext character.
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}
