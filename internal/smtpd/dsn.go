package smtpd

import (
	"errors"
	"fmt"
	"strings"
)

// The DSN parameters of RFC 3461: RET and ENVID on MAIL FROM, NOTIFY and
// ORCPT on RCPT TO. Values are checked here, decoded from xtext and kept
// with the message (spool.DSN), so that the queue's reports and the next
// hop get them.

// maxEnvID is the longest ENVID accepted (RFC 3461 §4.4: 100 characters).
const maxEnvID = 100

// maxORcpt is the longest ORCPT value accepted, encoded (RFC 3461 §4.2:
// 500 characters).
const maxORcpt = 500

// decodeXtext decodes an xtext (RFC 3461 §4): printable US-ASCII but "+"
// and "=", with "+XX" (two uppercase hex digits) standing for any byte.
func decodeXtext(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) {
				return "", errors.New(`"+" must be followed by two uppercase hex digits`)
			}
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c < '!' || c > '~' || c == '=':
			return "", fmt.Errorf("character %q is not allowed in xtext", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

// parseNotify parses a NOTIFY value: NEVER alone, or a comma-separated
// list of SUCCESS, FAILURE and DELAY (RFC 3461 §4.1), any case.
func parseNotify(v string) ([]string, error) {
	var out []string
	for _, k := range strings.Split(strings.ToUpper(v), ",") {
		switch k {
		case "NEVER", "SUCCESS", "FAILURE", "DELAY":
		default:
			return nil, fmt.Errorf("NOTIFY value %q is not NEVER, SUCCESS, FAILURE or DELAY", clipDetail(k))
		}
		for _, o := range out {
			if o == k {
				return nil, fmt.Errorf("NOTIFY names %s twice", k)
			}
		}
		out = append(out, k)
	}
	for _, k := range out {
		if k == "NEVER" && len(out) > 1 {
			return nil, errors.New("NOTIFY=NEVER cannot be combined with other values")
		}
	}
	return out, nil
}

// parseORcpt parses an ORCPT value, "addr-type;xtext" (RFC 3461 §4.2), and
// returns it decoded, with the address type as given.
func parseORcpt(v string) (string, error) {
	if len(v) > maxORcpt {
		return "", fmt.Errorf("ORCPT is longer than %d characters", maxORcpt)
	}
	typ, addr, ok := strings.Cut(v, ";")
	if !ok || typ == "" || strings.IndexFunc(typ, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-')
	}) >= 0 {
		return "", errors.New("ORCPT must be addr-type;address")
	}
	a, err := decodeXtext(addr)
	if err != nil {
		return "", fmt.Errorf("ORCPT: %w", err)
	}
	if a == "" {
		return "", errors.New("ORCPT has no address")
	}
	return typ + ";" + a, nil
}

// parseEnvID checks and decodes an ENVID value (RFC 3461 §4.4).
func parseEnvID(v string) (string, error) {
	if len(v) > maxEnvID {
		return "", fmt.Errorf("ENVID is longer than %d characters", maxEnvID)
	}
	id, err := decodeXtext(v)
	if err != nil {
		return "", fmt.Errorf("ENVID: %w", err)
	}
	if id == "" {
		return "", errors.New("ENVID is empty")
	}
	return id, nil
}

// clipDetail shortens a client's value for a reply.
func clipDetail(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
