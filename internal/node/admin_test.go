package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"submitd/internal/admin"
)

// TestAdminListeners: a node serves the admin API on [admin] listen and on
// data_dir/admin.sock (mode 0600), where the caller is the CLI, named by
// its OS user.
func TestAdminListeners(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	n := startNode(t, cfg)
	fi, err := os.Stat(SocketPath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	resp, err := http.Get("http://" + n.AdminAddr() + "/api/v1/me")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("TCP without credentials: %d, want 401", resp.StatusCode)
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", SocketPath(cfg))
	}}}
	resp, err = c.Get("http://submitd/api/v1/me")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var me map[string]string
	json.NewDecoder(resp.Body).Decode(&me)
	u, _ := user.Current()
	if resp.StatusCode != 200 || me["name"] != "cli:"+u.Username || me["role"] != "admin" {
		t.Errorf("over the socket: %d %v, want cli:%s as admin", resp.StatusCode, me, u.Username)
	}
}

// BenchmarkAcceptPaired is a client connecting to the submission listener,
// reading the greeting and quitting, on two nodes in turn: one with the
// admin server's TCP listener off, one with it on. Taking turns puts both
// under the same load from the rest of the machine; the metrics off-ns/op
// and on-ns/op are the time of one accept on each, and on/off their ratio,
// to show the admin server costs the SMTP path nothing.
func BenchmarkAcceptPaired(b *testing.B) {
	var addrs [2]string
	for i, admin := range []string{"", "127.0.0.1:0"} {
		cfg := testConfig(b, "127.0.0.1:1")
		cfg.Admin.Listen = admin
		cfg.Limits.MaxConnectionsPerIP = 1000
		ctx, cancel := context.WithCancel(context.Background())
		n, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		defer func() { cancel(); <-done }()
		addrs[i] = n.Addr("submission")
	}
	accept := func(addr string) time.Duration {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(c)
		if _, err := br.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(c, "QUIT\r\n")
		br.ReadString('\n')
		io.Copy(io.Discard, br)
		c.Close()
		return time.Since(start)
	}
	var total [2]time.Duration
	b.ResetTimer()
	for i := range b.N {
		// Alternate which goes first, so neither always follows the other.
		first := i % 2
		total[first] += accept(addrs[first])
		total[1-first] += accept(addrs[1-first])
	}
	b.ReportMetric(float64(total[0].Nanoseconds())/float64(b.N), "off-ns/op")
	b.ReportMetric(float64(total[1].Nanoseconds())/float64(b.N), "on-ns/op")
	b.ReportMetric(float64(total[1])/float64(total[0]), "on/off")
}

// TestAdminTLS: with [admin] tls the admin listener speaks HTTPS with the
// node's certificate and marks the session cookie Secure.
func TestAdminTLS(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Admin.TLS = true
	n := startNode(t, cfg)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get("https://" + n.AdminAddr() + "/api/v1/me")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.TLS == nil {
		t.Fatalf("HTTPS without credentials: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err := n.AdminStore.AddStaff(context.Background(), admin.Staff{Name: "petra", Role: admin.RoleSupport, PasswordHash: string(h)}); err != nil {
		t.Fatal(err)
	}
	resp, err = c.Post("https://"+n.AdminAddr()+"/api/v1/login", "application/json", strings.NewReader(`{"name":"petra","password":"pw"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Cookies(); resp.StatusCode != 200 || len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly {
		t.Errorf("login over TLS: %d, cookies %+v", resp.StatusCode, cs)
	}
}
