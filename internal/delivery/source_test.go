package delivery

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// [delivery] source_ipv4: the receiver sees the connection come from the
// configured address, not from the system's choice (127.0.0.1 on
// loopback).
func TestSourceAddress(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddMX("example.test", 10, "mx.example.test")
	w.dns.AddA("mx.example.test", "127.0.0.2")
	seen := make(chan string, 4)
	x := w.mx(func(c *MXConfig) {
		dial := sourceDial(netip.MustParseAddr("127.0.0.9"), netip.Addr{})
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := dial(ctx, network, addr)
			if err == nil {
				seen <- nc.LocalAddr().(*net.TCPAddr).IP.String()
			}
			return nc, err
		}
	})
	res := x.Deliver(context.Background(), msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Delivered, "250")
	if got := <-seen; got != "127.0.0.9" {
		t.Errorf("connection from %s, want 127.0.0.9", got)
	}
	// An IPv6 source does not get in the way of an IPv4 destination.
	d := sourceDial(netip.Addr{}, netip.MustParseAddr("::1"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := d(ctx, "tcp", w.rx["127.0.0.2"].Addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}
