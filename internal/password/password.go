// Package password creates and verifies stored password hashes.
//
// SPEC R2: the server stores hashes, never passwords. New hashes are
// argon2id (the default) or bcrypt, chosen by configuration, and are written
// in Dovecot's "{SCHEME}hash" form so a user database can be shared with, or
// migrated from, Dovecot. Verification additionally accepts the hashes that
// such an import brings along: {SHA512-CRYPT} and {SHA256-CRYPT} (crypt(3)
// $6$ and $5$), {BLF-CRYPT} ($2a$, $2b$, $2y$) and {ARGON2ID}, with or
// without the {SCHEME} prefix.
//
// Error messages name the scheme and the defect but never contain the
// password or the hash, since they end up in logs.
package password

import (
	"errors"
	"fmt"
	"strings"
)

// Scheme names accepted by Hash and NeedsRehash for new hashes (SPEC R2).
const (
	// Argon2id selects argon2id, the default scheme for new hashes.
	Argon2id = "argon2id"
	// Bcrypt selects bcrypt, the alternative scheme for new hashes.
	Bcrypt = "bcrypt"
)

// ErrUnknownScheme is wrapped by errors for hashes (or requested schemes)
// that this package does not implement.
var ErrUnknownScheme = errors.New("unknown password scheme")

// ErrMalformed is wrapped by errors for hashes whose scheme is known but
// whose text is not a well-formed hash of that scheme, including hashes
// whose cost parameters are outside the accepted limits.
var ErrMalformed = errors.New("malformed hash")

const (
	// maxHashLen bounds the stored hash text. Real hashes of every
	// supported scheme are well under 200 bytes; the bound keeps a hostile
	// import from making us decode megabytes of salt or key.
	maxHashLen = 1024
	// maxPasswordLen bounds the candidate password. SHA-crypt's work grows
	// with the square of the password length, so an unbounded password
	// from the network would be a cheap denial of service.
	maxPasswordLen = 4096
)

// parsedHash is a syntactically valid hash of one supported scheme.
type parsedHash interface {
	// schemeName is the Dovecot scheme name, for messages.
	schemeName() string
	// verify reports, in constant time with respect to the stored
	// digest, whether pw matches.
	verify(pw string) bool
}

// Hash returns a new hash of pw in the given scheme (Argon2id or Bcrypt,
// case-insensitive), in Dovecot prefixed form:
//
//	argon2id: {ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//	bcrypt:   {BLF-CRYPT}$2y$10$<salt+hash>
//
// Passwords longer than 4096 bytes are refused, as are passwords longer
// than 72 bytes for bcrypt, which would silently ignore the excess.
func Hash(scheme, pw string) (string, error) {
	if len(pw) > maxPasswordLen {
		return "", errors.New("password: password too long")
	}
	switch {
	case strings.EqualFold(scheme, Argon2id):
		return hashArgon2id(pw), nil
	case strings.EqualFold(scheme, Bcrypt):
		return hashBcrypt(pw)
	}
	// The scheme comes from configuration, but is echoed only if it is
	// a recognised name, in case a caller swapped the arguments.
	return "", fmt.Errorf("password: new hashes: %s: %w", describeScheme(scheme), ErrUnknownScheme)
}

// Verify reports whether pw matches hash. Hash may carry a Dovecot
// {SCHEME} prefix (matched case-insensitively) naming ARGON2ID, BLF-CRYPT,
// SHA512-CRYPT or SHA256-CRYPT, or be the bare crypt/PHC string
// ("$argon2id$…", "$2y$…", "$6$…", "$5$…"). An unknown or malformed hash
// yields false and an error wrapping ErrUnknownScheme or ErrMalformed; a
// well-formed hash never yields an error. A password longer than 4096
// bytes never matches.
func Verify(hash, pw string) (bool, error) {
	h, err := parse(hash)
	if err != nil {
		return false, err
	}
	if len(pw) > maxPasswordLen {
		return false, nil
	}
	return h.verify(pw), nil
}

// Check reports whether hash is a well-formed hash that Verify can check,
// without needing a password; it returns exactly the error Verify would.
// It is meant for validating hashes on import (SPEC R2).
func Check(hash string) error {
	_, err := parse(hash)
	return err
}

// NeedsRehash reports whether hash is not a valid hash in scheme (Argon2id
// or Bcrypt, case-insensitive), so a caller that has just verified the
// password may replace it with Hash(scheme, pw). Unknown or malformed
// hashes, and unknown schemes, always need rehashing. Only the scheme is
// compared, not its cost parameters.
func NeedsRehash(hash, scheme string) bool {
	h, err := parse(hash)
	if err != nil {
		return true
	}
	switch h.(type) {
	case *argon2Hash:
		return !strings.EqualFold(scheme, Argon2id)
	case *bcryptHash:
		return !strings.EqualFold(scheme, Bcrypt)
	}
	return true
}

// parse recognises the scheme of hash and parses it. All validation
// needed to make verification safe happens here (SPEC R2: imported hashes
// are untrusted input).
func parse(hash string) (parsedHash, error) {
	if len(hash) > maxHashLen {
		return nil, fmt.Errorf("password: %w: hash too long", ErrMalformed)
	}
	prefix := ""
	body := hash
	if strings.HasPrefix(hash, "{") {
		end := strings.IndexByte(hash, '}')
		if end < 0 {
			return nil, fmt.Errorf("password: %w: unterminated {scheme} prefix", ErrMalformed)
		}
		prefix, body = strings.ToUpper(hash[1:end]), hash[end+1:]
		if !isSupportedPrefix(prefix) {
			return nil, fmt.Errorf("password: %s: %w", describeScheme(prefix), ErrUnknownScheme)
		}
	}

	var (
		h   parsedHash
		err error
	)
	switch {
	case strings.HasPrefix(body, "$argon2id$"):
		h, err = parseArgon2id(body)
	case strings.HasPrefix(body, "$2a$"), strings.HasPrefix(body, "$2b$"), strings.HasPrefix(body, "$2y$"):
		h, err = parseBcrypt(body)
	case strings.HasPrefix(body, "$6$"):
		h, err = parseSHACrypt(sha512Crypt, body[3:])
	case strings.HasPrefix(body, "$5$"):
		h, err = parseSHACrypt(sha256Crypt, body[3:])
	default:
		if prefix != "" {
			// A supported prefix whose body is none of its formats.
			return nil, malformed(prefix, "not in the scheme's format")
		}
		return nil, fmt.Errorf("password: %s: %w", describeBare(body), ErrUnknownScheme)
	}
	if err != nil {
		return nil, err
	}
	if prefix != "" && prefix != h.schemeName() {
		// Dovecot would hand such a hash to crypt(3) regardless of the
		// prefix; we refuse it so that the prefix can be trusted, e.g. by
		// NeedsRehash.
		return nil, malformed(prefix, "hash is of scheme "+h.schemeName())
	}
	return h, nil
}

// malformed builds an ErrMalformed error. detail must be a fixed string
// chosen by this package, never text taken from the hash or password.
func malformed(scheme, detail string) error {
	return fmt.Errorf("password: %s: %w: %s", scheme, ErrMalformed, detail)
}

func isSupportedPrefix(p string) bool {
	switch p {
	case "ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT":
		return true
	}
	return false
}

// knownSchemes lists Dovecot (and our own) scheme names. Messages about an
// unsupported scheme name it only if it is in this list, so that arbitrary
// text from a hash, which might be a misimported plaintext password, never
// reaches a log.
var knownSchemes = map[string]bool{
	"ARGON2I": true, "ARGON2ID": true, "BLF-CRYPT": true, "CLEAR": true,
	"CLEARTEXT": true, "CRAM-MD5": true, "CRYPT": true, "DES-CRYPT": true,
	"DIGEST-MD5": true, "HMAC-MD5": true, "LANMAN": true, "LDAP-MD5": true,
	"MD5": true, "MD5-CRYPT": true, "NTLM": true, "OTP": true, "PBKDF2": true,
	"PLAIN": true, "PLAIN-MD4": true, "PLAIN-MD5": true, "PLAIN-TRUNC": true,
	"RPA": true, "SCRAM-SHA-1": true, "SCRAM-SHA-256": true, "SHA": true,
	"SHA1": true, "SHA256": true, "SHA256-CRYPT": true, "SHA512": true,
	"SHA512-CRYPT": true, "SKEY": true, "SMD5": true, "SSHA": true,
	"SSHA256": true, "SSHA512": true, "ARGON2": true, "BCRYPT": true,
}

// describeScheme names a scheme for an error message if it is a known
// name (ignoring a Dovecot ".ENCODING" suffix), and otherwise says only
// that it was not recognised.
func describeScheme(name string) string {
	base, _, _ := strings.Cut(strings.ToUpper(name), ".")
	if knownSchemes[base] {
		return "scheme " + base
	}
	return "unrecognised scheme name"
}

// bareIDs maps crypt(3)/PHC identifiers of unsupported formats to names,
// for the same reason as knownSchemes.
var bareIDs = map[string]string{
	"1": "MD5-CRYPT", "2": "BLF-CRYPT $2$", "2x": "BLF-CRYPT $2x$",
	"3": "NT-HASH", "7": "SCRYPT", "y": "YESCRYPT", "gy": "GOST-YESCRYPT",
	"md5": "SUN-MD5", "sha1": "SHA1-CRYPT", "argon2i": "ARGON2I",
	"argon2d": "ARGON2D", "scrypt": "SCRYPT",
}

// describeBare names the format of an unprefixed hash that is none of the
// supported ones.
func describeBare(body string) string {
	if rest, ok := strings.CutPrefix(body, "$"); ok {
		id, _, _ := strings.Cut(rest, "$")
		if name, ok := bareIDs[id]; ok {
			return "scheme " + name
		}
	}
	return "unrecognised hash format"
}

// parseDecimal parses a canonical unsigned decimal (digits only, no sign,
// no leading zero) not above max.
func parseDecimal(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 20 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}
