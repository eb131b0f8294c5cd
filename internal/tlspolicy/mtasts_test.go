package tlspolicy

import (
	"strings"
	"testing"
	"time"
)

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		txt, id, err string
	}{
		{txt: "v=STSv1; id=20160831085700Z;", id: "20160831085700Z"},
		{txt: "v=STSv1;id=abc", id: "abc"},
		{txt: "v=STSv1; id=abc; ext=1", id: "abc"},
		{txt: "v=STSv2; id=abc", err: "not an MTA-STS record"},
		{txt: "id=abc; v=STSv1", err: "not an MTA-STS record"},
		{txt: "v=spf1 -all", err: "not an MTA-STS record"},
		{txt: "v=STSv1;", err: "has no id"},
		{txt: "v=STSv1; id=", err: "is not 1 to 32"},
		{txt: "v=STSv1; id=a-b", err: "is not 1 to 32"},
		{txt: "v=STSv1; id=" + strings.Repeat("a", 33), err: "is not 1 to 32"},
		{txt: "v=STSv1; id", err: "has no value"},
	} {
		r, err := ParseRecord(tc.txt)
		switch {
		case tc.err == "" && (err != nil || r.ID != tc.id):
			t.Errorf("ParseRecord(%q) = %+v, %v; want id %q", tc.txt, r, err, tc.id)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseRecord(%q) error %v, want %q", tc.txt, err, tc.err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 604800\r\nfuture: x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeEnforce || p.MaxAge != 7*24*time.Hour || strings.Join(p.MX, ",") != "mail.example.com,*.example.net" {
		t.Errorf("policy %+v", p)
	}
	for host, want := range map[string]bool{
		"mail.example.com": true, "MAIL.example.com.": true, "mx1.example.net": true,
		"example.net": false, "a.b.example.net": false, "mail.example.org": false, "x.mail.example.com": false,
	} {
		if got := p.Matches(host); got != want {
			t.Errorf("Matches(%q) = %v, want %v", host, got, want)
		}
	}
	if p, err := ParsePolicy([]byte("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 9999999999\n")); err != nil || p.MaxAge != maxMaxAge*time.Second {
		t.Errorf("max_age above a year: %+v %v, want capped at a year", p, err)
	}
	for body, want := range map[string]string{
		"mode: enforce\nmx: a.test\nmax_age: 1\n":                        "no version",
		"version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n":        "not STSv1",
		"version: STSv1\nmx: a.test\nmax_age: 1\n":                       "no mode",
		"version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n":         "not enforce",
		"version: STSv1\nmode: enforce\nmx: a.test\n":                    "no max_age",
		"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n":       "not a number",
		"version: STSv1\nmode: enforce\nmax_age: 1\n":                    "no mx",
		"version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n":       "not a host name",
		"version: STSv1\nmode: enforce\nmx: *.*.a.test\nmax_age: 1\n":    "not a host name",
		"version: STSv1\nmode enforce\n":                                 "not \"key: value\"",
		strings.Repeat("x", MaxPolicySize+1):                             "larger than",
		"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\n\x00: 1": "",
	} {
		_, err := ParsePolicy([]byte(body))
		if want == "" {
			if err != nil {
				t.Errorf("ParsePolicy(%.40q): %v", body, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePolicy(%.40q) error %v, want %q", body, err, want)
		}
	}
	// A policy is kept for up to a year: the mx patterns it may name are
	// bounded, as its size is.
	mx := strings.Repeat("mx: a.test\n", maxPolicyMX)
	if p, err := ParsePolicy([]byte("version: STSv1\nmode: enforce\nmax_age: 1\n" + mx)); err != nil || len(p.MX) != maxPolicyMX {
		t.Errorf("policy of %d mx patterns: %v", maxPolicyMX, err)
	}
	if _, err := ParsePolicy([]byte("version: STSv1\nmode: enforce\nmax_age: 1\n" + mx + "mx: b.test\n")); err == nil || !strings.Contains(err.Error(), "more than 100 mx patterns") {
		t.Errorf("policy of %d mx patterns: error %v, want more than %d", maxPolicyMX+1, err, maxPolicyMX)
	}
	if p, err := ParsePolicy([]byte("version: STSv1\nmode: none\nmax_age: 1\n")); err != nil || p.Mode != ModeNone {
		t.Errorf("mode none without mx: %+v %v", p, err)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		if p.Mode != ModeEnforce && p.Mode != ModeTesting && p.Mode != ModeNone {
			t.Fatalf("mode %q accepted", p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > maxMaxAge*time.Second {
			t.Fatalf("max_age %v out of range", p.MaxAge)
		}
		for _, mx := range p.MX {
			if !validPattern(mx) || mx != strings.ToLower(mx) {
				t.Fatalf("mx %q kept", mx)
			}
			// A pattern matches the name it stands for.
			if !strings.HasPrefix(mx, "*.") && !p.Matches(mx) {
				t.Fatalf("mx %q does not match itself", mx)
			}
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, txt string) {
		r, err := ParseRecord(txt)
		if err != nil {
			return
		}
		if !strings.HasPrefix(strings.TrimSpace(txt), "v=STSv1") || r.ID == "" || len(r.ID) > 32 {
			t.Fatalf("ParseRecord(%q) = %+v", txt, r)
		}
	})
}
