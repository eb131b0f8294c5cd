package delivery

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	cases := []struct {
		in   string
		want string // Reply.String(), or "error"
	}{
		{"220 mx.example.com ESMTP\r\n", "220 mx.example.com ESMTP"},
		{"250-mx.example.com\r\n250-SIZE 1000\r\n250 STARTTLS\r\n", "250 mx.example.com SIZE 1000 STARTTLS"},
		{"550 5.1.1 <x@y> no such user\n", "550 5.1.1 <x@y> no such user"},
		{"250\r\n", "250"},
		{"250 \r\n", "250"},
		{"451-4.3.0 first\r\n451 4.3.0 second\r\n", "451 4.3.0 first 4.3.0 second"},
		{"550 5.7.1 d\xc3\xa9j\xc3\xa0 vu\r\n", "550 5.7.1 d?j? vu"},
		{"250-a\r\n550 b\r\n", "error"},
		{"25\r\n", "error"},
		{"abc def\r\n", "error"},
		{"150 nope\r\n", "error"},
		{"250x\r\n", "error"},
		{"250 a\x00b\r\n", "error"},
		{"250-never ends\r\n", "error"},
		{"", "error"},
		{"220 " + strings.Repeat("x", maxReplyLine) + "\r\n", "error"},
		{strings.Repeat("250-x\r\n", maxReplyLines+1), "error"},
	}
	for _, c := range cases {
		r, err := ReadReply(bufio.NewReader(strings.NewReader(c.in)))
		got := r.String()
		if err != nil {
			got = "error"
		}
		if got != c.want {
			t.Errorf("ReadReply(%q) = %q (err %v), want %q", clip(c.in), got, err, c.want)
		}
	}
}

// FuzzReadReply feeds arbitrary server output to the reply parser: it must
// never panic or read past its limits, and whatever it accepts must be a
// well-formed reply that reads back the same when written out again.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"220 mx.example.com ESMTP ready\r\n",
		"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
		"550 5.1.1 no such user\r\n",
		"421 4.3.2 shutting down\n",
		"250\r\n",
		"250-a\r\n251 b\r\n",
		"354 go ahead\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ReadReply(bufio.NewReader(strings.NewReader(string(in))))
		if err != nil {
			return
		}
		if r.Code < 200 || r.Code > 599 || len(r.Lines) == 0 || len(r.Lines) > maxReplyLines {
			t.Fatalf("accepted an impossible reply %+v", r)
		}
		s := r.String()
		for i := 0; i < len(s); i++ {
			if s[i] < ' ' || s[i] > '~' {
				t.Fatalf("String() has byte %#x: %q", s[i], s)
			}
		}
		var b strings.Builder
		for i, l := range r.Lines {
			sep := "-"
			if i == len(r.Lines)-1 {
				sep = " "
			}
			fmt.Fprintf(&b, "%03d%s%s\r\n", r.Code, sep, l)
		}
		r2, err := ReadReply(bufio.NewReader(strings.NewReader(b.String())))
		if err != nil || r2.String() != s {
			t.Fatalf("round trip of %q: %q, %v", s, r2.String(), err)
		}
	})
}
