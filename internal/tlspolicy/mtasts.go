package tlspolicy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is an MTA-STS policy mode (RFC 8461 §5).
type Mode string

const (
	// ModeEnforce: deliver only to matching MX hosts with a valid
	// certificate.
	ModeEnforce Mode = "enforce"
	// ModeTesting: check and report, deliver as without a policy.
	ModeTesting Mode = "testing"
	// ModeNone: the domain withdrew its policy.
	ModeNone Mode = "none"
)

// MaxPolicySize bounds the policy body read (RFC 8461 §3.3: senders may
// limit it to 64 KiB).
const MaxPolicySize = 64 << 10

// maxPolicyMX bounds the mx patterns of a policy; one with more is not
// valid. RFC 8461 sets no bound, but a policy is the domain's to write and
// is kept for its max_age, up to a year: 64 KiB of short mx lines would
// take some 200 KB of memory each, 2 GB over a full cache, where a real
// policy names a handful of hosts.
const maxPolicyMX = 100

// maxMaxAge is the largest max_age a policy may give (RFC 8461 §3.2: a
// year).
const maxMaxAge = 31557600

// Record is the `_mta-sts` TXT record of a domain (RFC 8461 §3.1).
type Record struct {
	// ID changes whenever the policy does.
	ID string
}

// ParseRecord parses one TXT record. It fails for a record that is not
// an STSv1 record; the caller ignores those (§3.1: records not starting
// with "v=STSv1" are not MTA-STS records).
func ParseRecord(txt string) (Record, error) {
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=STSv1" {
		return Record{}, errors.New(`not an MTA-STS record (does not start with "v=STSv1")`)
	}
	var r Record
	for _, f := range fields[1:] {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Record{}, fmt.Errorf("MTA-STS record field %q has no value", f)
		}
		if k == "id" {
			// §3.1: 1 to 32 letters and digits.
			if v == "" || len(v) > 32 || strings.IndexFunc(v, func(c rune) bool {
				return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
			}) >= 0 {
				return Record{}, fmt.Errorf("MTA-STS record id %q is not 1 to 32 letters and digits", v)
			}
			r.ID = v
		}
	}
	if r.ID == "" {
		return Record{}, errors.New("MTA-STS record has no id")
	}
	return r, nil
}

// Policy is an MTA-STS policy (RFC 8461 §3.2).
type Policy struct {
	// Mode is enforce, testing or none.
	Mode Mode
	// MaxAge is how long the policy may be cached.
	MaxAge time.Duration
	// MX are the host patterns: "mx.example.com" or "*.example.com".
	MX []string
}

// ParsePolicy parses a policy body: "key: value" lines ending in CRLF or
// LF. Unknown keys are ignored (§3.2); version, mode and max_age are
// required, and mx in every mode but none.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("MTA-STS policy is larger than %d bytes", MaxPolicySize)
	}
	p := &Policy{}
	var version, maxAge bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, MaxPolicySize+1)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("MTA-STS policy line %q is not \"key: value\"", clip(line))
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			if v != "STSv1" {
				return nil, fmt.Errorf("MTA-STS policy version %q is not STSv1", clip(v))
			}
			version = true
		case "mode":
			switch Mode(v) {
			case ModeEnforce, ModeTesting, ModeNone:
				p.Mode = Mode(v)
			default:
				return nil, fmt.Errorf("MTA-STS policy mode %q is not enforce, testing or none", clip(v))
			}
		case "max_age":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || len(v) > 10 {
				return nil, fmt.Errorf("MTA-STS policy max_age %q is not a number of seconds", clip(v))
			}
			p.MaxAge = time.Duration(min(n, maxMaxAge)) * time.Second
			maxAge = true
		case "mx":
			if !validPattern(v) {
				return nil, fmt.Errorf("MTA-STS policy mx %q is not a host name or *.domain", clip(v))
			}
			if len(p.MX) == maxPolicyMX {
				return nil, fmt.Errorf("MTA-STS policy names more than %d mx patterns", maxPolicyMX)
			}
			p.MX = append(p.MX, strings.ToLower(strings.TrimSuffix(v, ".")))
		}
	}
	switch {
	case !version:
		return nil, errors.New("MTA-STS policy has no version")
	case p.Mode == "":
		return nil, errors.New("MTA-STS policy has no mode")
	case !maxAge:
		return nil, errors.New("MTA-STS policy has no max_age")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, errors.New("MTA-STS policy has no mx")
	}
	return p, nil
}

// validPattern reports whether v is a host name, optionally with "*." in
// front.
func validPattern(v string) bool {
	v = strings.TrimPrefix(strings.TrimSuffix(v, "."), "*.")
	if v == "" || len(v) > 253 {
		return false
	}
	for _, l := range strings.Split(v, ".") {
		if l == "" || len(l) > 63 || strings.IndexFunc(l, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_')
		}) >= 0 {
			return false
		}
	}
	return true
}

// Matches reports whether the MX host name host is one of the policy's
// (RFC 8461 §4.1): an exact name, or "*.d" standing for exactly one more
// label in front of d.
func (p *Policy) Matches(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// clip shortens a hostile value for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
