package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/miekg/dns"
)

// sinkZone answers for one name: its MX is itself and its A is the sink's
// address; every other name does not exist. A peer that finds its next hop
// through the recipient domain's MX (chasquid) reaches the sink on
// loopback this way, without a DNS server of the machine's, which may be
// slow, unreachable or answer differently from one machine to the next.
type sinkZone struct {
	// name is the fully qualified, lower-case name.
	name string
	// addr is its IPv4 address.
	addr netip.Addr
}

// ServeDNS answers one query (RFC 1035 §4.1.1: the answer echoes the
// question; NXDOMAIN for names other than z.name).
func (z *sinkZone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 || strings.ToLower(req.Question[0].Name) != z.name {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 60}
	switch q.Qtype {
	case dns.TypeMX:
		m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Preference: 10, Mx: z.name})
	case dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(z.addr.AsSlice())})
	}
	w.WriteMsg(m)
}

// dnsMain is "submitd-bench dns -listen ADDR -name NAME -addr IP": a DNS
// server on UDP and TCP that answers for NAME until it is interrupted.
func dnsMain(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("submitd-bench dns", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.2.53:53", "UDP and TCP address to answer on")
	name := fs.String("name", "sink.bench.example", "the one name that exists")
	ip := fs.String("addr", "127.0.0.1", "its IPv4 address, and that of its MX")
	if err := fs.Parse(args); err != nil {
		return err
	}
	a, err := netip.ParseAddr(*ip)
	if err != nil || !a.Is4() {
		return fmt.Errorf("-addr %q: want an IPv4 address", *ip)
	}
	z := &sinkZone{name: strings.ToLower(dns.Fqdn(*name)), addr: a}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		pc.Close()
		return err
	}
	servers := []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: ln, Handler: z}}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.ActivateAndServe() }()
	}
	fmt.Fprintf(out, "answering for %s on %s\n", z.name, *listen)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	for _, s := range servers {
		s.Shutdown()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
