package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// startServe runs "submitd serve args..." in dir.
func startServe(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	return startProc(t, buildBinary(t), dir, nil, append([]string{"serve"}, args...)...)
}

var listeningRe = regexp.MustCompile(`msg=listening listener=(\w+) addr=(\S+)`)

// waitListening waits for the "listening" log line of each of the three
// listeners and returns their addresses by name.
func (p *proc) waitListening() map[string]string {
	p.t.Helper()
	deadline := time.After(60 * time.Second) // a -race binary on a busy machine
	for {
		got := map[string]string{}
		for _, m := range listeningRe.FindAllStringSubmatch(p.log.String(), -1) {
			got[m[1]] = m[2]
		}
		if len(got) == 3 && strings.Contains(p.log.String(), "submitd started") {
			return got
		}
		select {
		case <-p.exited:
			p.t.Fatalf("submitd serve exited before listening: %v\n%s", p.err, p.log)
		case <-deadline:
			p.t.Fatalf("submitd serve did not log three listening lines:\n%s", p.log)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ehlo sends EHLO and returns the extension keywords with their parameters.
func ehlo(t *testing.T, c *textproto.Conn) map[string][]string {
	t.Helper()
	id, err := c.Cmd("EHLO client.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	c.StartResponse(id)
	_, msg, err := c.ReadResponse(250)
	c.EndResponse(id)
	if err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	ext := map[string][]string{}
	for _, l := range strings.Split(msg, "\n")[1:] {
		f := strings.Fields(l)
		ext[strings.ToUpper(f[0])] = f[1:]
	}
	return ext
}

// expect sends a command (if any) and reads a reply with the given code.
func expect(t *testing.T, c *textproto.Conn, code int, cmd string) string {
	t.Helper()
	if cmd != "" {
		if err := c.PrintfLine("%s", cmd); err != nil {
			t.Fatal(err)
		}
	}
	_, msg, err := c.ReadResponse(code)
	if err != nil {
		t.Fatalf("%q: %v", cmd, err)
	}
	return msg
}

// checkAuthOffer asserts SPEC R1 and R3: inside TLS, AUTH offers exactly
// PLAIN and LOGIN; outside TLS, no AUTH at all.
func checkAuthOffer(t *testing.T, where string, ext map[string][]string, inTLS bool) {
	t.Helper()
	mechs, ok := ext["AUTH"]
	if !inTLS {
		if ok {
			t.Errorf("%s: AUTH %v offered before TLS (SPEC R3)", where, mechs)
		}
		return
	}
	sort.Strings(mechs)
	if fmt.Sprint(mechs) != "[LOGIN PLAIN]" {
		t.Errorf("%s: AUTH mechanisms %v; want PLAIN and LOGIN (SPEC R1)", where, mechs)
	}
}

// checkListeners speaks to each listener: smtp and submission offer STARTTLS
// and then AUTH; submissions speaks TLS at once. Every handshake verifies the
// server certificate against certPEM for hostname.
func checkListeners(t *testing.T, addrs map[string]string, certPEM []byte, hostname string) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatalf("cert.pem holds no certificate:\n%s", certPEM)
	}
	tlsConf := &tls.Config{ServerName: hostname, RootCAs: pool}
	for _, name := range []string{"smtp", "submission"} {
		conn, err := net.DialTimeout("tcp", addrs[name], 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		c := textproto.NewConn(conn)
		if greet := expect(t, c, 220, ""); !strings.HasPrefix(greet, hostname) {
			t.Errorf("%s: greeting %q does not name %s", name, greet, hostname)
		}
		ext := ehlo(t, c)
		if _, ok := ext["STARTTLS"]; !ok {
			t.Errorf("%s: EHLO does not offer STARTTLS: %v", name, ext)
		}
		checkAuthOffer(t, name+" before STARTTLS", ext, false)
		expect(t, c, 220, "STARTTLS")
		tc := tls.Client(conn, tlsConf)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("%s: TLS handshake after STARTTLS: %v", name, err)
		}
		c = textproto.NewConn(tc)
		ext = ehlo(t, c)
		if _, ok := ext["STARTTLS"]; ok {
			t.Errorf("%s: STARTTLS offered again inside TLS", name)
		}
		checkAuthOffer(t, name+" after STARTTLS", ext, true)
		expect(t, c, 221, "QUIT")
		c.Close()
	}

	// Implicit TLS: the handshake comes before any SMTP.
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addrs["submissions"], tlsConf)
	if err != nil {
		t.Fatalf("submissions: TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	c := textproto.NewConn(tc)
	expect(t, c, 220, "")
	ext := ehlo(t, c)
	if _, ok := ext["STARTTLS"]; ok {
		t.Errorf("submissions offers STARTTLS inside implicit TLS")
	}
	checkAuthOffer(t, "submissions", ext, true)
	expect(t, c, 221, "QUIT")
	c.Close()
}

// TestServeFreshDataDir: serve with a data_dir that does not exist yet
// creates it, the SQLite store and a self-signed certificate, listens where
// configured, answers on all three listeners and stops cleanly on Ctrl-C. A
// second start reuses the certificate.
func TestServeFreshDataDir(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "var", "lib", "submitd")
	want := map[string]string{"smtp": freeAddr(t), "submission": freeAddr(t), "submissions": freeAddr(t)}
	const hostname = "mail.serve.e2e.test"
	cfg := filepath.Join(dir, "submitd.toml")
	body := fmt.Sprintf("hostname = %q\ndata_dir = %q\n[listen]\nsmtp = %q\nsubmission = %q\nsubmissions = %q\n[admin]\nlisten = %q\n",
		hostname, dataDir, want["smtp"], want["submission"], want["submissions"], freeAddr(t))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}

	p := startServe(t, dir, "-config", cfg)
	got := p.waitListening()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listening on %v; want %v", got, want)
	}
	for _, f := range []string{"submitd.db", "tls/cert.pem", "tls/key.pem"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Errorf("data_dir file: %v", err)
		}
	}
	if !strings.Contains(p.log.String(), "self-signed") {
		t.Errorf("no warning about the generated certificate:\n%s", p.log)
	}
	certPEM, err := os.ReadFile(filepath.Join(dataDir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	checkListeners(t, got, certPEM, hostname)
	p.interrupt()
	for name, addr := range got {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections on %s after exit", name, addr)
		}
	}

	// A restart keeps the certificate clients may have accepted.
	p = startServe(t, dir, "-config", cfg)
	got = p.waitListening()
	again, _ := os.ReadFile(filepath.Join(dataDir, "tls", "cert.pem"))
	if string(again) != string(certPEM) {
		t.Error("restart replaced the certificate")
	}
	if strings.Contains(p.log.String(), "generated a self-signed") {
		t.Errorf("restart generated a new certificate:\n%s", p.log)
	}
	checkListeners(t, got, certPEM, hostname)
	p.interrupt()
}

// TestServeNoConfig is "submitd serve" on a fresh checkout: no file, no
// variable, built-in defaults, unprivileged ports, ./data.
func TestServeNoConfig(t *testing.T) {
	for _, a := range []string{"127.0.0.1:2525", "127.0.0.1:2587", "127.0.0.1:2465", "127.0.0.1:8025"} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Skipf("default port %s is in use here (%v); the defaults cannot be tried", a, err)
		}
		ln.Close()
	}
	dir := t.TempDir()
	p := startServe(t, dir)
	got := p.waitListening()
	want := map[string]string{"smtp": "127.0.0.1:2525", "submission": "127.0.0.1:2587", "submissions": "127.0.0.1:2465"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listening on %v; want the defaults %v", got, want)
	}
	for _, f := range []string{"data/submitd.db", "data/tls/cert.pem", "data/tls/key.pem", "data/spool"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("fresh start: %v", err)
		}
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "data", "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	checkListeners(t, got, certPEM, "localhost")
	if !strings.Contains(p.log.String(), `msg="admin listening" addr=127.0.0.1:8025`) {
		t.Errorf("the admin server (and /metrics) not on the default [admin] listen:\n%s", p.log)
	}
	if resp, err := http.Get("http://127.0.0.1:8025/metrics"); err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /metrics on the default [admin] listen: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	p.interrupt()
}

// TestServeBadConfig: a config with an unknown key or a bad value stops
// serve before it touches data_dir or a port, with a message naming the key
// (and the value).
func TestServeBadConfig(t *testing.T) {
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"unknown key", "[listen]\nsmtpp = \"127.0.0.1:2525\"\n", []string{"unknown key listen.smtpp"}},
		{"unknown top-level key", "hostnme = \"x\"\n", []string{"unknown key hostnme"}},
		{"bad duration", "[limits]\ncommand_timeout = \"5 minutes\"\n", []string{"limits.command_timeout", `"5 minutes"`}},
		{"bad address", "[listen]\nsubmission = \"127.0.0.1\"\n", []string{"listen.submission", `"127.0.0.1"`}},
		{"bad CIDR", "[policy]\nwebmail_networks = [\"10.0.0.0/40\"]\n", []string{"policy.webmail_networks", `"10.0.0.0/40"`}},
		{"unknown reply key", "[replies]\nauth_faild = \"x\"\n", []string{"replies.auth_faild"}},
		{"unreadable certificate", "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n", []string{"/nonexistent/cert.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dataDir := filepath.Join(dir, "data")
			cfg := filepath.Join(dir, "submitd.toml")
			body := fmt.Sprintf("data_dir = %q\n", dataDir) + tt.toml
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startServe(t, dir, "-config", cfg)
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("serve with a bad config is still running:\n%s", p.log)
			}
			var ee *exec.ExitError
			if !errors.As(p.err, &ee) || ee.ExitCode() == 0 {
				t.Errorf("exit = %v; want a non-zero status", p.err)
			}
			out := p.log.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output %q does not mention %q", out, w)
				}
			}
			if strings.Contains(out, "listening") {
				t.Errorf("serve listened with a bad config:\n%s", out)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data_dir was created with a bad config (%v)", err)
			}
		})
	}
}
