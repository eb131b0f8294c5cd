// Package testutil holds helpers shared by tests: a DNS server and an SMTP
// receiver that run in-process on loopback, so delivery and queue tests speak
// real protocols without touching the network.
package testutil

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSServer is a DNS server for tests. It listens on 127.0.0.1 on one port
// for both UDP and TCP and answers from records the test adds. Names are
// compared case-insensitively and may be given with or without the final dot.
//
// A query for a name that has no records at all is answered NXDOMAIN; a query
// for a name that has records, but none of the asked type, is answered with
// an empty NOERROR answer (NODATA), as a real server would. SetRcode overrides
// both for one name, e.g. to inject SERVFAIL. A name with a CNAME record is
// followed to its target, as a recursive resolver does. UDP answers larger than the
// client's buffer (512 bytes, or its EDNS0 size) are truncated with the TC
// bit set, so clients must retry over TCP like with a real server.
//
// The server stops when the test ends.
type DNSServer struct {
	// Addr is "127.0.0.1:PORT", the address to give resolvers.
	Addr string

	mu      sync.Mutex
	records map[string][]dns.RR // key: fqdn lowercased
	rcodes  map[string]int      // key: fqdn lowercased
	delay   map[string]time.Duration
	secure  map[string]bool // key: fqdn lowercased
	queries []DNSQuery
	servers []*dns.Server
	done    chan struct{} // closed when the test ends, to cut delays short
}

// DNSQuery is one question the server received.
type DNSQuery struct {
	// Name is the queried name as a lowercase FQDN ("example.com.").
	Name string
	// Type is the query type, e.g. dns.TypeMX.
	Type uint16
	// Net is "udp" or "tcp".
	Net string
}

// NewDNSServer starts a DNS server on 127.0.0.1 with a free port shared by UDP
// and TCP. It has no records until the test adds them.
func NewDNSServer(t testing.TB) *DNSServer {
	t.Helper()
	s := &DNSServer{
		records: map[string][]dns.RR{},
		rcodes:  map[string]int{},
		delay:   map[string]time.Duration{},
		secure:  map[string]bool{},
		done:    make(chan struct{}),
	}
	var pc net.PacketConn
	var ln net.Listener
	// The UDP port picked by the kernel may be taken for TCP; try a few.
	for i := 0; ; i++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dns server: listen udp: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if i == 20 {
			t.Fatalf("dns server: no port free for both udp and tcp: %v", err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Net: "udp", Handler: dns.HandlerFunc(s.serve)},
		{Listener: ln, Net: "tcp", Handler: dns.HandlerFunc(s.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.servers = append(s.servers, srv)
		go srv.ActivateAndServe()
		<-started
	}
	t.Cleanup(func() {
		close(s.done)
		for _, srv := range s.servers {
			srv.Shutdown()
		}
	})
	return s
}

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// Add adds records given in zone-file syntax, e.g.
// `example.com. 300 IN MX 10 mx1.example.com.`. It is the way to publish a
// record exactly as a program printed it (such as a DKIM TXT record). A
// record that does not parse fails the test.
func (s *DNSServer) Add(t testing.TB, zone ...string) {
	t.Helper()
	for _, z := range zone {
		rr, err := dns.NewRR(z)
		if err != nil {
			t.Fatalf("dns server: bad record %q: %v", z, err)
		}
		if rr == nil {
			t.Fatalf("dns server: no record in %q", z)
		}
		s.AddRR(rr)
	}
}

// AddRR adds one record.
func (s *DNSServer) AddRR(rr dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := fqdn(rr.Header().Name)
	s.records[k] = append(s.records[k], rr)
}

func (s *DNSServer) hdr(name string, typ uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: typ, Class: dns.ClassINET, Ttl: 300}
}

// AddMX adds an MX record for name. A host of "." with preference 0 is a
// null MX (RFC 7505).
func (s *DNSServer) AddMX(name string, pref uint16, host string) {
	s.AddRR(&dns.MX{Hdr: s.hdr(name, dns.TypeMX), Preference: pref, Mx: dns.Fqdn(host)})
}

// AddA adds A records for name; each ip must be an IPv4 address.
func (s *DNSServer) AddA(name string, ips ...string) {
	for _, ip := range ips {
		a := net.ParseIP(ip).To4()
		if a == nil {
			panic(fmt.Sprintf("testutil: AddA %s: %q is not an IPv4 address", name, ip))
		}
		s.AddRR(&dns.A{Hdr: s.hdr(name, dns.TypeA), A: a})
	}
}

// AddAAAA adds AAAA records for name; each ip must be an IPv6 address.
func (s *DNSServer) AddAAAA(name string, ips ...string) {
	for _, ip := range ips {
		a := net.ParseIP(ip)
		if a == nil || a.To4() != nil {
			panic(fmt.Sprintf("testutil: AddAAAA %s: %q is not an IPv6 address", name, ip))
		}
		s.AddRR(&dns.AAAA{Hdr: s.hdr(name, dns.TypeAAAA), AAAA: a})
	}
}

// AddCNAME makes name an alias of target. Queries for name of any other
// type than CNAME are answered with the alias and target's records, as a
// recursive resolver answers them.
func (s *DNSServer) AddCNAME(name, target string) {
	s.AddRR(&dns.CNAME{Hdr: s.hdr(name, dns.TypeCNAME), Target: dns.Fqdn(target)})
}

// AddTXT adds one TXT record for name made of the given strings (each at most
// 255 bytes; a reader joins them).
func (s *DNSServer) AddTXT(name string, txt ...string) {
	s.AddRR(&dns.TXT{Hdr: s.hdr(name, dns.TypeTXT), Txt: txt})
}

// SetRcode makes every query for name (any type) answer with rcode, e.g.
// dns.RcodeServerFailure or dns.RcodeNameError; dns.RcodeSuccess removes the
// override.
func (s *DNSServer) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, fqdn(name))
		return
	}
	s.rcodes[fqdn(name)] = rcode
}

// SetDelay makes the server wait d before answering any query for name, to
// exercise client timeouts; 0 removes the delay.
func (s *DNSServer) SetDelay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d == 0 {
		delete(s.delay, fqdn(name))
		return
	}
	s.delay[fqdn(name)] = d
}

// SetSecure makes the answers for name carry the AD bit (RFC 4035 §3.2.3)
// when secure is true, as a validating resolver's answers for DNSSEC-signed
// data do; the server then stands for such a resolver.
func (s *DNSServer) SetSecure(name string, secure bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !secure {
		delete(s.secure, fqdn(name))
		return
	}
	s.secure[fqdn(name)] = true
}

// Remove deletes every record of name and any rcode override.
func (s *DNSServer) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, fqdn(name))
	delete(s.rcodes, fqdn(name))
}

// Queries returns the questions received so far, in order.
func (s *DNSServer) Queries() []DNSQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]DNSQuery(nil), s.queries...)
}

// LookupTXT asks the server, over the network like any resolver, for the TXT
// records of name and returns each record's strings joined. It has the shape
// of go-msgauth's dkim.VerifyOptions.LookupTXT.
func (s *DNSServer) LookupTXT(name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, s.Addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, s.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("lookup TXT %s: %w", name, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("lookup TXT %s: %s", name, dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	netw := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		netw = "tcp"
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := fqdn(q.Name)
	s.mu.Lock()
	s.queries = append(s.queries, DNSQuery{Name: name, Type: q.Qtype, Net: netw})
	delay := s.delay[name]
	rcode, override := s.rcodes[name]
	rrs, known := s.records[name]
	m.AuthenticatedData = s.secure[name]
	// A CNAME is followed as a recursive resolver does (RFC 1034 §4.3.2):
	// the answer holds the chain and the target's records, the target's
	// rcode counts, and the AD bit is set only when every name of the
	// chain is secure, as a validating resolver sets it only when every
	// RRset of the answer is (RFC 4035 §3.2.3).
	for hops := 0; hops < 8 && q.Qtype != dns.TypeCNAME && q.Qtype != dns.TypeANY; hops++ {
		target := ""
		for _, rr := range rrs {
			if c, ok := rr.(*dns.CNAME); ok {
				target = fqdn(c.Target)
				m.Answer = append(m.Answer, dns.Copy(rr))
				break
			}
		}
		if target == "" {
			break
		}
		if c, ok := s.rcodes[target]; ok && !override {
			rcode, override = c, true
		}
		rrs, known = s.records[target]
		m.AuthenticatedData = m.AuthenticatedData && s.secure[target]
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-s.done:
			return
		}
	}
	switch {
	case override:
		m.Rcode = rcode
		m.Answer = nil
	case !known:
		m.Rcode = dns.RcodeNameError
	}
	if netw == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}
