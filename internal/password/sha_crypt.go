package password

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"hash"
	"strings"
)

// This file implements Ulrich Drepper's SHA-crypt ("Unix crypt using
// SHA-256 and SHA-512", the $5$ and $6$ formats of glibc crypt(3)). It is
// written from the published algorithm description, because Go's standard
// library and x/crypto do not ship it and SPEC R2 requires that imported
// Dovecot {SHA512-CRYPT} hashes keep working. Only verification is offered:
// new hashes are argon2id or bcrypt (SPEC R2).

const (
	// shaCryptRoundsDefault applies when the hash has no "rounds=N$" field.
	shaCryptRoundsDefault = 5000
	// shaCryptRoundsMin and shaCryptRoundsMax are the algorithm's limits.
	// Reference implementations clamp a requested value into this range and
	// then write the clamped value into the result, so a stored hash whose
	// rounds field lies outside it was not produced by crypt(3): reject it
	// as malformed rather than guess.
	shaCryptRoundsMin = 1000
	shaCryptRoundsMax = 999999999
	// shaCryptSaltMax is the longest salt the algorithm uses; crypt(3)
	// truncates longer ones before writing the result.
	shaCryptSaltMax = 16
)

// cryptAlphabet is the crypt(3) base-64 alphabet (not RFC 4648's).
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// shaCryptVariant describes one of the two SHA-crypt flavours.
type shaCryptVariant struct {
	id      string // "5" or "6", as in "$6$"
	scheme  string // Dovecot scheme name, used in error messages
	newHash func() hash.Hash
	size    int // digest size in bytes
	// perm lists, for every full 4-character group of the encoded
	// result, the three digest bytes it packs (most significant first).
	// The order is the algorithm's fixed byte permutation.
	perm [][3]int
	// tail is the final partial group: digest bytes (most significant
	// first, -1 meaning a zero byte) and how many characters it yields.
	tail      [3]int
	tailChars int
	encLen    int // length of the encoded digest
}

var sha512Crypt = &shaCryptVariant{
	id:      "6",
	scheme:  "SHA512-CRYPT",
	newHash: sha512.New,
	size:    sha512.Size,
	perm: [][3]int{
		{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45},
		{25, 46, 4}, {47, 5, 26}, {6, 27, 48}, {28, 49, 7},
		{50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32},
		{12, 33, 54}, {34, 55, 13}, {56, 14, 35}, {15, 36, 57},
		{37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19},
		{62, 20, 41},
	},
	tail:      [3]int{-1, -1, 63},
	tailChars: 2,
	encLen:    86,
}

var sha256Crypt = &shaCryptVariant{
	id:      "5",
	scheme:  "SHA256-CRYPT",
	newHash: sha256.New,
	size:    sha256.Size,
	perm: [][3]int{
		{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23},
		{24, 4, 14}, {15, 25, 5}, {6, 16, 26}, {27, 7, 17},
		{18, 28, 8}, {9, 19, 29},
	},
	tail:      [3]int{-1, 31, 30},
	tailChars: 3,
	encLen:    43,
}

// shaCryptHash is a parsed "$5$" or "$6$" hash.
type shaCryptHash struct {
	v      *shaCryptVariant
	rounds int
	salt   string
	sum    string // encoded digest as stored
}

func (h *shaCryptHash) schemeName() string { return h.v.scheme }

// verify recomputes the digest and compares the encoded forms in constant
// time (SPEC R2: no timing oracle on the stored hash).
func (h *shaCryptHash) verify(pw string) bool {
	got := shaCryptEncode(h.v, shaCryptDigest(h.v, []byte(pw), []byte(h.salt), h.rounds))
	return subtle.ConstantTimeCompare(got, []byte(h.sum)) == 1
}

// parseSHACrypt parses the part of a hash after "$<id>$":
// "[rounds=N$]salt$digest".
func parseSHACrypt(v *shaCryptVariant, rest string) (*shaCryptHash, error) {
	h := &shaCryptHash{v: v, rounds: shaCryptRoundsDefault}
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		num, after, found := strings.Cut(r, "$")
		if !found {
			return nil, malformed(v.scheme, "truncated")
		}
		n, ok := parseDecimal(num, shaCryptRoundsMax)
		if !ok || n < shaCryptRoundsMin {
			return nil, malformed(v.scheme, "rounds out of range")
		}
		h.rounds = int(n)
		rest = after
	}
	salt, sum, found := strings.Cut(rest, "$")
	if !found {
		return nil, malformed(v.scheme, "truncated")
	}
	if len(salt) > shaCryptSaltMax {
		return nil, malformed(v.scheme, "salt too long")
	}
	for i := 0; i < len(salt); i++ {
		// Any byte but '$' is legal in the algorithm; control bytes are
		// refused because no real crypt(3) salt generator emits them and
		// they would corrupt the line-oriented formats hashes live in.
		if c := salt[i]; c < 0x20 || c == 0x7f {
			return nil, malformed(v.scheme, "bad salt character")
		}
	}
	if len(sum) != v.encLen {
		return nil, malformed(v.scheme, "digest has wrong length")
	}
	for i := 0; i < len(sum); i++ {
		if strings.IndexByte(cryptAlphabet, sum[i]) < 0 {
			return nil, malformed(v.scheme, "bad digest encoding")
		}
	}
	// The last character carries fewer than six significant bits; the
	// unused high bits are always zero in a genuine result, so anything
	// else can never verify and is better reported at import time.
	if strings.IndexByte(cryptAlphabet, sum[len(sum)-1]) >= 1<<(8*v.tailBytes()-6*(v.tailChars-1)) {
		return nil, malformed(v.scheme, "bad digest encoding")
	}
	h.salt, h.sum = salt, sum
	return h, nil
}

// tailBytes is the number of real (non-zero-padding) digest bytes in the
// final partial group.
func (v *shaCryptVariant) tailBytes() int {
	n := 0
	for _, i := range v.tail {
		if i >= 0 {
			n++
		}
	}
	return n
}

// shaCryptDigest runs the SHA-crypt key stretching and returns the raw
// final digest.
func shaCryptDigest(v *shaCryptVariant, pw, salt []byte, rounds int) []byte {
	// Digest B = H(pw || salt || pw).
	h := v.newHash()
	h.Write(pw)
	h.Write(salt)
	h.Write(pw)
	b := h.Sum(nil)

	// Digest A = H(pw || salt || B repeated to len(pw) bytes || for every
	// bit of len(pw), least significant first: B if set, pw if clear).
	h.Reset()
	h.Write(pw)
	h.Write(salt)
	for n := len(pw); n > 0; n -= v.size {
		h.Write(b[:min(n, v.size)])
	}
	for n := len(pw); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write(b)
		} else {
			h.Write(pw)
		}
	}
	a := h.Sum(nil)

	// P = H(pw repeated len(pw) times), stretched/cut to len(pw) bytes.
	h.Reset()
	for range len(pw) {
		h.Write(pw)
	}
	p := repeatTo(h.Sum(nil), len(pw))

	// S = H(salt repeated 16+A[0] times), stretched/cut to len(salt) bytes.
	h.Reset()
	for range 16 + int(a[0]) {
		h.Write(salt)
	}
	s := repeatTo(h.Sum(nil), len(salt))

	// The rounds loop: each round hashes a mix of the previous digest, P
	// and S chosen by the round number's divisibility by 2, 3 and 7.
	c := a
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(c[:0])
	}
	return c
}

// repeatTo returns n bytes made of d repeated (and cut at the end).
func repeatTo(d []byte, n int) []byte {
	out := make([]byte, n)
	for i := 0; i < n; i += len(d) {
		copy(out[i:], d)
	}
	return out
}

// shaCryptEncode turns a raw digest into its crypt(3) text form using the
// variant's byte permutation: each group of three bytes becomes four
// characters, least significant six bits first.
func shaCryptEncode(v *shaCryptVariant, d []byte) []byte {
	out := make([]byte, 0, v.encLen)
	put := func(idx [3]int, chars int) {
		var w uint32
		for _, i := range idx {
			w <<= 8
			if i >= 0 {
				w |= uint32(d[i])
			}
		}
		for range chars {
			out = append(out, cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	for _, g := range v.perm {
		put(g, 4)
	}
	put(v.tail, v.tailChars)
	return out
}
