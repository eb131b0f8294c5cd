package smtpd

import (
	"errors"
	"strings"
)

// parsePath parses the argument of MAIL FROM: or RCPT TO: after the colon:
// a path in angle brackets (RFC 5321 §4.1.2) and the ESMTP parameters after
// it. It returns the address as sent, quotes included, so that it can be
// checked by the address package and relayed unchanged; a source route
// ("@a,@b:") is dropped as §4.1.1.3 and §C allow. "<>" is the null sender,
// only where null is allowed. A path without brackets, which some old
// clients send, is taken up to the first space.
func parsePath(arg string, null bool) (string, []string, error) {
	arg = strings.TrimLeft(arg, " ")
	if !strings.HasPrefix(arg, "<") {
		addr, rest, _ := strings.Cut(arg, " ")
		if addr == "" {
			return "", nil, errors.New("the address is missing")
		}
		return addr, strings.Fields(rest), nil
	}
	p := arg[1:]
	if strings.HasPrefix(p, "@") {
		i := strings.IndexByte(p, ':')
		if i < 0 {
			return "", nil, errors.New("source route without a colon")
		}
		p = p[i+1:]
	}
	quoted := false
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '>':
			addr, rest := p[:i], p[i+1:]
			if rest != "" && rest[0] != ' ' {
				return "", nil, errors.New("a space must follow the closing bracket")
			}
			if addr == "" && !null {
				return "", nil, errors.New("the address is empty")
			}
			return addr, strings.Fields(rest), nil
		}
	}
	return "", nil, errors.New("the closing bracket is missing")
}
