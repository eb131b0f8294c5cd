// Package ids makes the identifiers support staff read out to customers and
// find in logs: session ids (SPEC R12) and queue ids.
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// alphabet is the session id alphabet, [A-Za-z0-9] (SPEC R12).
const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// SessionLen is the length of a session id.
const SessionLen = 22

// Session returns a new session id: 22 characters drawn uniformly from
// [A-Za-z0-9] with crypto/rand, about 131 bits, so ids made on different nodes
// and across restarts do not collide in practice (SPEC R12).
func Session() string {
	var out [SessionLen]byte
	var buf [64]byte
	n := 0
	for n < SessionLen {
		rand.Read(buf[:]) // never fails (crypto/rand, Go ≥1.24)
		for _, b := range buf {
			// Rejection sampling keeps the distribution uniform: 248 is the
			// largest multiple of 62 that fits in a byte.
			if b >= 248 {
				continue
			}
			out[n] = alphabet[b%62]
			n++
			if n == SessionLen {
				break
			}
		}
	}
	return string(out[:])
}

// IsSession reports whether s has the form of a session id.
func IsSession(s string) bool {
	if len(s) != SessionLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

var queueEnc = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// QueueLen is the length of a queue id.
const QueueLen = 24

// Queue returns a new queue id: the time in nanoseconds followed by 7 random
// bytes, in lowercase base32hex, so ids sort by the time they were made and
// are safe as file names.
func Queue(now time.Time) string {
	var b [15]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:])
	return queueEnc.EncodeToString(b[:])
}

// IsQueue reports whether s has the form of a queue id.
func IsQueue(s string) bool {
	if len(s) != QueueLen {
		return false
	}
	_, err := queueEnc.DecodeString(s)
	return err == nil
}
