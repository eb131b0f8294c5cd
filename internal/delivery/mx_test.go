package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"submitd/internal/testutil"
)

const testMsg = "From: a@sender.test\r\nTo: x@example.test\r\nSubject: hi\r\n\r\nhello\r\n.leading dot\r\n"

// msg returns a Message for rcpts with testMsg as content.
func msg(domain string, rcpts ...string) *Message {
	return &Message{
		From: "a@sender.test", Rcpts: rcpts, Domain: domain, Size: int64(len(testMsg)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(testMsg)), nil },
	}
}

// world is a DNS server and a set of receivers on loopback addresses that
// share one port, which the MX sender uses as the remote SMTP port.
type world struct {
	t    *testing.T
	dns  *testutil.DNSServer
	port int
	rx   map[string]*testutil.Receiver // by IP
	log  bytes.Buffer
}

// newWorld starts receivers on each IP with opts[ip] (missing IPs get the
// zero options).
func newWorld(t *testing.T, opts map[string]testutil.ReceiverOptions, ips ...string) *world {
	w := &world{t: t, dns: testutil.NewDNSServer(t), rx: map[string]*testutil.Receiver{}}
	if len(ips) == 0 {
		w.port = testutil.FreePort(t, "127.0.0.1")
		return w
	}
	lns := testutil.ListenSamePort(t, ips...)
	for i, ip := range ips {
		o := opts[ip]
		o.Listener = lns[i]
		w.rx[ip] = testutil.NewReceiver(t, o)
	}
	w.port = w.rx[ips[0]].Port
	return w
}

func (w *world) mx(mod func(*MXConfig)) *MX {
	cfg := MXConfig{
		SessionConfig: SessionConfig{Hostname: "submit.sender.test", ConnectTimeout: 5 * time.Second,
			Timeout: 20 * time.Second, Log: slog.New(slog.NewTextHandler(&w.log, nil))},
		Resolver: &Resolver{Addr: w.dns.Addr, Timeout: 2 * time.Second}, Port: w.port,
	}
	if mod != nil {
		mod(&cfg)
	}
	return NewMX(cfg)
}

func check(t *testing.T, res []Result, rcpt string, st Status, replyPrefix string) {
	t.Helper()
	for _, r := range res {
		if r.Rcpt == rcpt {
			if r.Status != st || !strings.HasPrefix(r.Reply, replyPrefix) {
				t.Errorf("%s: %v %q (host %q), want %v %q…", rcpt, r.Status, r.Reply, r.Host, st, replyPrefix)
			}
			return
		}
	}
	t.Errorf("no result for %s in %+v", rcpt, res)
}

func TestMXPreferenceOrder(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2", "127.0.0.3")
	// Listed worst first: the order of the answer must not matter.
	w.dns.AddMX("example.test", 20, "mx2.example.test")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	w.dns.AddA("mx2.example.test", "127.0.0.3")
	for i := 0; i < 3; i++ {
		res := w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test"))
		check(t, res, "x@example.test", Delivered, "250")
		if res[0].Host != "mx1.example.test [127.0.0.2]" {
			t.Errorf("Host = %q, want mx1.example.test [127.0.0.2]", res[0].Host)
		}
	}
	if n, n2 := len(w.rx["127.0.0.2"].Messages()), w.rx["127.0.0.3"].Connections(); n != 3 || n2 != 0 {
		t.Errorf("best MX got %d messages, worse MX %d connections; want 3 and 0", n, n2)
	}
	got := w.rx["127.0.0.2"].Messages()[0]
	if got.From != "a@sender.test" || string(got.Data) != testMsg || got.Helo != "submit.sender.test" {
		t.Errorf("received from %q helo %q data %q", got.From, got.Helo, got.Data)
	}
	if got.Size != int64(len(testMsg)) {
		t.Errorf("SIZE=%d, want %d (the server advertises SIZE)", got.Size, len(testMsg))
	}
}

// Equal preferences are tried in random order (RFC 5321 §5.1): over enough
// deliveries both hosts get mail.
func TestMXEqualPreferenceSpreads(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2", "127.0.0.3")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddMX("example.test", 10, "mx2.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	w.dns.AddA("mx2.example.test", "127.0.0.3")
	// Each message on a new connection: a kept one would carry them all
	// to one host, and the DNS walk would not be asked.
	x := w.mx(func(c *MXConfig) { c.Pool.MaxMessages = 1 })
	for i := 0; i < 40; i++ {
		check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
	}
	a, b := len(w.rx["127.0.0.2"].Messages()), len(w.rx["127.0.0.3"].Messages())
	if a == 0 || b == 0 || a+b != 40 {
		t.Errorf("equal-preference MX hosts got %d and %d of 40 messages", a, b)
	}
}

func TestMXFallback(t *testing.T) {
	tempfail := &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "too busy"}
	cases := []struct {
		name  string
		setup func(w *world)
	}{
		{"connection refused", func(w *world) {
			w.dns.AddA("mx1.example.test", "127.0.0.9") // nothing listens there
		}},
		{"MX host does not exist", func(w *world) {}},
		{"MX host DNS fails", func(w *world) {
			w.dns.SetRcode("mx1.example.test", dns.RcodeServerFailure)
		}},
		{"4xx to EHLO", func(w *world) {
			w.dns.AddA("mx1.example.test", "127.0.0.2")
		}},
		{"4xx to MAIL FROM", func(w *world) {
			w.dns.AddA("mx1.example.test", "127.0.0.4")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, map[string]testutil.ReceiverOptions{
				"127.0.0.2": {EHLOError: tempfail},
				"127.0.0.4": {MailError: tempfail},
			}, "127.0.0.2", "127.0.0.3", "127.0.0.4")
			w.dns.AddMX("example.test", 10, "mx1.example.test")
			w.dns.AddMX("example.test", 20, "mx2.example.test")
			w.dns.AddA("mx2.example.test", "127.0.0.3")
			c.setup(w)
			res := w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test"))
			check(t, res, "x@example.test", Delivered, "250")
			if n := len(w.rx["127.0.0.3"].Messages()); n != 1 {
				t.Errorf("second MX got %d messages, want 1", n)
			}
		})
	}
}

// Every MX host is tried before the message is deferred, and the reply of the
// last one is kept.
func TestMXAllHostsFailDefers(t *testing.T) {
	tempfail := &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "too busy"}
	w := newWorld(t, map[string]testutil.ReceiverOptions{
		"127.0.0.2": {EHLOError: tempfail},
		"127.0.0.3": {EHLOError: tempfail},
	}, "127.0.0.2", "127.0.0.3")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddMX("example.test", 20, "mx2.example.test")
	w.dns.AddMX("example.test", 30, "mx3.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	w.dns.AddA("mx2.example.test", "127.0.0.9")
	w.dns.AddA("mx3.example.test", "127.0.0.3")
	res := w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test", "y@example.test"))
	check(t, res, "x@example.test", Temporary, "421 4.3.2 too busy")
	check(t, res, "y@example.test", Temporary, "421 4.3.2 too busy")
	if res[0].Host != "mx3.example.test [127.0.0.3]" {
		t.Errorf("Host = %q, want the last MX tried", res[0].Host)
	}
	if a, b := w.rx["127.0.0.2"].Connections(), w.rx["127.0.0.3"].Connections(); a != 1 || b != 1 {
		t.Errorf("connections %d and %d, want each reachable MX tried once", a, b)
	}
}

// A 554 greeting-stage refusal (here at EHLO) from every host still defers:
// one host saying "not here" says nothing about the others or later.
func TestMX5xxGreetingMovesOn(t *testing.T) {
	refuse := &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 3, 2}, Message: "no service"}
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {EHLOError: refuse}}, "127.0.0.2", "127.0.0.3")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddMX("example.test", 20, "mx2.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	w.dns.AddA("mx2.example.test", "127.0.0.3")
	check(t, w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
}

func TestImplicitMX(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	res := w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Delivered, "250")
	if res[0].Host != "example.test [127.0.0.2]" {
		t.Errorf("Host = %q", res[0].Host)
	}
}

func TestRouteFailures(t *testing.T) {
	w := newWorld(t, nil)
	w.dns.AddMX("null.test", 0, ".")
	w.dns.AddTXT("noaddr.test", "v=spf1 -all")
	w.dns.SetRcode("broken.test", dns.RcodeServerFailure)
	w.dns.AddMX("badmx.test", 10, "gone.badmx.test")
	w.dns.AddTXT("badmx.test", "x")
	cases := []struct {
		domain string
		st     Status
		reply  string
		code   string
	}{
		{"null.test", Permanent, "domain does not accept mail (null MX, RFC 7505)", "5.1.10"},
		{"nxdomain.test", Permanent, "domain nxdomain.test does not exist (NXDOMAIN)", "5.1.2"},
		{"noaddr.test", Permanent, "domain noaddr.test has no MX or address records", "5.1.2"},
		{"broken.test", Temporary, "DNS lookup failed: lookup MX broken.test: server " + w.dns.Addr + " answered SERVFAIL", "4.4.3"},
		{"badmx.test", Temporary, "lookup A gone.badmx.test: no such domain (NXDOMAIN)", ""},
	}
	for _, c := range cases {
		res := w.mx(nil).Deliver(context.Background(), msg(c.domain, "x@"+c.domain, "y@"+c.domain))
		if len(res) != 2 {
			t.Fatalf("%s: %d results for 2 recipients", c.domain, len(res))
		}
		for _, r := range res {
			if r.Status != c.st || r.Reply != c.reply || r.Code != c.code {
				t.Errorf("%s: %s %v %q %q, want %v %q %q", c.domain, r.Rcpt, r.Status, r.Reply, r.Code, c.st, c.reply, c.code)
			}
		}
	}
}

// A DNS server that does not answer in time is a temporary failure.
func TestDNSTimeoutDefers(t *testing.T) {
	w := newWorld(t, nil)
	w.dns.AddMX("slow.test", 10, "mx.slow.test")
	w.dns.SetDelay("slow.test", time.Second)
	x := w.mx(func(c *MXConfig) { c.Resolver = &Resolver{Addr: w.dns.Addr, Timeout: 100 * time.Millisecond} })
	res := x.Deliver(context.Background(), msg("slow.test", "x@slow.test"))
	check(t, res, "x@slow.test", Temporary, "DNS lookup failed")
}

func TestPerRecipientResults(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	rx := w.rx["127.0.0.2"]
	rx.SetRcptError("bad@example.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	rx.SetRcptError("full@example.test", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"})

	res := w.mx(nil).Deliver(context.Background(), msg("example.test", "bad@example.test", "good@example.test", "full@example.test"))
	if len(res) != 3 || res[0].Rcpt != "bad@example.test" || res[1].Rcpt != "good@example.test" || res[2].Rcpt != "full@example.test" {
		t.Fatalf("results not one per recipient in order: %+v", res)
	}
	check(t, res, "bad@example.test", Permanent, "550 5.1.1 no such user")
	check(t, res, "good@example.test", Delivered, "250 2.0.0")
	check(t, res, "full@example.test", Temporary, "452 4.2.2 mailbox full")
	msgs := rx.Messages()
	if len(msgs) != 1 || len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "good@example.test" {
		t.Errorf("receiver got %+v, want one message for good@ only", msgs)
	}

	// Nobody accepted: no DATA at all.
	res = w.mx(nil).Deliver(context.Background(), msg("example.test", "bad@example.test", "full@example.test"))
	check(t, res, "bad@example.test", Permanent, "550 5.1.1")
	check(t, res, "full@example.test", Temporary, "452 4.2.2")
	if n := len(rx.Messages()); n != 1 {
		t.Errorf("a message without accepted recipients was sent (%d messages)", n)
	}
}

func TestRejectionsApplyToAllAccepted(t *testing.T) {
	cases := []struct {
		name  string
		opts  testutil.ReceiverOptions
		st    Status
		reply string
	}{
		{"5xx to MAIL FROM", testutil.ReceiverOptions{MailError: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender blocked"}}, Permanent, "550 5.7.1 sender blocked"},
		{"5xx after DATA", testutil.ReceiverOptions{DataError: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}}, Permanent, "554 5.6.0 content rejected"},
		{"4xx after DATA", testutil.ReceiverOptions{DataError: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}}, Temporary, "451 4.3.0 try later"},
		{"message too big for SIZE", testutil.ReceiverOptions{MaxMessageBytes: 20}, Permanent, "552 5.3.4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": c.opts}, "127.0.0.2")
			w.dns.AddA("example.test", "127.0.0.2")
			res := w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test", "y@example.test"))
			check(t, res, "x@example.test", c.st, c.reply)
			check(t, res, "y@example.test", c.st, c.reply)
		})
	}
}

func TestNullSender(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	m := msg("example.test", "x@example.test")
	m.From = ""
	check(t, w.mx(nil).Deliver(context.Background(), m), "x@example.test", Delivered, "250")
	if got := w.rx["127.0.0.2"].Messages(); len(got) != 1 || got[0].From != "" {
		t.Errorf("received %+v, want one message from <>", got)
	}
}

func TestOpportunisticSTARTTLS(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{
		"127.0.0.2": {STARTTLS: true, CertHosts: []string{"mx1.example.test"}},
	}, "127.0.0.2", "127.0.0.3")
	w.dns.AddA("tls.test", "127.0.0.2")
	w.dns.AddA("plain.test", "127.0.0.3")
	x := w.mx(nil) // the test certificate is not trusted: accepted anyway
	check(t, x.Deliver(context.Background(), msg("tls.test", "x@tls.test")), "x@tls.test", Delivered, "250")
	check(t, x.Deliver(context.Background(), msg("plain.test", "x@plain.test")), "x@plain.test", Delivered, "250")
	if m := w.rx["127.0.0.2"].Messages(); len(m) != 1 || !m[0].TLS {
		t.Errorf("server offering STARTTLS got %+v, want one message inside TLS", m)
	}
	if m := w.rx["127.0.0.3"].Messages(); len(m) != 1 || m[0].TLS {
		t.Errorf("server without STARTTLS got %+v, want one clear-text message", m)
	}
	if !strings.Contains(w.log.String(), "tls=true tls_verified=false") {
		t.Errorf("log does not say TLS was used unverified:\n%s", w.log.String())
	}
}

func TestVerifyTLS(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{
		"127.0.0.2": {STARTTLS: true, CertHosts: []string{"mx1.example.test"}},
		"127.0.0.3": {},
	}, "127.0.0.2", "127.0.0.3")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddA("mx1.example.test", "127.0.0.2")
	w.dns.AddMX("wrongname.test", 10, "other.example.test")
	w.dns.AddA("other.example.test", "127.0.0.2")
	w.dns.AddA("plain.test", "127.0.0.3")
	pool := w.rx["127.0.0.2"].Pool

	// Untrusted certificate: temporary failure, nothing sent.
	x := w.mx(func(c *MXConfig) { c.VerifyTLS = true })
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Temporary, "TLS handshake")
	// Trusted certificate but for another name.
	x = w.mx(func(c *MXConfig) { c.VerifyTLS = true; c.RootCAs = pool })
	check(t, x.Deliver(context.Background(), msg("wrongname.test", "x@wrongname.test")), "x@wrongname.test", Temporary, "TLS handshake")
	// No STARTTLS at all.
	check(t, x.Deliver(context.Background(), msg("plain.test", "x@plain.test")), "x@plain.test", Temporary, "TLS required but the server does not offer STARTTLS")
	if n := len(w.rx["127.0.0.2"].Messages()) + len(w.rx["127.0.0.3"].Messages()); n != 0 {
		t.Fatalf("%d messages sent without verified TLS", n)
	}
	// Trusted and matching: delivered inside TLS.
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
	if m := w.rx["127.0.0.2"].Messages(); len(m) != 1 || !m[0].TLS {
		t.Errorf("got %+v, want one message inside TLS", m)
	}
}

// A server that accepts the connection and then says nothing is given up on
// after the overall limit, and the message is deferred.
func TestSilentServerTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	w := newWorld(t, nil)
	w.port = ln.Addr().(*net.TCPAddr).Port
	w.dns.AddA("example.test", "127.0.0.2")
	x := w.mx(func(c *MXConfig) { c.Timeout = 300 * time.Millisecond })
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Temporary, "timeout waiting for the greeting: the attempt's overall limit")
}

// Dial is injectable: here it routes every connection to one receiver, the way
// a test of another package can use the MX sender without loopback aliases.
func TestInjectedDial(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.1")
	w.dns.AddMX("example.test", 10, "mx.example.test")
	w.dns.AddA("mx.example.test", "192.0.2.1")
	var dialed []string
	x := w.mx(func(c *MXConfig) {
		c.Port = 25
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed = append(dialed, addr)
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(w.port))
		}
	})
	check(t, x.Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
	if len(dialed) != 1 || dialed[0] != "192.0.2.1:25" {
		t.Errorf("dialed %v, want [192.0.2.1:25]", dialed)
	}
}

// A server whose STARTTLS cannot succeed (here it only speaks TLS 1.1,
// below what submitd accepts) still gets the mail in opportunistic mode, over
// a new clear-text session; in verify mode it does not.
func TestOpportunisticFallsBackAfterFailedHandshake(t *testing.T) {
	cert, _ := testutil.NewCert(t, "example.test")
	old := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS11}
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {STARTTLS: true, TLSConfig: old}}, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	rx := w.rx["127.0.0.2"]

	check(t, w.mx(func(c *MXConfig) { c.VerifyTLS = true }).Deliver(context.Background(), msg("example.test", "x@example.test")),
		"x@example.test", Temporary, "TLS handshake")
	if n := len(rx.Messages()); n != 0 {
		t.Fatalf("verify mode sent %d messages", n)
	}
	check(t, w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test")), "x@example.test", Delivered, "250")
	if m := rx.Messages(); len(m) != 1 || m[0].TLS {
		t.Errorf("got %+v, want one clear-text message", m)
	}
	if !strings.Contains(w.log.String(), "STARTTLS failed, retrying without TLS") {
		t.Errorf("fallback not logged:\n%s", w.log.String())
	}
}

// Cancelling the context (server shutdown) ends a session at once and
// defers the recipients.
func TestCancelDefers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	w := newWorld(t, nil)
	w.port = ln.Addr().(*net.TCPAddr).Port
	w.dns.AddA("example.test", "127.0.0.2")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		c := <-accepted
		defer c.Close()
		cancel() // the server is silent; the sender must not wait for it
	}()
	res := w.mx(nil).Deliver(ctx, msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Temporary, "delivery interrupted")
}

// A UTF-8 address cannot go to a server without SMTPUTF8 (RFC 6531 §3.2):
// that is final, and nothing is sent.
func TestUTF8AddressNeedsSMTPUTF8(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	res := w.mx(nil).Deliver(context.Background(), msg("example.test", "jiří@example.test"))
	check(t, res, "jiří@example.test", Permanent, "the remote server does not offer SMTPUTF8")
	if n := len(w.rx["127.0.0.2"].Messages()); n != 0 {
		t.Errorf("%d messages sent", n)
	}

	w = newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.3": {SMTPUTF8: true}}, "127.0.0.3")
	w.dns.AddA("example.test", "127.0.0.3")
	res = w.mx(nil).Deliver(context.Background(), msg("example.test", "jiří@example.test"))
	check(t, res, "jiří@example.test", Delivered, "250")
	if m := w.rx["127.0.0.3"].Messages(); len(m) != 1 || m[0].Rcpts[0] != "jiří@example.test" {
		t.Errorf("received %+v", m)
	}
}

// A domain may name any number of MX hosts (a 64 KB answer over TCP holds
// thousands), each of which costs address lookups, and under DANE its
// TLSA records too, before a connection counts against MaxAddresses: an
// attempt looks at no more than MaxHosts of them, the most preferred.
func TestMXHostsBounded(t *testing.T) {
	w := newWorld(t, nil)
	for i := range MaxHosts + 40 {
		// None has an address: the name exists with other data.
		h := fmt.Sprintf("mx%d.example.test", i)
		w.dns.AddMX("example.test", uint16(i), h)
		w.dns.AddTXT(h, "x")
	}
	res := w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Temporary, "")
	asked := map[string]bool{}
	for _, q := range w.dns.Queries() {
		if q.Type == dns.TypeA || q.Type == dns.TypeAAAA {
			asked[q.Name] = true
		}
	}
	if len(asked) != MaxHosts {
		t.Errorf("addresses of %d MX hosts asked for, want %d", len(asked), MaxHosts)
	}
	for i := range MaxHosts {
		if h := fmt.Sprintf("mx%d.example.test.", i); !asked[h] {
			t.Errorf("the addresses of %s, among the %d most preferred, were not asked for", h, MaxHosts)
		}
	}
}
