package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Pebble is Let's Encrypt's ACME test server (RFC 8555) that a test runs for
// itself on loopback ports it chose. Its challenge validation connects to
// the ports of PebbleOptions on 127.0.0.1, and resolves the names through
// the test's DNS server.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// Roots is a PEM file that trusts the server's own HTTPS, as [acme]
	// ca_roots takes it.
	Roots string
	// mgmt is host:port of the management interface.
	mgmt string
	// client speaks HTTPS to the server.
	client *http.Client
	// proc runs the server.
	proc process
}

// PebbleOptions configure a Pebble.
type PebbleOptions struct {
	// DNS is the resolver the validation asks for the names' addresses,
	// e.g. a DNSServer's Addr.
	DNS string
	// HTTPPort and TLSPort are where http-01 and tls-alpn-01 are
	// validated on the address the name resolves to.
	HTTPPort, TLSPort int
	// Validity is the lifetime of the certificates issued; 0 leaves
	// Pebble's default of five years.
	Validity time.Duration
}

// StartPebble starts a Pebble for this test, with no sleeps before
// validations and no rejected nonces, and stops it when the test ends. The
// test is skipped when pebble is not installed (failed under CI=true, where
// .ci/run installs the pebble package).
func StartPebble(t testing.TB, opts PebbleOptions) *Pebble {
	t.Helper()
	bin := NeedTool(t, "pebble")
	dir := t.TempDir()
	cert, _ := NewCert(t, "127.0.0.1", "localhost")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	WriteCert(t, cert, certFile, keyFile)
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "127.0.0.1")))
	mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "127.0.0.1")))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":             listen,
		"managementListenAddress":   mgmt,
		"certificate":               certFile,
		"privateKey":                keyFile,
		"httpPort":                  opts.HTTPPort,
		"tlsPort":                   opts.TLSPort,
		"ocspResponderURL":          "",
		"certificateValidityPeriod": int64(opts.Validity / time.Second),
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	p := &Pebble{
		Directory: "https://" + listen + "/dir",
		Roots:     certFile,
		mgmt:      mgmt,
		client: &http.Client{Timeout: 10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
	p.proc = process{
		name: "pebble on " + listen, logPath: filepath.Join(dir, "pebble.log"), within: 30 * time.Second,
		stop: syscall.SIGKILL,
		command: func() *exec.Cmd {
			args := []string{"-config", confFile}
			if opts.DNS != "" {
				args = append(args, "-dnsserver", opts.DNS)
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
			return cmd
		},
		ready: func() error {
			if _, err := p.get("https://" + mgmt + "/roots/0"); err != nil {
				return err
			}
			_, err := p.get(p.Directory)
			return err
		},
	}
	if err := p.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			log, _ := os.ReadFile(p.proc.logPath)
			t.Logf("pebble log:\n%s", log)
		}
	})
	return p
}

// get fetches url and fails unless it answers 200.
func (p *Pebble) get(url string) ([]byte, error) {
	resp, err := p.client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// Root returns a pool with the root the running server issues under, to
// verify the certificates it issued. A restarted Pebble has a new root.
func (p *Pebble) Root(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := p.get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: no PEM certificate in %q", b)
	}
	return pool
}

// Start starts the server (again, after Stop) and waits until it answers.
// A restarted server has a new root and knows no accounts or orders.
func (p *Pebble) Start() error { return p.proc.start() }

// Stop kills the server at once, as when a CA is unreachable.
func (p *Pebble) Stop() { p.proc.halt() }
