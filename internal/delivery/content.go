package delivery

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
)

// open returns a reader over m's content: Data when the caller holds it in
// memory, else what Open gives.
func (m *Message) open() (io.ReadCloser, error) {
	if m.Data != nil {
		return io.NopCloser(bytes.NewReader(m.Data)), nil
	}
	return m.Open()
}

// scan8Bit reports whether m's content has any byte outside US-ASCII, and
// whether one is in the header section. The answer is kept in m, so the
// content is scanned once however many hosts and transactions it goes to.
func (m *Message) scan8Bit() (eightBit, utf8Header bool, err error) {
	if m.scanned {
		return m.eightBit, m.utf8Header, nil
	}
	var sc scanner8
	if m.Data != nil {
		sc.feed(m.Data)
	} else {
		rc, err := m.Open()
		if err != nil {
			return false, false, err
		}
		defer rc.Close()
		buf := make([]byte, 32<<10)
		for !sc.eightBit {
			n, err := rc.Read(buf)
			sc.feed(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return false, false, err
			}
		}
	}
	m.scanned, m.eightBit, m.utf8Header = true, sc.eightBit, sc.eightBit && sc.inHeader
	return m.eightBit, m.utf8Header, nil
}

// scanner8 finds the first byte outside US-ASCII in content fed to it in
// pieces, and whether it is in the header section (before the first empty
// line). The header is walked byte by byte, the body a word at a time.
type scanner8 struct {
	// bodySeen is set once the empty line after the header has passed.
	bodySeen bool
	// midLine is set when the last header byte seen was not a line end.
	midLine bool
	// eightBit is set once a byte ≥ 0x80 was found; inHeader says where.
	eightBit, inHeader bool
}

func (s *scanner8) feed(p []byte) {
	for !s.bodySeen && !s.eightBit && len(p) > 0 {
		b := p[0]
		p = p[1:]
		switch {
		case b >= 0x80:
			s.eightBit, s.inHeader = true, true
		case b == '\n':
			// A line with nothing but CRs before its LF is the empty
			// line that ends the header section.
			s.bodySeen = !s.midLine
			s.midLine = false
		case b != '\r':
			s.midLine = true
		}
	}
	if !s.eightBit && has8Bit(p) {
		s.eightBit = true
	}
}

// has8Bit reports whether p has a byte ≥ 0x80, eight bytes at a time.
func has8Bit(p []byte) bool {
	const high = 0x8080808080808080
	for len(p) >= 8 {
		if binary.LittleEndian.Uint64(p)&high != 0 {
			return true
		}
		p = p[8:]
	}
	for _, b := range p {
		if b >= 0x80 {
			return true
		}
	}
	return false
}

// dotWriter writes message data in the DATA encoding (RFC 5321 §4.5.2): a
// line starting with "." gets another one in front, a bare LF becomes CRLF,
// and Close adds the final CRLF, if missing, and ".\r\n". It copies whole
// runs of bytes between line ends, not byte by byte.
type dotWriter struct {
	w *bufio.Writer
	// midLine is set when the last byte written did not end a line.
	midLine bool
	// cr is set when the last byte written was a CR.
	cr bool
}

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if !d.midLine && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return n - len(p), err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return n - len(p), err
			}
			d.midLine, d.cr = true, p[len(p)-1] == '\r'
			return n, nil
		}
		cr := d.cr
		if i > 0 {
			cr = p[i-1] == '\r'
		}
		if _, err := d.w.Write(p[:i]); err != nil {
			return n - len(p), err
		}
		var err error
		if cr {
			err = d.w.WriteByte('\n')
		} else {
			_, err = d.w.WriteString("\r\n")
		}
		if err != nil {
			return n - len(p), err
		}
		d.midLine, d.cr = false, false
		p = p[i+1:]
	}
	return n, nil
}

// Close ends the data: the last line gets its line end if it lacks one,
// then comes the line with the single dot.
func (d *dotWriter) Close() error {
	end := ".\r\n"
	switch {
	case d.cr:
		end = "\n.\r\n"
	case d.midLine:
		end = "\r\n.\r\n"
	}
	if _, err := d.w.WriteString(end); err != nil {
		return err
	}
	return d.w.Flush()
}
