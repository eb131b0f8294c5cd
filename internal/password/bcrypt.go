package password

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is the cost of new bcrypt hashes (SPEC R2 alternative scheme).
const bcryptCost = 10

// bcryptAlphabet is bcrypt's own base-64 alphabet.
const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// bcryptHash is a parsed "$2a$", "$2b$" or "$2y$" hash.
type bcryptHash struct {
	s string // the bare hash, e.g. "$2y$10$…"
}

func (h *bcryptHash) schemeName() string { return "BLF-CRYPT" }

// verify uses x/crypto/bcrypt, whose final comparison is constant-time
// (crypto/subtle), as SPEC R2 requires. It accepts any minor version
// letter and reproduces it, so $2b$ and $2y$ hashes (the same algorithm as
// $2a$ for all practical inputs) work unchanged. Like every C
// implementation it uses only the first 72 bytes of the password.
func (h *bcryptHash) verify(pw string) bool {
	return bcrypt.CompareHashAndPassword([]byte(h.s), []byte(pw)) == nil
}

func hashBcrypt(pw string) (string, error) {
	b, err := bcrypt.GenerateFromPassword([]byte(pw), bcryptCost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return "", errors.New("password: BLF-CRYPT: password longer than 72 bytes")
	}
	if err != nil {
		return "", fmt.Errorf("password: BLF-CRYPT: %w", err)
	}
	s, ok := strings.CutPrefix(string(b), "$2a$")
	if !ok {
		return "", errors.New("password: BLF-CRYPT: unexpected bcrypt output")
	}
	// Dovecot writes $2y$ (crypt_blowfish's tag for the corrected
	// algorithm); x/crypto writes $2a$ for the same computation.
	return "{BLF-CRYPT}$2y$" + s, nil
}

// parseBcrypt checks "$2?$CC$" + 22 salt characters + 31 hash characters.
// x/crypto/bcrypt's own parser is lenient (any minor letter, any length),
// so the shape is validated here.
func parseBcrypt(s string) (*bcryptHash, error) {
	const scheme = "BLF-CRYPT"
	if len(s) != 60 {
		return nil, malformed(scheme, "wrong length")
	}
	if s[6] != '$' {
		return nil, malformed(scheme, "bad cost field")
	}
	cost, ok := parseTwoDigits(s[4:6])
	if !ok || cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, malformed(scheme, "cost out of range")
	}
	rest := s[7:]
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(bcryptAlphabet, rest[i]) < 0 {
			return nil, malformed(scheme, "bad encoding")
		}
	}
	// The 16-byte salt leaves 4 unused bits in its 22nd character and the
	// 23-byte digest 2 in its 31st; genuine hashes have them zero
	// (crypt_blowfish even rewrites the salt character), so others could
	// never verify under Dovecot.
	if strings.IndexByte(bcryptAlphabet, rest[21])&0x0f != 0 ||
		strings.IndexByte(bcryptAlphabet, rest[52])&0x03 != 0 {
		return nil, malformed(scheme, "bad encoding")
	}
	return &bcryptHash{s: s}, nil
}

// parseTwoDigits parses exactly two decimal digits ("04".."31" for bcrypt).
func parseTwoDigits(s string) (int, bool) {
	if len(s) != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' {
		return 0, false
	}
	return int(s[0]-'0')*10 + int(s[1]-'0'), true
}
