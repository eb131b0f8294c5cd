package delivery

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// canonical is what the data of content must decode to: every line ending
// in CRLF (a bare LF gets its CR), the last line ended too.
func canonical(content []byte) []byte {
	var out []byte
	for i, b := range content {
		if b == '\n' && (i == 0 || content[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, b)
	}
	switch {
	case len(out) == 0 || bytes.HasSuffix(out, []byte("\n")):
	case out[len(out)-1] == '\r':
		out = append(out, '\n')
	default:
		out = append(out, "\r\n"...)
	}
	return out
}

// undot decodes DATA as a receiver does (RFC 5321 §4.5.2) and reports
// whether the encoding was sound: no bare LF, no line that is a lone dot
// before the end, and the end line last.
func undot(t *testing.T, data []byte) []byte {
	t.Helper()
	if !bytes.HasSuffix(data, []byte(".\r\n")) {
		t.Fatalf("data %q does not end with the dot line", data)
	}
	for i, b := range data {
		if b == '\n' && (i == 0 || data[i-1] != '\r') {
			t.Fatalf("bare LF at %d in %q", i, data)
		}
	}
	lines := strings.SplitAfter(string(data), "\r\n")
	lines = lines[:len(lines)-1] // after the last CRLF: ""
	var out []byte
	for i, l := range lines {
		if l == ".\r\n" {
			if i != len(lines)-1 {
				t.Fatalf("a lone dot ends the data early at line %d of %q", i, data)
			}
			break
		}
		if i == len(lines)-1 {
			t.Fatalf("the last line %q is not the dot", l)
		}
		out = append(out, strings.TrimPrefix(l, ".")...)
	}
	return out
}

// FuzzDotWriter checks that whatever the content and however it is split
// into writes, the DATA encoding decodes to the content with CRLF lines.
func FuzzDotWriter(f *testing.F) {
	for _, s := range []string{"", "a", ".", "..\r\n", "a\r\n.\r\nb", "\n.\n", "x\r", "x\r\r\n", ".a\r\n.b", "line\n\n.\r\n"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, content []byte, split uint8) {
		var buf bytes.Buffer
		bw := bufio.NewWriterSize(&buf, 16)
		dw := &dotWriter{w: bw}
		cut := min(int(split), len(content))
		for _, part := range [][]byte{content[:cut], content[cut:]} {
			if n, err := dw.Write(part); n != len(part) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if err := dw.Close(); err != nil {
			t.Fatal(err)
		}
		if got, want := undot(t, buf.Bytes()), canonical(content); !bytes.Equal(got, want) {
			t.Fatalf("content %q split at %d decodes to %q, want %q", content, cut, got, want)
		}
	})
}

// scan8Ref is the plain byte-by-byte scan the fast one must agree with.
func scan8Ref(p []byte) (eightBit, inHeader bool) {
	header, lineStart := true, true
	for _, b := range p {
		switch {
		case b >= 0x80:
			return true, header
		case b == '\n':
			if lineStart {
				header = false
			}
			lineStart = true
		case b != '\r':
			lineStart = false
		}
	}
	return false, false
}

// FuzzScan8Bit checks the scanner fed in two pieces against scan8Ref.
func FuzzScan8Bit(f *testing.F) {
	for _, s := range []string{"", "a: b\r\n\r\nbody", "S: \xc3\xa9\r\n\r\n", "a: b\r\n\r\n\xff", "\r\n\xff", "a\r\r\n\r\n\x80", "12345678\x80"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, content []byte, split uint8) {
		cut := min(int(split), len(content))
		var sc scanner8
		sc.feed(content[:cut])
		sc.feed(content[cut:])
		want8, wantHdr := scan8Ref(content)
		if sc.eightBit != want8 || (sc.eightBit && sc.inHeader) != wantHdr {
			t.Fatalf("%q split at %d: eightBit %v inHeader %v, want %v %v", content, cut, sc.eightBit, sc.inHeader, want8, wantHdr)
		}
	})
}
