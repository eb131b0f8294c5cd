package smtpd

import (
	"bufio"
	"bytes"
	"io"
)

// States of the DATA decoder at a buffer boundary.
const (
	// dotMid is inside a line.
	dotMid = iota
	// dotStart is at the start of a line: after CRLF, or first of all.
	dotStart
	// dotDot has seen a "." at the start of a line.
	dotDot
	// dotDotCR has seen ".\r" at the start of a line.
	dotDotCR
)

// readDotData reads the content of DATA from br up to and including the
// line "." that ends it, undoes dot-stuffing (RFC 5321 §4.5.2) and writes the
// content to w. Only CRLF "." CRLF ends the data: every lookalike with a bare
// CR or LF (SPEC R16) is passed on as content, for the intake to refuse, and
// the data goes on to the real end, so that nothing the client sends after a
// lookalike is taken for a command. The decoder keeps its state across
// buffer refills, so the outcome is the same however the bytes arrive. The
// bytes after the end stay in br for the commands that follow.
func readDotData(br *bufio.Reader, w io.Writer) error {
	st := dotStart
	// cr is whether the byte before the current position, inside a line,
	// was a CR: the LF that follows it ends the line.
	cr := false
	for {
		if _, err := br.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		buf, _ := br.Peek(br.Buffered())
		run := 0 // start of the bytes to pass on unchanged
		i := 0
		for i < len(buf) {
			switch st {
			case dotMid:
				j := bytes.IndexByte(buf[i:], '\n')
				if j < 0 {
					cr = buf[len(buf)-1] == '\r'
					i = len(buf)
					continue
				}
				lf := i + j
				if lf > i && buf[lf-1] == '\r' || lf == i && cr {
					st = dotStart
				}
				cr = false
				i = lf + 1
			case dotStart:
				if buf[i] != '.' {
					st, cr = dotMid, false
					continue
				}
				// The leading dot is never content: either it ends the
				// data or it is the stuffing of a line starting with ".".
				w.Write(buf[run:i])
				i++
				run = i
				st = dotDot
			case dotDot:
				if buf[i] == '\r' {
					w.Write(buf[run:i])
					i++
					run = i
					st = dotDotCR
					continue
				}
				st, cr = dotMid, false
			case dotDotCR:
				if buf[i] == '\n' {
					br.Discard(i + 1)
					return nil
				}
				// ".\r" and something else: the CR held back is content
				// (a bare CR, which the intake refuses).
				w.Write([]byte{'\r'})
				st, cr = dotMid, true
			}
		}
		w.Write(buf[run:])
		br.Discard(len(buf))
	}
}
