package delivery

import (
	"context"
	"net"
	"net/netip"
	"syscall"
)

// sourceDial returns a DialFunc that makes outbound connections from v4
// or v6, whichever is of the family of the address being dialled
// ([delivery] source_ipv4, source_ipv6: the addresses the provider's SPF
// record names). An invalid address leaves that family to the system. The
// choice is made per attempt, after name resolution, so a smarthost given
// by name is covered too.
func sourceDial(v4, v6 netip.Addr) DialFunc {
	d := &net.Dialer{ControlContext: func(_ context.Context, network, _ string, c syscall.RawConn) error {
		src := v4
		if network == "tcp6" {
			src = v6
		}
		if !src.IsValid() {
			return nil
		}
		var sa syscall.Sockaddr
		if src.Is4() {
			sa = &syscall.SockaddrInet4{Addr: src.As4()}
		} else {
			sa = &syscall.SockaddrInet6{Addr: src.As16()}
		}
		var berr error
		if err := c.Control(func(fd uintptr) { berr = syscall.Bind(int(fd), sa) }); err != nil {
			return err
		}
		return berr
	}}
	return d.DialContext
}
