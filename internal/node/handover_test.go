package node

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"submitd/internal/systemd"
	"submitd/internal/testutil"
)

// TestPassedSocketsByAddress: a .socket unit names all its sockets alike,
// so a socket whose name is no listener's serves the listener configured
// at its address, and one that matches no listener is closed; a socket
// named after a listener serves it whatever the configured address. None
// of the configured addresses is bound a second time.
func TestPassedSocketsByAddress(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	subAddr, subFile := testutil.PassedSocket(t)
	strayAddr, strayFile := testutil.PassedSocket(t)
	smtpAddr, smtpFile := testutil.PassedSocket(t)
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

// TestNotifyServiceManager: a node under systemd says READY=1 with its pid
// once it serves, RELOADING=1 and READY=1 around a reload, and STOPPING=1
// when it stops.
func TestNotifyServiceManager(t *testing.T) {
	dir, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: path})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	sock.SetReadDeadline(time.Now().Add(60 * time.Second))
	next := func() string {
		buf := make([]byte, 4096)
		k, err := sock.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:k])
	}

	cfg := testConfig(t, "127.0.0.1:1")
	n, err := NewWith(context.Background(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Options{Notifier: &systemd.Notifier{Socket: path}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	if m := next(); !strings.Contains(m, "READY=1\n") || !strings.Contains(m, "MAINPID="+strconv.Itoa(os.Getpid())) {
		t.Errorf("at start: %q", m)
	}
	if c, err := net.Dial("tcp", n.Addr("smtp")); err != nil {
		t.Errorf("not serving after READY=1: %v", err)
	} else {
		c.Close()
	}
	n.NotifyReloading()
	if m := next(); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("reloading: %q", m)
	}
	n.NotifyReady("reloaded")
	if m := next(); !strings.Contains(m, "READY=1\n") || !strings.Contains(m, "STATUS=reloaded") {
		t.Errorf("after the reload: %q", m)
	}
	stop()
	if m := next(); !strings.HasPrefix(m, "STOPPING=1") {
		t.Errorf("at stop: %q", m)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}
