package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Parameters for new argon2id hashes (SPEC R2 default scheme). They are
// OWASP's minimum recommendation (19 MiB, 2 passes, 1 lane), which keeps a
// login well under 100 ms on a small server.
const (
	argon2Memory  = 19456 // KiB
	argon2Time    = 2
	argon2Threads = 1
	argon2SaltLen = 16
	argon2KeyLen  = 32
)

// Limits on parameters read from a stored argon2id hash. Verification
// spends whatever the hash asks for, so a hostile import could otherwise
// demand terabytes of memory or hours of CPU per login (SPEC R2).
const (
	argon2MaxMemory  = 4 << 20 // KiB, i.e. 4 GiB
	argon2MaxTime    = 100
	argon2MaxThreads = 255 // also the most x/crypto/argon2 supports
	// The reference implementation (and RFC 9106) refuse salts shorter
	// than 8 bytes and tags shorter than 4 bytes; so do we, so that what
	// we accept is exactly what a reference verifier would.
	argon2MinSaltLen = 8
	argon2MinKeyLen  = 4
)

// phcB64 is the PHC string format's base64: standard alphabet, no padding.
// Strict rejects encodings with non-zero unused trailing bits.
var phcB64 = base64.RawStdEncoding.Strict()

// argon2Hash is a parsed "$argon2id$v=19$m=M,t=T,p=P$salt$key" string.
type argon2Hash struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func (h *argon2Hash) schemeName() string { return "ARGON2ID" }

// verify derives the key with the stored parameters and compares it in
// constant time (SPEC R2).
func (h *argon2Hash) verify(pw string) bool {
	k := argon2.IDKey([]byte(pw), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}

func hashArgon2id(pw string) string {
	salt := make([]byte, argon2SaltLen)
	rand.Read(salt) // never fails; see crypto/rand.Read
	key := argon2.IDKey([]byte(pw), salt, argon2Time, argon2Memory, argon2Threads, argon2KeyLen)
	return fmt.Sprintf("{ARGON2ID}$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argon2Memory, argon2Time, argon2Threads,
		phcB64.EncodeToString(salt), phcB64.EncodeToString(key))
}

// parseArgon2id parses a PHC argon2id string. The cost parameters are read
// from the string, never assumed, and bounded (see the limits above).
func parseArgon2id(s string) (*argon2Hash, error) {
	const scheme = "ARGON2ID"
	f := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(f) != 6 {
		return nil, malformed(scheme, "wrong number of fields")
	}
	// x/crypto/argon2 implements only version 0x13 (19); older hashes
	// omit the field or say v=16 and would compute a different key.
	if f[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return nil, malformed(scheme, "unsupported version")
	}
	params := strings.Split(f[3], ",")
	if len(params) != 3 {
		return nil, malformed(scheme, "bad parameter list")
	}
	var vals [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		num, ok := strings.CutPrefix(params[i], name)
		if !ok {
			return nil, malformed(scheme, "bad parameter list")
		}
		if vals[i], ok = parseDecimal(num, 1<<32-1); !ok {
			return nil, malformed(scheme, "bad parameter value")
		}
	}
	m, t, p := vals[0], vals[1], vals[2]
	if t < 1 || t > argon2MaxTime {
		return nil, malformed(scheme, "time cost out of range")
	}
	if p < 1 || p > argon2MaxThreads {
		return nil, malformed(scheme, "parallelism out of range")
	}
	// Argon2 needs at least 8 KiB per lane; x/crypto would silently round
	// a smaller value up and compute a key no reference verifier agrees
	// with, so refuse it.
	if m < 8*p || m > argon2MaxMemory {
		return nil, malformed(scheme, "memory cost out of range")
	}
	salt, ok := decodePHCB64(f[4])
	if !ok {
		return nil, malformed(scheme, "bad salt encoding")
	}
	if len(salt) < argon2MinSaltLen {
		return nil, malformed(scheme, "salt too short")
	}
	key, ok := decodePHCB64(f[5])
	if !ok {
		return nil, malformed(scheme, "bad key encoding")
	}
	if len(key) < argon2MinKeyLen {
		return nil, malformed(scheme, "key too short")
	}
	return &argon2Hash{memory: uint32(m), time: uint32(t), threads: uint8(p), salt: salt, key: key}, nil
}

// decodePHCB64 decodes unpadded standard base64. encoding/base64 silently
// skips CR and LF, so the alphabet is checked first to keep the accepted
// text canonical.
func decodePHCB64(s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return nil, false
		}
	}
	b, err := phcB64.DecodeString(s)
	return b, err == nil
}
