package node

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"submitd/internal/systemd"
)

// passedSocket binds a loopback socket and returns its address and file,
// as systemd holds it for a .socket unit; the test's listener is closed.
func passedSocket(t *testing.T) (string, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return ln.Addr().String(), f
}

// TestPassedSocketsByAddress: a .socket unit names all its sockets alike,
// so a socket whose name is no listener's serves the listener configured
// at its address, and one that matches no listener is closed; a socket
// named after a listener serves it whatever the configured address. None
// of the configured addresses is bound a second time.
func TestPassedSocketsByAddress(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	subAddr, subFile := passedSocket(t)
	strayAddr, strayFile := passedSocket(t)
	smtpAddr, smtpFile := passedSocket(t)
	cfg.Listen.Submission = subAddr
	cfg.Listen.SMTP = "127.0.0.1:0"
	socks := []systemd.Socket{{Name: "submitd", File: subFile}, {Name: "submitd", File: strayFile}, {Name: "smtp", File: smtpFile}}
	n, err := NewWith(context.Background(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), Options{Sockets: socks})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got := n.Addr("submission"); got != subAddr {
		t.Errorf("submission serves on %s, want the passed %s", got, subAddr)
	}
	if got := n.Addr("smtp"); got != smtpAddr {
		t.Errorf("smtp serves on %s, want the passed %s", got, smtpAddr)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { stop(); <-done }()
	for _, addr := range []string{subAddr, smtpAddr} {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if l, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(l, "220 ") {
			t.Errorf("%s greets %q", addr, l)
		}
		c.Close()
	}
	if c, err := net.DialTimeout("tcp", strayAddr, 10*time.Second); err == nil {
		c.Close()
		t.Errorf("the passed socket no listener takes is still open")
	}
}
