package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// smuggling lists end-of-data lookalikes (SPEC R16); each contains a bare CR
// or a bare LF.
var smuggling = []string{"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\n.\r", "\r\n.\r", ".\n", "\r\n\n", "\r\r\n"}

func readAll(t testing.TB, data string, chunk int) ([]byte, error) {
	r := NewLineEndings(&chunker{data: []byte(data), n: chunk})
	return io.ReadAll(r)
}

// chunker returns data n bytes at a time, to cross every buffer boundary.
type chunker struct {
	data []byte
	n    int
}

func (c *chunker) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func TestLineEndings(t *testing.T) {
	good := "From: a@b.cz\r\n\r\nline\r\n.. dotted\r\n"
	for chunk := 1; chunk < 8; chunk++ {
		got, err := readAll(t, good, chunk)
		if err != nil || string(got) != good {
			t.Fatalf("chunk %d: %q, %v", chunk, got, err)
		}
		for _, s := range smuggling {
			_, err := readAll(t, "From: a@b.cz\r\n\r\nx"+s+"MAIL FROM:<x@y.cz>\r\n", chunk)
			if !errors.Is(err, ErrBareLineEnding) {
				t.Fatalf("chunk %d, %q: err %v", chunk, s, err)
			}
		}
		if _, err := readAll(t, "ends in CR\r", chunk); !errors.Is(err, ErrBareLineEnding) {
			t.Fatalf("trailing CR: %v", err)
		}
	}
}

func TestReadHeaderAndParse(t *testing.T) {
	raw := "From: Jan <jan@firma.cz>\r\nSubject: a\r\n  folded\r\nTo: x@y.cz\r\n\r\nbody\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	h, err := ReadHeader(br, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if string(h) != "From: Jan <jan@firma.cz>\r\nSubject: a\r\n  folded\r\nTo: x@y.cz\r\n\r\n" {
		t.Fatalf("header %q", h)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "body\r\n" {
		t.Fatalf("rest %q", rest)
	}
	p, err := Parse(h)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Values("subject"); len(got) != 1 || got[0] != "a folded" {
		t.Fatalf("Subject %q", got)
	}
	// Unfolding joins the pieces with one space, empty ones left out.
	p, err = Parse([]byte("Subject:\r\n first\r\n \t \r\n\tsecond  \r\nTo: x@y.cz\r\nX-Empty: \r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Values("Subject"); len(got) != 1 || got[0] != "first second" {
		t.Fatalf("Subject %q", got)
	}
	if got := p.Values("To"); len(got) != 1 || got[0] != "x@y.cz" {
		t.Fatalf("To %q", got)
	}
	if got := p.Values("X-Empty"); len(got) != 1 || got[0] != "" {
		t.Fatalf("X-Empty %q", got)
	}
	if !p.Has("TO") || p.Has("Cc") {
		t.Fatal("Has")
	}
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader(strings.Repeat("X-A: b\r\n", 100))), 100); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	for _, bad := range []string{"no colon here\r\n", " continuation first\r\n", ": no name\r\n", "Bad Name: x\r\n"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	// A line longer than the buffer ending at its edge is not an empty line.
	for _, pad := range []int{10, 11} {
		raw := "X-A: " + strings.Repeat("x", pad) + "\r\nSender: ceo@bank.example\r\n\r\nbody\r\n"
		h, err := ReadHeader(bufio.NewReaderSize(strings.NewReader(raw), 16), 1024)
		if err != nil || string(h) != strings.TrimSuffix(raw, "body\r\n") {
			t.Fatalf("line of %d at the buffer edge: header %q, %v", len("X-A: ")+pad, h, err)
		}
	}
	// A message without a body and without the empty line is all header.
	h, err = ReadHeader(bufio.NewReader(strings.NewReader("From: a@b.cz\r\n")), 1024)
	if err != nil || string(h) != "From: a@b.cz\r\n" {
		t.Fatalf("headers only: %q %v", h, err)
	}
}

func TestAddresses(t *testing.T) {
	cases := []struct {
		in   string
		want string
		ok   bool
	}{
		{"jan@firma.cz", "jan@firma.cz", true},
		{"Jan Novák <jan@firma.cz>", "jan@firma.cz", true},
		{"=?utf-8?q?Jan_Nov=C3=A1k?= <jan@firma.cz>, eva@jina.cz", "jan@firma.cz,eva@jina.cz", true},
		{"\"Quoted, Name\" <q@firma.cz>", "q@firma.cz", true},
		{"=?iso-8859-2?Q?Jan_Nov=E1k?= <jan@firma.cz>", "jan@firma.cz", true},
		{"=?windows-1250?Q?ceo=40bank.example?= <jan@firma.cz>", "jan@firma.cz", true},
		{"=?x-unknown?B?AAA=?= <ceo@bank.example>", "ceo@bank.example", true},
		{"", "", false},
		{"<<<", "", false},
		{"undisclosed-recipients:;", "", false},
	}
	for _, c := range cases {
		got, err := Addresses(c.in)
		if (err == nil) != c.ok || c.ok && strings.Join(got, ",") != c.want {
			t.Errorf("Addresses(%q) = %q, %v", c.in, got, err)
		}
	}
}

// FuzzData runs message content through the checks the DATA path applies:
// never a panic, never a bare CR or LF let through, and when the content is
// accepted the header and the rest put together are the input unchanged.
func FuzzData(f *testing.F) {
	f.Add([]byte("From: a@b.cz\r\nSubject: x\r\n\r\nbody\r\n"))
	for _, s := range smuggling {
		f.Add([]byte("From: a@b.cz\r\n\r\nx" + s + "MAIL FROM:<x@y.cz>\r\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The smallest buffer, so lines longer than it are common.
		br := bufio.NewReaderSize(NewLineEndings(bytes.NewReader(data)), 16)
		h, err := ReadHeader(br, 4096)
		if err != nil {
			return
		}
		// The header ends at the first empty line and nowhere else.
		if end := bytes.Index(h, []byte("\r\n\r\n")); end >= 0 && end+4 != len(h) || bytes.HasPrefix(h, []byte("\r\n")) && len(h) != 2 {
			t.Fatalf("header %q runs past its first empty line", h)
		}
		if len(h) < len(data) && !bytes.HasSuffix(h, []byte("\r\n\r\n")) && string(h) != "\r\n" {
			t.Fatalf("header %q ends before its empty line", h)
		}
		rest, err := io.ReadAll(br)
		if err != nil {
			if !errors.Is(err, ErrBareLineEnding) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		all := append(append([]byte{}, h...), rest...)
		if !bytes.Equal(all, data) {
			t.Fatalf("content changed")
		}
		for i, c := range all {
			if c == '\n' && (i == 0 || all[i-1] != '\r') || c == '\r' && (i+1 >= len(all) || all[i+1] != '\n') {
				t.Fatalf("bare line ending at %d accepted", i)
			}
		}
		if p, err := Parse(h); err == nil {
			for _, f := range p.Fields {
				if strings.ContainsAny(f.Name, ": \t\r\n") {
					t.Fatalf("bad field name %q", f.Name)
				}
				Addresses(f.Value)
			}
		}
	})
}

// foldedHeader is a header section of about size bytes whose one field is
// folded over as many lines as fit: the most work Parse can be given per
// byte of header.
func foldedHeader(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: jan@firma.cz\r\nX-Folded: x\r\n")
	for b.Len() < size-2 {
		b.WriteString(" x\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// TestParseFoldedLinear: a field folded over many lines is unfolded in one
// pass, not re-copied at every line (which made a 1 MiB header of short
// folded lines cost tens of gigabytes of copying).
func TestParseFoldedLinear(t *testing.T) {
	raw := foldedHeader(1 << 20)
	var h *Header
	allocs := testing.AllocsPerRun(1, func() {
		var err error
		if h, err = Parse(raw); err != nil {
			t.Fatal(err)
		}
	})
	if v := h.Values("X-Folded"); len(v) != 1 || len(v[0]) != (len(raw)-len("From: jan@firma.cz\r\nX-Folded: x\r\n")-2)/4*2+1 {
		t.Fatalf("X-Folded unfolded to %d bytes", len(v[0]))
	}
	if allocs > 1000 {
		t.Fatalf("Parse made %.0f allocations for %d folded lines", allocs, len(raw)/4)
	}
}

// BenchmarkParseFolded measures Parse on a 1 MiB header of folded lines
// (the production header limit).
func BenchmarkParseFolded(b *testing.B) {
	raw := foldedHeader(1 << 20)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}
