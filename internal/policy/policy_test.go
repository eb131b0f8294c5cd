package policy

import (
	"net/netip"
	"testing"
)

func TestMaySend(t *testing.T) {
	acct := &Account{
		Domain:     "firma.cz",
		Aliases:    []string{"firma.com", "xn--pklad-zsa96e.cz"},
		Identities: []string{"jan.novak@seznam.cz", "ji\u0159\u00ed@seznam.cz"},
	}
	p := &Policy{Webmail: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8:1::/48")}}
	office := netip.MustParseAddr("192.0.2.10")
	webmail := netip.MustParseAddr("10.1.2.3")
	cases := []struct {
		sender string
		client netip.Addr
		want   bool
		rule   string
	}{
		{"jan@firma.cz", office, true, "R5 own domain"},
		{"anyone@firma.cz", office, true, "R5 any local part"},
		{"Jan@FIRMA.CZ.", office, true, "§1 case and trailing dot"},
		{"info@firma.com", office, true, "R5 alias"},
		{"info@příklad.cz", office, true, "R5 alias in Unicode"},
		{"info@XN--PKLAD-ZSA96E.CZ", office, true, "R5 alias in punycode"},
		{"x@praha.firma.cz", office, false, "R6 subdomain"},
		{"x@firma.cz.evil.example", office, false, "R6 suffix trick"},
		{"x@cz", office, false, "R6 parent"},
		{"eva@jina.cz", office, false, "R6 other hosted domain"},
		{"someone@gmail.com", office, false, "R6 freemail"},
		{"jan.novak@seznam.cz", office, false, "R9 identity outside webmail"},
		{"jan.novak@seznam.cz", webmail, true, "R9 identity from webmail"},
		{"JAN.NOVAK@Seznam.CZ", webmail, true, "R9 identity, case"},
		{"jan.novak@seznam.cz", netip.MustParseAddr("::ffff:10.1.2.3"), true, "R9 IPv4-mapped webmail"},
		{"jan.novak@seznam.cz", netip.MustParseAddr("2001:db8:1::25"), true, "R9 IPv6 webmail"},
		{"petra@seznam.cz", webmail, false, "R9 only the account's identities"},
		// SPEC §1: an identity typed with combining accents (NFD) is the
		// stored NFC identity, and so is a U-label domain typed that way.
		{"jir\u030ci\u0301@seznam.cz", webmail, true, "R9 identity in NFD"},
		{"JIR\u030cI\u0301@seznam.cz", webmail, true, "R9 identity in NFD, case"},
		{"jir\u030ci\u0301@seznam.cz", office, false, "R9 identity in NFD outside webmail"},
		{"jiri@seznam.cz", webmail, false, "R9 accents are not dropped"},
		{"info@pr\u030ci\u0301klad.cz", office, true, "R5 alias in Unicode NFD"},
		{"", office, false, "empty"},
		{"not an address", office, false, "unparseable"},
		{"jan@", office, false, "no domain"},
	}
	for _, c := range cases {
		if got := p.MaySend(acct, c.client, c.sender); got != c.want {
			t.Errorf("%s: MaySend(%q from %s) = %v, want %v", c.rule, c.sender, c.client, got, c.want)
		}
	}
}
