package main

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/certs"
)

// start runs the ceiling on 127.0.0.1:0, refusing 127.8.0.1, with the
// password "pw".
func start(t *testing.T, implicit bool) string {
	t.Helper()
	tc, _, err := certs.Load("", "", t.TempDir(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(&backend{password: "pw"}, tc)
	go s.Serve(newFilterListener(ln, netip.MustParsePrefix("127.8.0.1/32"), tc, implicit))
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

func TestCeilingChecksThePasswordAndTakesMail(t *testing.T) {
	addr := start(t, false)
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@b.test", nil); err == nil {
		t.Fatal("MAIL accepted before AUTH")
	}
	if err := c.Auth(sasl.NewPlainClient("", "anyone@x.test", "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if err := c.Auth(sasl.NewPlainClient("", "anyone@x.test", "pw")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@b.test", []string{"c@d.test"}, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("sending after AUTH: %v", err)
	}
}

func TestCeilingRefusesTheBlockedAddress(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		addr := start(t, implicit)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.8.0.1")}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if implicit {
			nc = tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
		}
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(nc).ReadString('\n')
		nc.Close()
		if err != nil || !strings.HasPrefix(line, "554 ") {
			t.Errorf("implicit TLS %v: greeting %q, %v; want a 554", implicit, line, err)
		}
		// Another address gets the normal greeting.
		c, err := smtp.Dial(addr)
		if implicit {
			c, err = smtp.DialTLS(addr, &tls.Config{InsecureSkipVerify: true})
		}
		if err != nil {
			t.Fatalf("implicit TLS %v: other address: %v", implicit, err)
		}
		if err := c.Hello("client.test"); err != nil {
			t.Errorf("implicit TLS %v: EHLO: %v", implicit, err)
		}
		c.Close()
	}
}
