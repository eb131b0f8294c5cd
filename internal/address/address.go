// Package address parses mail addresses and normalizes them to the one form
// submitd compares them in (SPEC §1): domain names as lowercase IDNA A-labels
// without a trailing dot, local parts lowercased and in Unicode NFC.
package address

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Limits from RFC 5321 §4.5.3.1.
const (
	maxLocalLen = 64
	// maxLocalInput bounds a local part before normalization. The limit of
	// 64 octets applies to the normalized form, which is the one stored; a
	// name typed with combining accents (NFD) is longer than its NFC form
	// and must be accepted when that form fits.
	maxLocalInput = 4 * maxLocalLen
	maxDomainLen  = 253
	maxLabelLen   = 63
	// maxInput bounds the text Domain looks at: no longer name can map to
	// 253 A-label characters, and refusing it at once keeps huge inputs out
	// of the IDNA code and out of error messages.
	maxInput = 1024
)

// ErrInvalid is wrapped by every error this package returns, so callers can
// tell bad input from other failures.
var ErrInvalid = errors.New("invalid")

// Address is a mail address split at its last "@". Domain is normalized; Local
// is lowercased and in NFC, since submitd compares local parts
// case-insensitively and stores them in NFC (SPEC §1).
type Address struct {
	// Local is the part before the "@", lowercased, in Unicode NFC and in its
	// shortest form: a quoted local part that needs no quotes ("jan") is
	// stored unquoted.
	Local string
	// Domain is the normalized domain (see Domain).
	Domain string
}

// String returns "local@domain".
func (a Address) String() string { return a.Local + "@" + a.Domain }

// profile is the IDNA profile for names as they appear in mail: the lookup
// profile maps case and width and applies the STD3 host-name rules. Lengths
// are checked by Domain itself, so that the message can say which limit a
// name breaks.
var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(true),
	idna.ValidateLabels(true),
)

func invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// invalidError is the error for bad input: its text says what is wrong, and
// it matches ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return "invalid: " + e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// reason returns the text of err without the "invalid: " prefix, for nesting
// one message in another.
func reason(err error) string {
	var ie *invalidError
	if errors.As(err, &ie) {
		return ie.msg
	}
	return err.Error()
}

// badRune reports runes that never belong in a name or address that ends up
// in a log line or in one-record-per-line CLI output: spaces, controls (C0,
// DEL, C1) and the Unicode line and paragraph separators.
func badRune(r rune) bool {
	return r <= ' ' || r == 0x7f || unicode.IsControl(r) || unicode.IsSpace(r) ||
		r == '\u2028' || r == '\u2029'
}

// Domain returns name in normalized form: lowercase, IDNA A-labels
// (příklad.cz becomes xn--pklad-zsa96e.cz), no trailing dot. A name must have at
// least two labels; IP literals and single labels are refused. The error says
// why a name is refused.
func Domain(name string) (string, error) {
	orig := name
	if name == "" {
		return "", invalid("empty domain name")
	}
	if len(name) > maxInput {
		return "", invalid("domain %.40q… is longer than %d characters", orig, maxDomainLen)
	}
	if !utf8.ValidString(name) {
		return "", invalid("domain %q is not valid UTF-8", orig)
	}
	for _, r := range name {
		if badRune(r) {
			return "", invalid("domain %q contains a space or control character", orig)
		}
	}
	if strings.HasPrefix(name, "[") {
		return "", invalid("%q is an address literal, not a domain name", orig)
	}
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return "", invalid("%q is not a domain name", orig)
	}
	// Plain ASCII mistakes are named here; the IDNA library's messages do not
	// say what is wrong with a label.
	for _, l := range strings.Split(name, ".") {
		if err := checkASCIILabel(orig, l); err != nil {
			return "", err
		}
	}
	a, err := profile.ToASCII(name)
	if err != nil {
		return "", idnaError(orig, name)
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
		if err := checkLDHLabel(orig, l); err != nil {
			return "", err
		}
	}
	// RFC 3696 §2: a top-level label is never all digits, which also keeps
	// dotted IPv4 addresses out.
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return "", invalid("domain %q has a numeric top-level label; IP addresses are not domain names", orig)
	}
	return a, nil
}

// checkASCIILabel rejects an empty label, and an all-ASCII label that breaks
// the host-name rules of RFC 1123 §2.1.
func checkASCIILabel(orig, l string) error {
	if l == "" {
		return invalid("domain %q has an empty label (a leading or double dot)", orig)
	}
	for i := 0; i < len(l); i++ {
		if l[i] >= utf8.RuneSelf {
			return nil // IDNA decides about U-labels.
		}
	}
	return checkLDHLabel(orig, strings.ToLower(l))
}

// checkLDHLabel checks one lowercase ASCII label: letters, digits and inner
// hyphens, at most 63 characters (RFC 1035 §2.3.1, RFC 5890 §2.3.1).
func checkLDHLabel(orig, l string) error {
	if l == "" {
		return invalid("domain %q has an empty label (a leading or double dot)", orig)
	}
	if len(l) > maxLabelLen {
		return invalid("domain %q has a label longer than %d characters", orig, maxLabelLen)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return invalid("domain %q has a label that starts or ends with a hyphen", orig)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return invalid("domain %q contains %q; only letters, digits, hyphens and dots are allowed", orig, c)
		}
	}
	return nil
}

// idnaError explains why the IDNA conversion of name failed, naming the first
// label that does not convert on its own.
func idnaError(orig, name string) error {
	for _, l := range strings.Split(name, ".") {
		_, err := profile.ToASCII(l)
		if err == nil {
			continue
		}
		low := strings.ToLower(l)
		switch {
		case strings.HasPrefix(low, "xn--"):
			return invalid("domain %q: label %q is not a valid IDNA A-label (Punycode)", orig, l)
		case len(low) >= 4 && low[2:4] == "--":
			return invalid("domain %q: label %q has hyphens in the third and fourth positions, which are reserved (RFC 5891 §4.2.3.1)", orig, l)
		}
		return invalid("domain %q: label %q is not a valid internationalized label (%s)",
			orig, l, strings.TrimPrefix(err.Error(), "idna: "))
	}
	return invalid("domain %q is not a valid internationalized domain name", orig)
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
//
// The local part is lowercased, brought to Unicode NFC (SPEC §1) and to its
// shortest form, so that "Jan"@firma.cz and jan@firma.cz are the same
// address, and so are jiří@firma.cz typed with precomposed letters (NFC) and
// with combining accents (NFD), which look the same: a quoted string
// whose content is a valid dot-string loses its quotes (RFC 5321 §4.1.2 makes
// the two forms equivalent), and any other is quoted with backslashes only
// before '"' and '\'.
func Parse(s string) (Address, error) {
	if len(s) > maxLocalInput+1+maxInput {
		return Address{}, invalid("address %.40q… is too long", s)
	}
	if !utf8.ValidString(s) {
		return Address{}, invalid("address %q is not valid UTF-8", s)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, invalid("%q is not a full address (local@domain)", s)
	}
	local, dom := s[:at], s[at+1:]
	l, err := normLocal(local)
	if err != nil {
		return Address{}, invalid("address %q: %v", s, err)
	}
	d, err := Domain(dom)
	if err != nil {
		return Address{}, invalid("address %q: %s", s, reason(err))
	}
	return Address{Local: l, Domain: d}, nil
}

// normLocal enforces RFC 5321 §4.1.2 Local-part syntax, extended to UTF-8 by
// RFC 6531 §3.3, and returns the local part lowercased, in NFC and in its
// shortest form.
func normLocal(local string) (string, error) {
	if local == "" {
		return "", errors.New("empty local part")
	}
	if len(local) > maxLocalInput {
		return "", fmt.Errorf("local part longer than %d octets", maxLocalLen)
	}
	var out string
	if local[0] == '"' {
		content, err := unquote(local)
		if err != nil {
			return "", err
		}
		if content == "" {
			return "", errors.New("empty local part")
		}
		content = fold(content)
		if checkDotString(content) == nil {
			out = content
		} else {
			out = quote(content)
		}
	} else {
		// The syntax is checked on the normalized form, which is the one
		// stored and compared.
		out = fold(local)
		if err := checkDotString(out); err != nil {
			return "", err
		}
	}
	// Lowercasing can lengthen some UTF-8 letters (U+023A is two octets, its
	// lowercase three), and so can NFC (U+0958 becomes two letters), so the
	// limit is checked on the result too.
	if len(out) > maxLocalLen {
		return "", fmt.Errorf("local part longer than %d octets", maxLocalLen)
	}
	return out, nil
}

// fold returns s lowercased and in Unicode NFC. RFC 6530 §10.1 leaves the
// comparison of UTF-8 local parts to the receiving system and recommends NFC;
// RFC 8264 §7 likewise maps case before normalizing. Case mapping is done on
// the NFC form and normalized again, because lowercasing an NFC string does
// not always give an NFC string.
func fold(s string) string {
	return norm.NFC.String(strings.ToLower(norm.NFC.String(s)))
}

// checkDotString checks an unquoted local part: atext (or UTF-8) atoms
// separated by single dots.
func checkDotString(local string) error {
	if local == "" {
		return errors.New("empty local part")
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return errors.New("local part has a leading, trailing or double dot")
	}
	for _, r := range local {
		if r < utf8.RuneSelf && !isAtext(byte(r)) && r != '.' || r >= utf8.RuneSelf && badRune(r) {
			return fmt.Errorf("character %q not allowed in local part", r)
		}
	}
	return nil
}

// unquote returns the content of an RFC 5321 Quoted-string: qtextSMTP and
// quoted-pairSMTP, widened to UTF-8 by RFC 6531 §3.3.
func unquote(q string) (string, error) {
	if len(q) < 2 || q[len(q)-1] != '"' {
		return "", errors.New("unterminated quoted local part")
	}
	inner := q[1 : len(q)-1]
	var b strings.Builder
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		switch {
		case c == '\\':
			i++
			if i >= len(inner) || inner[i] < ' ' || inner[i] >= 0x7f {
				return "", errors.New("bad escape in quoted local part")
			}
			b.WriteByte(inner[i])
		case c == '"' || c < ' ' || c == 0x7f:
			return "", fmt.Errorf("character %q not allowed in quoted local part", c)
		default:
			b.WriteByte(c)
		}
	}
	content := b.String()
	for _, r := range content {
		if r >= utf8.RuneSelf && badRune(r) {
			return "", fmt.Errorf("character %q not allowed in quoted local part", r)
		}
	}
	return content, nil
}

// quote returns content as a Quoted-string with the fewest escapes.
func quote(content string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(content); i++ {
		if c := content[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(content[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isAtext reports whether c is an RFC 5322 §3.2.3 atext character.
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}
