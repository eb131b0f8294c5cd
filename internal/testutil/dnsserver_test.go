package testutil

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func exchange(t *testing.T, s *DNSServer, netw, name string, typ uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), typ)
	c := &dns.Client{Net: netw}
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatalf("exchange %s %s: %v", netw, name, err)
	}
	return r
}

func TestDNSServerAnswers(t *testing.T) {
	s := NewDNSServer(t)
	s.AddMX("Example.COM", 10, "mx.example.com")
	s.AddA("mx.example.com", "127.0.0.2")
	s.SetRcode("broken.example", dns.RcodeServerFailure)

	r := exchange(t, s, "udp", "example.com", dns.TypeMX)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "mx.example.com." {
		t.Errorf("MX answer = %v", r)
	}
	if r := exchange(t, s, "tcp", "example.com", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("NODATA expected for A of example.com, got %v", r)
	}
	if r := exchange(t, s, "udp", "nowhere.example", dns.TypeMX); r.Rcode != dns.RcodeNameError {
		t.Errorf("NXDOMAIN expected, got %v", dns.RcodeToString[r.Rcode])
	}
	if r := exchange(t, s, "udp", "broken.example", dns.TypeMX); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("SERVFAIL expected, got %v", dns.RcodeToString[r.Rcode])
	}
	if n := len(s.Queries()); n != 4 {
		t.Errorf("Queries() has %d entries, want 4", n)
	}
}

// A TXT answer over 512 bytes is truncated on UDP; LookupTXT must then get it
// whole over TCP, as a DKIM verifier needs for a 2048-bit RSA key.
func TestDNSServerLargeTXT(t *testing.T) {
	s := NewDNSServer(t)
	long := strings.Repeat("a", 255)
	s.AddTXT("big.example", long, long, long)
	r := exchange(t, s, "udp", "big.example", dns.TypeTXT)
	if !r.Truncated {
		t.Fatalf("UDP answer of %d bytes not truncated", r.Len())
	}
	got, err := s.LookupTXT("big.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != long+long+long {
		t.Errorf("LookupTXT = %d records, want the 765-byte one", len(got))
	}
}

// An alias is answered with its chain and the target's records, secure
// only when every name of the chain is.
func TestDNSServerCNAME(t *testing.T) {
	s := NewDNSServer(t)
	s.AddCNAME("mx.example.com", "mx.provider.test")
	s.AddCNAME("mx.provider.test", "host.provider.test")
	s.AddA("host.provider.test", "127.0.0.2")
	s.AddCNAME("dangling.example.com", "nowhere.test")
	for _, n := range []string{"mx.example.com", "mx.provider.test", "host.provider.test"} {
		s.SetSecure(n, true)
	}
	r := exchange(t, s, "udp", "mx.example.com", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 3 || !r.AuthenticatedData {
		t.Fatalf("A of the alias = %v", r)
	}
	if a, ok := r.Answer[2].(*dns.A); !ok || a.A.String() != "127.0.0.2" || a.Hdr.Name != "host.provider.test." {
		t.Errorf("last record %v, want the target's A", r.Answer[2])
	}
	if r := exchange(t, s, "udp", "mx.example.com", dns.TypeCNAME); len(r.Answer) != 1 {
		t.Errorf("CNAME query answered %v, want the alias alone", r.Answer)
	}
	s.SetSecure("mx.provider.test", false)
	if r := exchange(t, s, "udp", "mx.example.com", dns.TypeA); r.AuthenticatedData {
		t.Error("AD bit set with an insecure link in the chain")
	}
	if r := exchange(t, s, "udp", "host.provider.test", dns.TypeA); !r.AuthenticatedData {
		t.Error("AD bit not set for the secure target asked directly")
	}
	if r := exchange(t, s, "udp", "dangling.example.com", dns.TypeA); r.Rcode != dns.RcodeNameError || len(r.Answer) != 1 {
		t.Errorf("alias of a missing name: %s %v, want NXDOMAIN with the alias", dns.RcodeToString[r.Rcode], r.Answer)
	}
	s.SetRcode("host.provider.test", dns.RcodeServerFailure)
	if r := exchange(t, s, "udp", "mx.example.com", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("failing target: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}
