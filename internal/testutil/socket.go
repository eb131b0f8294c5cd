package testutil

import (
	"net"
	"os"
	"testing"
)

// PassedSocket binds a loopback TCP socket and returns its address and its
// file, as systemd's socket activation or a handing-over parent passes it:
// the listener is closed and the socket stays open through the file, which
// is closed when the test ends.
func PassedSocket(t testing.TB) (string, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ln.Addr().String(), f
}
