package address

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func TestDomain(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	// 4 labels of 63 plus ".cz": 4*63 + 3 dots + 3 = 258 characters.
	tooLong := strings.Join([]string{long63, long63, long63, long63}, ".") + ".cz"
	// 3 labels of 63 plus a 61-character label: exactly 253 characters.
	maxLen := strings.Join([]string{long63, long63, long63, strings.Repeat("b", 61)}, ".")
	tests := []struct {
		in   string
		want string
		// why is a substring of the error when want is "".
		why string
	}{
		{in: "firma.cz", want: "firma.cz"},
		{in: "Firma.CZ", want: "firma.cz"},
		{in: "firma.cz.", want: "firma.cz"},
		{in: "FIRMA.CZ.", want: "firma.cz"},
		{in: "praha.firma.cz", want: "praha.firma.cz"},
		{in: "příklad.cz", want: "xn--pklad-zsa96e.cz"},
		// U-labels are NFC-mapped by IDNA (UTS #46 §4), so a name typed
		// with combining accents is the same domain.
		{in: "pr\u030ci\u0301klad.cz", want: "xn--pklad-zsa96e.cz"},
		{in: "PR\u030cI\u0301KLAD.CZ", want: "xn--pklad-zsa96e.cz"},
		{in: "PŘÍKLAD.CZ", want: "xn--pklad-zsa96e.cz"},
		{in: "příklad.cz.", want: "xn--pklad-zsa96e.cz"},
		{in: "xn--pklad-zsa96e.cz", want: "xn--pklad-zsa96e.cz"},
		{in: "XN--PKLAD-ZSA96E.CZ", want: "xn--pklad-zsa96e.cz"},
		{in: "münchen.de", want: "xn--mnchen-3ya.de"},
		{in: "faß.de", want: "xn--fa-hia.de"}, // IDNA2008, not transitional
		{in: "пример.рф", want: "xn--e1afmkfd.xn--p1ai"},
		{in: "ｆｉｒｍａ.cz", want: "firma.cz"}, // full-width letters map to ASCII
		{in: "a-b.cz", want: "a-b.cz"},
		{in: "1und1.de", want: "1und1.de"},
		{in: maxLen, want: maxLen},

		{in: "", why: "empty domain name"},
		{in: ".", why: "not a domain name"},
		{in: "localhost", why: "at least two labels"},
		{in: "localhost.", why: "at least two labels"},
		{in: "příklad", why: "at least two labels"},
		{in: "[192.0.2.1]", why: "address literal"},
		{in: "[IPv6:2001:db8::1]", why: "address literal"},
		{in: "192.0.2.1", why: "numeric top-level label"},
		{in: "firma.123", why: "numeric top-level label"},
		{in: "fir ma.cz", why: "space or control"},
		{in: " firma.cz", why: "space or control"},
		{in: "firma.cz\r\n", why: "space or control"},
		{in: "firma\t.cz", why: "space or control"},
		{in: "firma\x00.cz", why: "space or control"},
		{in: "firma\x7f.cz", why: "space or control"},
		{in: "firma\u0085.cz", why: "space or control"}, // C1 NEL
		{in: "firma\u00a0.cz", why: "space or control"}, // no-break space
		{in: "firma\u2028.cz", why: "space or control"},
		{in: long63 + "a.cz", why: "longer than 63"},
		{in: tooLong, why: "longer than 253"},
		{in: strings.Repeat("a.", 5000) + "cz", why: "longer than 253"},
		{in: "-firma.cz", why: "starts or ends with a hyphen"},
		{in: "firma-.cz", why: "starts or ends with a hyphen"},
		{in: "firma.-cz", why: "starts or ends with a hyphen"},
		{in: "fir_ma.cz", why: `'_'`},
		{in: "_dmarc.firma.cz", why: `'_'`},
		{in: "firma!.cz", why: `'!'`},
		{in: "jan@firma.cz", why: `'@'`},
		{in: "firma..cz", why: "empty label"},
		{in: ".firma.cz", why: "empty label"},
		{in: "firma.cz..", why: "empty label"},
		{in: "firma\xff.cz", why: "not valid UTF-8"},
		{in: "\xc3\x28.cz", why: "not valid UTF-8"},
		{in: "xn--zz.cz", why: "not a valid IDNA A-label"},
		{in: "xn--a.cz", why: "not a valid IDNA A-label"},
		{in: "xn--.cz", why: "starts or ends with a hyphen"},
		{in: "ab--cd.cz", why: "third and fourth positions"},
		{in: "\u0300a.cz", why: "not a valid internationalized label"}, // leading combining mark
		{in: "a\u200d.cz", why: "not a valid internationalized label"}, // ZWJ outside its context
	}
	for _, tt := range tests {
		got, err := Domain(tt.in)
		if tt.want != "" {
			if err != nil || got != tt.want {
				t.Errorf("Domain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		checkRefused(t, fmt.Sprintf("Domain(%q)", tt.in), got, err, tt.why)
	}
}

// checkRefused asserts that call (as in "Domain(\"x\")"), which returned got
// and err, failed with an error that wraps ErrInvalid and contains why.
func checkRefused(t *testing.T, call string, got any, err error, why string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s = %#v; want an error containing %q", call, got, why)
		return
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("%s error %v does not wrap ErrInvalid", call, err)
	}
	if !strings.Contains(err.Error(), why) {
		t.Errorf("%s error %q does not say %q", call, err, why)
	}
}

func TestUnicode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"xn--pklad-zsa96e.cz", "příklad.cz"},
		{"xn--e1afmkfd.xn--p1ai", "пример.рф"},
		{"firma.cz", "firma.cz"},
		{"xn--zz.cz", "xn--zz.cz"}, // not valid Punycode: returned as is
	}
	for _, tt := range tests {
		if got := Unicode(tt.in); got != tt.want {
			t.Errorf("Unicode(%q) = %q; want %q", tt.in, got, tt.want)
		}
		if tt.want != tt.in {
			// The display form normalizes back to the stored form.
			if back, err := Domain(tt.want); err != nil || back != tt.in {
				t.Errorf("Domain(Unicode(%q)) = %q, %v", tt.in, back, err)
			}
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in         string
		local, dom string
		why        string
	}{
		{in: "jan@firma.cz", local: "jan", dom: "firma.cz"},
		{in: "Jan@Firma.CZ", local: "jan", dom: "firma.cz"},
		{in: "jan.novak@firma.cz.", local: "jan.novak", dom: "firma.cz"},
		{in: "jan@příklad.cz", local: "jan", dom: "xn--pklad-zsa96e.cz"},
		{in: "jan+tag@firma.cz", local: "jan+tag", dom: "firma.cz"},
		{in: "!#$%&'*+-/=?^_`{|}~@firma.cz", local: "!#$%&'*+-/=?^_`{|}~", dom: "firma.cz"},
		{in: "jiří@firma.cz", local: "jiří", dom: "firma.cz"}, // RFC 6531 UTF-8 local part
		{in: "JIŘÍ@firma.cz", local: "jiří", dom: "firma.cz"},
		// The same name with combining accents (NFD) is the same address
		// (SPEC §1), in any case and quoted or not.
		{in: "jir\u030ci\u0301@firma.cz", local: "jiří", dom: "firma.cz"},
		{in: "JIR\u030cI\u0301@firma.cz", local: "jiří", dom: "firma.cz"},
		{in: "\"jir\u030ci\u0301\"@firma.cz", local: "jiří", dom: "firma.cz"},
		{in: "\"jir\u030ci\u0301 novak\"@firma.cz", local: "\"jiří novak\"", dom: "firma.cz"},
		{in: "jir\u030ci\u0301@pr\u030ci\u0301klad.cz", local: "jiří", dom: "xn--pklad-zsa96e.cz"},
		// Canonical singletons: the Kelvin and Ohm signs are K and Ω.
		{in: "\u212a@firma.cz", local: "k", dom: "firma.cz"},
		{in: "\u2126@firma.cz", local: "ω", dom: "firma.cz"},
		{in: `"jan novak"@firma.cz`, local: `"jan novak"`, dom: "firma.cz"},
		{in: `"Jan"@firma.cz`, local: "jan", dom: "firma.cz"}, // quotes that are not needed go
		{in: `"j\an"@firma.cz`, local: "jan", dom: "firma.cz"},
		{in: `"a@b"@firma.cz`, local: `"a@b"`, dom: "firma.cz"},
		{in: `"a\"b"@firma.cz`, local: `"a\"b"`, dom: "firma.cz"},
		{in: `"a\\b"@firma.cz`, local: `"a\\b"`, dom: "firma.cz"},
		{in: `".jan"@firma.cz`, local: `".jan"`, dom: "firma.cz"},
		{in: strings.Repeat("a", 64) + "@firma.cz", local: strings.Repeat("a", 64), dom: "firma.cz"},
		// 32 × ř is 64 octets in NFC and 96 in NFD: the limit applies to
		// the normalized form, so both spellings are the same account.
		{in: strings.Repeat("r\u030c", 32) + "@firma.cz", local: strings.Repeat("ř", 32), dom: "firma.cz"},

		{in: "", why: "not a full address"},
		{in: "jan", why: "not a full address"},
		{in: "firma.cz", why: "not a full address"},
		{in: "@firma.cz", why: "empty local part"},
		{in: `""@firma.cz`, why: "empty local part"},
		{in: "jan@", why: "empty domain name"},
		{in: "jan@localhost", why: "at least two labels"},
		{in: "jan@[192.0.2.1]", why: "address literal"},
		{in: "jan@fir_ma.cz", why: `'_'`},
		{in: ".jan@firma.cz", why: "leading, trailing or double dot"},
		{in: "jan.@firma.cz", why: "leading, trailing or double dot"},
		{in: "jan..novak@firma.cz", why: "leading, trailing or double dot"},
		{in: strings.Repeat("a", 65) + "@firma.cz", why: "longer than 64"},
		{in: strings.Repeat("a", 257) + "@firma.cz", why: "longer than 64"},
		{in: strings.Repeat("r\u030c", 33) + "@firma.cz", why: "longer than 64"},
		{in: "jan@" + strings.Repeat("a.", 5000) + "cz", why: "too long"},
		// U+023A is two octets and its lowercase U+2C65 three: 32 of them fit
		// before lowercasing but not after.
		{in: strings.Repeat("\u023a", 32) + "@firma.cz", why: "longer than 64"},
		// U+0958 is a composition exclusion: its NFC form is two letters,
		// six octets instead of three.
		{in: strings.Repeat("\u0958", 20) + "@firma.cz", why: "longer than 64"},
		{in: "jan novak@firma.cz", why: "not allowed in local part"},
		{in: "a@b@firma.cz", why: `'@'`},
		{in: "jan,novak@firma.cz", why: "not allowed in local part"},
		{in: "<jan@firma.cz>", why: "'<'"},
		{in: "jan\x00@firma.cz", why: "not allowed in local part"},
		{in: "jan\u0085@firma.cz", why: "not allowed in local part"},
		{in: `"jan@firma.cz`, why: "unterminated quoted"},
		{in: `"jan\"@firma.cz`, why: "bad escape"},
		{in: `"ja"n"@firma.cz`, why: "not allowed in quoted"},
		{in: "\"ja\rn\"@firma.cz", why: "not allowed in quoted"},
		{in: "j\xffan@firma.cz", why: "not valid UTF-8"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.why == "" {
			want := Address{Local: tt.local, Domain: tt.dom}
			if err != nil || got != want {
				t.Errorf("Parse(%+q) = %+q, %v; want %+q", tt.in, got, err, want)
			}
			continue
		}
		checkRefused(t, fmt.Sprintf("Parse(%q)", tt.in), got, err, tt.why)
	}
}

// checkDomain asserts the properties every successful Domain result has.
func checkDomain(t *testing.T, in, d string) {
	t.Helper()
	if d == "" || len(d) > maxDomainLen || strings.HasSuffix(d, ".") {
		t.Fatalf("Domain(%q) = %q: empty, too long or with a trailing dot", in, d)
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			t.Fatalf("Domain(%q) = %q: byte %q is not lowercase ASCII LDH", in, d, c)
		}
	}
	if n := strings.Count(d, ".") + 1; n < 2 {
		t.Fatalf("Domain(%q) = %q: %d label(s)", in, d, n)
	}
	d2, err := Domain(d)
	if err != nil || d2 != d {
		t.Fatalf("Domain(Domain(%q)) = %q, %v; want %q", in, d2, err, d)
	}
	if u := Unicode(d); u != d {
		if back, err := Domain(u); err != nil || back != d {
			t.Fatalf("Domain(Unicode(%q)) = %q, %v; want %q", d, back, err, d)
		}
	}
}

func FuzzDomain(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzDomain.
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Domain(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Domain(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		checkDomain(t, s, d)
	})
}

func FuzzParse(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzParse.
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		checkDomain(t, s, a.Domain)
		if a.Local == "" || len(a.Local) > maxLocalLen || !utf8.ValidString(a.Local) {
			t.Fatalf("Parse(%q).Local = %q: empty, too long or not UTF-8", s, a.Local)
		}
		if strings.ToLower(a.Local) != a.Local {
			t.Fatalf("Parse(%q).Local = %q is not lowercase", s, a.Local)
		}
		// SPEC §1: local parts are stored and compared in NFC.
		if !norm.NFC.IsNormalString(a.Local) {
			t.Fatalf("Parse(%q).Local = %+q is not in NFC", s, a.Local)
		}
		// Any other normalization form of the input is the same address.
		for _, f := range []norm.Form{norm.NFC, norm.NFD} {
			if b, err := Parse(f.String(s)); err == nil && b != a {
				t.Fatalf("Parse(%+q) = %#v but Parse(%+q) = %#v", s, a, f.String(s), b)
			}
		}
		b, err := Parse(a.String())
		if err != nil || b != a {
			t.Fatalf("Parse(%q) = %#v but Parse(%q) = %#v, %v", s, a, a.String(), b, err)
		}
	})
}

// BenchmarkParse measures what normalization costs per address, for the
// usual ASCII login and for UTF-8 ones in NFC and NFD.
func BenchmarkParse(b *testing.B) {
	for _, in := range []struct{ name, s string }{
		{"ascii", "Jan.Novak@Firma.CZ"},
		{"nfc", "Jiří.Novák@příklad.cz"},
		{"nfd", "Jir\u030ci\u0301.Nova\u0301k@pr\u030ci\u0301klad.cz"},
	} {
		b.Run(in.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse(in.s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
