package delivery

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
)

// Limits on what a remote server may send in one reply, so that a hostile or
// broken server cannot make submitd buffer without end.
const (
	// maxReplyLine is the longest reply line accepted, CRLF included; RFC
	// 5321 §4.5.3.1.5 sets 512, and real servers exceed it, so allow more.
	maxReplyLine = 2000
	// maxReplyLines is the most lines one (multi-line) reply may have.
	maxReplyLines = 200
)

// Reply is one SMTP reply (RFC 5321 §4.2).
type Reply struct {
	// Code is the three-digit reply code.
	Code int
	// Lines are the texts after the code and separator, one per line.
	Lines []string
}

// String formats the reply on one line, as it goes into a Result and so into
// a DSN's Diagnostic-Code: "550 5.1.1 no such user". The lines of a
// multi-line reply are joined with a space, and bytes outside printable
// US-ASCII become "?" because a DSN carries the text in a header field
// (RFC 3464 §2.3.6).
func (r Reply) String() string {
	text := strings.Map(func(c rune) rune {
		if c < ' ' || c > '~' {
			return '?'
		}
		return c
	}, strings.Join(r.Lines, " "))
	if text == "" {
		return fmt.Sprintf("%03d", r.Code)
	}
	return fmt.Sprintf("%03d %s", r.Code, text)
}

// Class is the first digit of the code: 2 success, 3 intermediate, 4
// transient failure, 5 permanent failure (RFC 5321 §4.2.1).
func (r Reply) Class() int { return r.Code / 100 }

// ErrBadReply is wrapped by every malformed-reply error.
var ErrBadReply = errors.New("malformed SMTP reply")

// ReadReply reads one reply: lines of "DDD-text" ending with "DDD text" or a
// bare "DDD". Every line must carry the same code (RFC 5321 §4.2.1). Lines may
// end in CRLF or, from sloppy servers, a bare LF.
func ReadReply(br *bufio.Reader) (Reply, error) {
	var r Reply
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return Reply{}, fmt.Errorf("%w: more than %d lines", ErrBadReply, maxReplyLines)
		}
		line, err := readLine(br)
		if err != nil {
			return Reply{}, err
		}
		if len(line) < 3 || !isDigits(line[:3]) || line[0] < '2' || line[0] > '5' {
			return Reply{}, fmt.Errorf("%w: %q", ErrBadReply, clip(line))
		}
		code := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		if n > 0 && code != r.Code {
			return Reply{}, fmt.Errorf("%w: code %d within reply %d", ErrBadReply, code, r.Code)
		}
		r.Code = code
		more := false
		text := ""
		if len(line) > 3 {
			switch line[3] {
			case '-':
				more = true
			case ' ':
			default:
				return Reply{}, fmt.Errorf("%w: %q", ErrBadReply, clip(line))
			}
			text = line[4:]
		}
		r.Lines = append(r.Lines, text)
		if !more {
			return r, nil
		}
	}
}

// readLine reads one line without its line ending, failing past maxReplyLine.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(b)+len(chunk) > maxReplyLine {
			return "", fmt.Errorf("%w: line longer than %d bytes", ErrBadReply, maxReplyLine)
		}
		b = append(b, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		s := strings.TrimSuffix(string(b[:len(b)-1]), "\r")
		for i := 0; i < len(s); i++ {
			// A reply is text; a NUL or other control byte means something
			// other than an SMTP server answered.
			if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
				return "", fmt.Errorf("%w: control character in %q", ErrBadReply, clip(s))
			}
		}
		return s, nil
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
