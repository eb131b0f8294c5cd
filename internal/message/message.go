// Package message reads what a client sends after DATA: it enforces CRLF line
// endings (SPEC R16, the SMTP-smuggling defence) and parses the header section
// far enough to check From:/Sender: (SPEC R7) and to see whether Message-ID:
// and Date: must be added (RFC 6409 §8).
package message

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// ErrBareLineEnding means a CR not followed by LF, or an LF not preceded by
// CR, was seen. Every SMTP-smuggling end-of-data lookalike (\n.\n, \r.\r,
// \n.\r\n, \r\n.\n, …) contains one, so refusing them all refuses smuggling
// without having to recognise each trick (SPEC R16).
var ErrBareLineEnding = errors.New("message contains a bare CR or LF; lines must end with CRLF")

// ErrHeaderTooLarge means the header section exceeded the limit.
var ErrHeaderTooLarge = errors.New("header section too large")

// LineEndings wraps r and fails with ErrBareLineEnding at the first bare CR or
// bare LF. It passes bytes through unchanged.
type LineEndings struct {
	r    io.Reader
	cr   bool // previous byte was CR
	err  error
	seen int64
}

// NewLineEndings returns a checking reader over r.
func NewLineEndings(r io.Reader) *LineEndings { return &LineEndings{r: r} }

// Read implements io.Reader.
func (l *LineEndings) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.r.Read(p)
	for i := 0; i < n; i++ {
		c := p[i]
		if l.cr && c != '\n' || !l.cr && c == '\n' {
			l.err = ErrBareLineEnding
			return i, l.err
		}
		l.cr = c == '\r'
	}
	l.seen += int64(n)
	if err == io.EOF && l.cr {
		// The content ended in a lone CR.
		l.err = ErrBareLineEnding
		return n, l.err
	}
	return n, err
}

// Field is one header field, unfolded.
type Field struct {
	// Name is the field name as sent.
	Name string
	// Value is the unfolded value with surrounding white space trimmed.
	Value string
}

// Header is a parsed header section.
type Header struct {
	// Raw is the header section exactly as read, including the empty line
	// that ends it when there was one.
	Raw []byte
	// Fields are the fields in order.
	Fields []Field
}

// ReadHeader reads the header section from br: every line up to and including
// the first empty line, or everything if the content ends first. It fails with
// ErrHeaderTooLarge past max bytes.
func ReadHeader(br *bufio.Reader, max int) ([]byte, error) {
	var raw []byte
	// lineStart is where the current line begins in raw: a line longer than
	// br's buffer comes in pieces, and only a whole line can be the empty
	// one. Taking a piece ("\n" or "\r\n") for it would end the header
	// early and hide the fields after it from the sender check (SPEC R7).
	lineStart := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(raw)+len(line) > max {
			return nil, ErrHeaderTooLarge
		}
		raw = append(raw, line...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			return raw, nil
		}
		if err != nil {
			return nil, err
		}
		if whole := raw[lineStart:]; len(whole) == 2 && whole[0] == '\r' || len(whole) == 1 {
			return raw, nil
		}
		lineStart = len(raw)
	}
}

// Parse splits a header section into fields. A line that is neither a field
// (name, colon, value) nor a continuation is an error: mail clients do not
// send one, and guessing where the header ends is how a forged From: could
// hide from this check but not from the recipient's reader.
func Parse(raw []byte) (*Header, error) {
	h := &Header{Raw: raw}
	// parts are the pieces of the last field's value, joined when the field
	// ends: concatenating at every continuation line would copy the value
	// again for each, quadratic in a field folded over many short lines.
	var parts []string
	endField := func() {
		if len(h.Fields) > 0 {
			h.Fields[len(h.Fields)-1].Value = strings.Join(parts, " ")
		}
		parts = parts[:0]
	}
	rest := string(raw)
	for i := 0; rest != ""; i++ {
		line, after, _ := strings.Cut(rest, "\n")
		rest = after
		l := strings.TrimRight(line, "\r")
		if l == "" {
			if rest != "" {
				return nil, fmt.Errorf("header line %d: unexpected empty line", i+1)
			}
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			if len(h.Fields) == 0 {
				return nil, fmt.Errorf("header line %d: continuation line before any field", i+1)
			}
			if p := strings.TrimSpace(l); p != "" {
				parts = append(parts, p)
			}
			continue
		}
		colon := strings.IndexByte(l, ':')
		if colon <= 0 {
			return nil, fmt.Errorf("header line %d is not a header field (no name and colon)", i+1)
		}
		name := l[:colon]
		for j := 0; j < len(name); j++ {
			// RFC 5322 §2.2: field names are printable US-ASCII except colon.
			if name[j] <= ' ' || name[j] > '~' {
				return nil, fmt.Errorf("header line %d: invalid character in field name %q", i+1, name)
			}
		}
		endField()
		h.Fields = append(h.Fields, Field{Name: name})
		if value := strings.TrimSpace(l[colon+1:]); value != "" {
			parts = append(parts, value)
		}
	}
	endField()
	return h, nil
}

// Values returns the values of every field called name (case-insensitive).
func (h *Header) Values(name string) []string {
	var out []string
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Has reports whether a field called name is present.
func (h *Header) Has(name string) bool {
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// addressParser reads address lists whatever the charset of their display
// names. net/mail alone decodes RFC 2047 words only in UTF-8, US-ASCII and
// ISO-8859-1 and refuses the whole list otherwise, which would refuse every
// message whose client names the sender in ISO-8859-2 or windows-1250, as
// Czech mail clients do. Only the addresses are checked, so the name's bytes
// are passed through undecoded.
var addressParser = &mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(charset string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// Addresses parses an address-list header value (From:, Sender:) and returns
// the bare addresses. A list that names no mailbox is an error.
func Addresses(value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, errors.New("empty")
	}
	list, err := addressParser.ParseList(value)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		// An empty group ("undisclosed:;") names nobody, so it cannot pass
		// a sender check.
		return nil, errors.New("no address")
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out, nil
}
