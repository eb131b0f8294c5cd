package smtpd

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
)

func TestParsePlain(t *testing.T) {
	cases := []struct {
		in   string
		want credentials
		ok   bool
	}{
		{"\x00jan@firma.cz\x00pw", credentials{"", "jan@firma.cz", "pw"}, true},
		{"jan@firma.cz\x00jan@firma.cz\x00pw", credentials{"jan@firma.cz", "jan@firma.cz", "pw"}, true},
		{"\x00jan@firma.cz\x00", credentials{"", "jan@firma.cz", ""}, true},
		{"", credentials{}, false},
		{"jan@firma.cz\x00pw", credentials{}, false},
		{"\x00\x00pw", credentials{}, false},
		{"a\x00b\x00c\x00d", credentials{}, false},
		{"\x00\xff\x00pw", credentials{}, false},
	}
	for _, c := range cases {
		got, err := parsePlain([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parsePlain(%q) = %+v, %v", c.in, got, err)
		}
	}
}

// runSASL drives a saslServer through the given client responses and
// returns the credentials it checked, if it got that far.
func runSASL(mech string, resps ...[]byte) (*credentials, error) {
	var got *credentials
	s := &saslServer{
		mech:      mech,
		check:     func(c credentials) error { got = &c; return nil },
		malformed: func() error { return errMalformed },
	}
	var err error
	for _, r := range resps {
		var done bool
		_, done, err = s.Next(r)
		if err != nil || done {
			break
		}
	}
	return got, err
}

func TestSASLLogin(t *testing.T) {
	c, err := runSASL(sasl.Login, nil, []byte("jan@firma.cz"), []byte("pw"))
	if err != nil || c == nil || c.login != "jan@firma.cz" || c.password != "pw" {
		t.Fatalf("LOGIN: %+v %v", c, err)
	}
	// With the user name as initial response.
	c, err = runSASL(sasl.Login, []byte("jan@firma.cz"), []byte("pw"))
	if err != nil || c == nil || c.password != "pw" {
		t.Fatalf("LOGIN with initial response: %+v %v", c, err)
	}
	if _, err := runSASL(sasl.Login, nil, []byte("a\x00b")); !errors.Is(err, errMalformed) {
		t.Fatalf("NUL in user name: %v", err)
	}
	c, err = runSASL(sasl.Plain, nil, []byte("\x00jan@firma.cz\x00pw"))
	if err != nil || c == nil || c.password != "pw" {
		t.Fatalf("PLAIN without initial response: %+v %v", c, err)
	}
}

// FuzzPlain: the PLAIN decoder never panics, and what it accepts splits
// back into the input.
func FuzzPlain(f *testing.F) {
	f.Add([]byte("\x00jan@firma.cz\x00secret"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parsePlain(b)
		if err != nil {
			return
		}
		if c.login == "" || !utf8.ValidString(c.login+c.password+c.authzid) {
			t.Fatalf("accepted %+v", c)
		}
		if !bytes.Equal([]byte(c.authzid+"\x00"+c.login+"\x00"+c.password), b) {
			t.Fatalf("round trip changed %q", b)
		}
	})
}

// FuzzLogin: the LOGIN exchange never panics and only hands over
// well-formed fields.
func FuzzLogin(f *testing.F) {
	f.Add([]byte("jan@firma.cz"), []byte("secret"))
	f.Fuzz(func(t *testing.T, user, pw []byte) {
		c, err := runSASL(sasl.Login, nil, user, pw)
		if err != nil {
			return
		}
		if c == nil || c.login != string(user) || c.password != string(pw) || c.login == "" ||
			bytes.IndexByte(user, 0) >= 0 || !utf8.Valid(pw) {
			t.Fatalf("accepted %q / %q as %+v", user, pw, c)
		}
	})
}
