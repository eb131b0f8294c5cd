package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"submitd/internal/admin"

	"submitd/internal/config"
	"submitd/internal/testutil"
)

// lockedBuffer collects a node's log for a test to search, and passes it
// on to the test log.
type lockedBuffer struct {
	testutil.SyncBuffer
	t *testing.T
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.SyncBuffer.Write(p)
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// implicitTLS makes a TLS handshake on the node's listener name
// ("submissions", or the admin listener's address) asking for sni ("" asks
// for no name) and returns the certificate the server sent.
func implicitTLS(t *testing.T, addr, sni string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := dialTLS(addr, sni, roots)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dialTLS is implicitTLS returning its error; with roots nil it does not
// verify the certificate.
func dialTLS(addr, sni string, roots *x509.CertPool) (*x509.Certificate, error) {
	conf := &tls.Config{ServerName: sni, RootCAs: roots, InsecureSkipVerify: roots == nil}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return nil, fmt.Errorf("TLS to %s for %q: %w", addr, sni, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// startTLS says EHLO and STARTTLS on the node's listener (smtp,
// submission) asking for sni and returns the certificate the server sent.
func startTLS(t *testing.T, addr, sni string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, &tls.Config{ServerName: sni, RootCAs: roots, InsecureSkipVerify: roots == nil})
	if err != nil {
		t.Fatalf("STARTTLS on %s for %q: %v", addr, sni, err)
	}
	defer c.Close()
	// The client's handshake waits for its first command.
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	st, ok := c.TLSConnectionState()
	if !ok {
		t.Fatal("no TLS state after STARTTLS")
	}
	return st.PeerCertificates[0]
}

// serial names a certificate in failures.
func serial(c *x509.Certificate) string { return c.Subject.CommonName + "/" + c.SerialNumber.Text(16) }

// TestCertsSNI: one node serves the default certificate, a second one for
// a customer's name and a wildcard, each chosen by the name the client
// asks for on every listener, the admin one included; a client that asks
// for no name or an unknown one gets the default.
func TestCertsSNI(t *testing.T) {
	dir := t.TempDir()
	files := func(base string, names ...string) (string, string, tls.Certificate) {
		c, _ := testutil.NewCert(t, names...)
		cf, kf := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
		testutil.WriteCert(t, c, cf, kf)
		return cf, kf, c
	}
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	cfg := testConfig(t, rcv.Addr)
	var def, firma, brand tls.Certificate
	cfg.TLS.Cert, cfg.TLS.Key, def = files("default", "smtp.forpsi.test")
	fc, fk, firma := files("firma", "smtp.firma.test")
	// One file may hold both the key and the chain.
	bc, _, brand := files("brand", "*.brand.test")
	bk := filepath.Join(dir, "brand.key")
	both, _ := os.ReadFile(bk)
	chain, _ := os.ReadFile(bc)
	testutil.WriteFileAtomic(t, bc, append(both, chain...))
	cfg.TLS.Certificate = []config.CertFiles{{Cert: fc, Key: fk}, {Cert: bc, Key: bc}}
	cfg.Admin.TLS = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, cfg)

	for _, tc := range []struct {
		sni  string
		want tls.Certificate
	}{
		{"", def},
		{"smtp.forpsi.test", def},
		{"smtp.firma.test", firma},
		{"SMTP.Firma.Test", firma},
		{"mail.brand.test", brand},
		{"a.b.brand.test", def}, // a wildcard covers one label (RFC 6125 §6.4.3)
		{"unknown.test", def},
	} {
		want := tc.want.Leaf
		for name, got := range map[string]*x509.Certificate{
			"smtp":        startTLS(t, n.Addr("smtp"), tc.sni, nil),
			"submission":  startTLS(t, n.Addr("submission"), tc.sni, nil),
			"submissions": implicitTLS(t, n.Addr("submissions"), tc.sni, nil),
			"admin":       implicitTLS(t, n.AdminAddr(), tc.sni, nil),
		} {
			if !got.Equal(want) {
				t.Errorf("%s with SNI %q: got %s, want %s", name, tc.sni, serial(got), serial(want))
			}
		}
	}
	// The names verify with a client that checks them.
	_, pool := testutil.NewCert(t, "x.test")
	pool.AddCert(firma.Leaf)
	startTLS(t, n.Addr("submission"), "smtp.firma.test", pool)
}

// TestCertsSwap: replacing the files under a running node serves the new
// certificate to new handshakes, at the next reload interval or at once on
// Reload, while a session opened before goes on and sends its message. A
// broken file or a key that does not match keeps the certificate in use,
// is logged naming the file and counted.
func TestCertsSwap(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "smtp.crt"), filepath.Join(dir, "smtp.key")
	c1, _ := testutil.NewCert(t, "smtp.forpsi.test")
	testutil.WriteCert(t, c1, cf, kf)
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	cfg := testConfig(t, rcv.Addr)
	cfg.TLS.Cert, cfg.TLS.Key = cf, kf
	cfg.TLS.ReloadInterval = config.Duration(time.Second)
	log := &lockedBuffer{t: t}
	n := startNodeLog(t, cfg, log)
	if got := implicitTLS(t, n.Addr("submissions"), "smtp.forpsi.test", nil); !got.Equal(c1.Leaf) {
		t.Fatalf("first certificate: got %s", serial(got))
	}
	before, _ := scrape(t, n)

	// A session opened with the first certificate.
	old, err := smtp.DialStartTLS(n.Addr("submission"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Auth(sasl.NewPlainClient("", "jan@firma.test", "secret-pw")); err != nil {
		t.Fatal(err)
	}

	// Swapped under the node: the next reload interval picks it up.
	c2, _ := testutil.NewCert(t, "smtp.forpsi.test")
	testutil.WriteCert(t, c2, cf, kf)
	testutil.WaitFor(t, 30*time.Second, "the new certificate on 465", func() bool {
		return implicitTLS(t, n.Addr("submissions"), "", nil).Equal(c2.Leaf)
	})
	if got := startTLS(t, n.Addr("submission"), "", nil); !got.Equal(c2.Leaf) {
		t.Fatalf("587 after the swap: got %s, want %s", serial(got), serial(c2.Leaf))
	}
	st, _ := old.TLSConnectionState()
	if !st.PeerCertificates[0].Equal(c1.Leaf) {
		t.Fatal("the open session's certificate changed")
	}
	if err := old.SendMail("jan@firma.test", []string{"petr@example.test"},
		strings.NewReader("From: jan@firma.test\r\nTo: petr@example.test\r\nSubject: before the swap\r\n\r\nStill here.\r\n")); err != nil {
		t.Fatalf("the session opened before the swap could not send: %v", err)
	}

	// Reload checks at once, without waiting for the interval.
	c3, _ := testutil.NewCert(t, "smtp.forpsi.test")
	testutil.WriteCert(t, c3, cf, kf)
	if err := n.Certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := implicitTLS(t, n.Addr("submissions"), "", nil); !got.Equal(c3.Leaf) {
		t.Fatalf("after Reload: got %s, want %s", serial(got), serial(c3.Leaf))
	}

	// A certificate file that does not parse.
	testutil.WriteFileAtomic(t, cf, []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"))
	err = n.Certs.Reload()
	if err == nil || !strings.Contains(err.Error(), cf) {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	// A certificate with another certificate's key.
	c4, _ := testutil.NewCert(t, "smtp.forpsi.test")
	testutil.WriteCert(t, c4, cf, filepath.Join(dir, "other.key"))
	if err := n.Certs.Reload(); err == nil || !strings.Contains(err.Error(), kf) {
		t.Fatalf("Reload of a certificate whose key does not match: %v", err)
	}
	if got := implicitTLS(t, n.Addr("submissions"), "", nil); !got.Equal(c3.Leaf) {
		t.Fatalf("after broken files: got %s, want the previous %s", serial(got), serial(c3.Leaf))
	}
	for _, f := range []string{cf, kf} {
		if !strings.Contains(log.String(), f) || !strings.Contains(log.String(), "level=ERROR") {
			t.Errorf("no error naming %s in the log", f)
		}
	}
	after, _ := scrape(t, n)
	if d := after.Since(before, "submitd_tls_reload_errors_total"); d != 2 {
		t.Errorf("submitd_tls_reload_errors_total rose by %v, want 2", d)
	}
	if d := after.Since(before, "submitd_tls_reloads_total"); d != 2 {
		t.Errorf("submitd_tls_reloads_total rose by %v, want 2", d)
	}
	if after["submitd_tls_files_refused"] != 1 || before["submitd_tls_files_refused"] != 0 {
		t.Errorf("submitd_tls_files_refused %v before, %v after; want 0 and 1", before["submitd_tls_files_refused"], after["submitd_tls_files_refused"])
	}
	// The files stay refused, but the same problem is not counted again
	// at every check.
	if err := n.Certs.Reload(); err == nil || !strings.Contains(err.Error(), kf) {
		t.Errorf("Reload of the unchanged broken files: %v", err)
	}
	if again, _ := scrape(t, n); again.Since(after, "submitd_tls_reload_errors_total") != 0 {
		t.Error("the same broken files were counted again")
	}
	// Fixed: the new pair loads.
	testutil.WriteCert(t, c4, cf, kf)
	if err := n.Certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := implicitTLS(t, n.Addr("submissions"), "", nil); !got.Equal(c4.Leaf) {
		t.Fatalf("after the fix: got %s, want %s", serial(got), serial(c4.Leaf))
	}
	if fixed, _ := scrape(t, n); fixed["submitd_tls_files_refused"] != 0 {
		t.Errorf("submitd_tls_files_refused %v after the fix", fixed["submitd_tls_files_refused"])
	}
}

// TestCertsExpiry: every certificate served has its expiry in
// /metrics; one that expires within 14 days is warned of in the log and on
// the support web's front page.
func TestCertsExpiry(t *testing.T) {
	dir := t.TempDir()
	soon := time.Now().Add(5 * 24 * time.Hour).Truncate(time.Second)
	late := time.Now().Add(60 * 24 * time.Hour).Truncate(time.Second)
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	cfg := testConfig(t, rcv.Addr)
	c1, _ := testutil.NewCertUntil(t, late, "smtp.forpsi.test")
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	testutil.WriteCert(t, c1, cfg.TLS.Cert, cfg.TLS.Key)
	c2, _ := testutil.NewCertUntil(t, soon, "smtp.firma.test")
	cfg.TLS.Certificate = []config.CertFiles{{Cert: filepath.Join(dir, "b.crt"), Key: filepath.Join(dir, "b.key")}}
	testutil.WriteCert(t, c2, cfg.TLS.Certificate[0].Cert, cfg.TLS.Certificate[0].Key)
	log := &lockedBuffer{t: t}
	n := startNodeLog(t, cfg, log)

	m, _ := scrape(t, n)
	for name, when := range map[string]time.Time{"smtp.forpsi.test": late, "smtp.firma.test": soon} {
		series := fmt.Sprintf("submitd_tls_certificate_expiry_timestamp_seconds{name=%q}", name)
		if got := m[series]; got != float64(when.Unix()) {
			t.Errorf("%s = %v, want %d", series, got, when.Unix())
		}
	}
	if !strings.Contains(log.String(), "certificate expires soon") || !strings.Contains(log.String(), "name=smtp.firma.test") {
		t.Error("no warning of smtp.firma.test in the log")
	}
	if strings.Contains(log.String(), "name=smtp.forpsi.test") {
		t.Error("a certificate 60 days from expiry was warned of")
	}
	page := supportFrontPage(t, n)
	if !strings.Contains(page, "The TLS certificate for smtp.firma.test") || strings.Contains(page, "smtp.forpsi.test") {
		t.Errorf("front page does not warn of exactly smtp.firma.test:\n%s", page)
	}
}

// supportFrontPage logs in to the support web on the admin listener as a
// support user and returns the front page.
func supportFrontPage(t *testing.T, n *Node) string {
	t.Helper()
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err := n.AdminStore.AddStaff(context.Background(), admin.Staff{Name: "petra", Role: admin.RoleSupport, PasswordHash: string(h)}); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	base := "http://" + n.AdminAddr()
	resp, err := c.Post(base+"/api/v1/login", "application/json", strings.NewReader(`{"name":"petra","password":"pw"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %s", resp.Status)
	}
	resp, err = c.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/find" {
		t.Fatalf("front page: %s at %s", resp.Status, resp.Request.URL)
	}
	return string(b)
}

// TestReloadCerts: a configuration reload that adds a [[tls.certificate]]
// serves the new name on the running node.
func TestReloadCerts(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	cfg := testConfig(t, rcv.Addr)
	n := startNode(t, cfg)
	def := implicitTLS(t, n.Addr("submissions"), "smtp.firma.test", nil)

	dir := t.TempDir()
	c, _ := testutil.NewCert(t, "smtp.firma.test")
	f := config.CertFiles{Cert: filepath.Join(dir, "firma.crt"), Key: filepath.Join(dir, "firma.key")}
	testutil.WriteCert(t, c, f.Cert, f.Key)
	next := *cfg
	next.TLS.Certificate = []config.CertFiles{f}
	if err := n.ReloadCerts(&next); err != nil {
		t.Fatal(err)
	}
	if got := implicitTLS(t, n.Addr("submissions"), "smtp.firma.test", nil); !got.Equal(c.Leaf) {
		t.Fatalf("after the reload: got %s", serial(got))
	}
	if got := implicitTLS(t, n.Addr("submissions"), "", nil); !got.Equal(def) {
		t.Fatalf("default after the reload: got %s, want %s", serial(got), serial(def))
	}
}

// TestCertsSNIOpenSSL: OpenSSL's client, as the mail clients built on it
// do, gets the certificate of the name it asks for after STARTTLS on 587,
// and the default when it asks for none.
func TestCertsSNIOpenSSL(t *testing.T) {
	bin := testutil.NeedTool(t, "openssl")
	dir := t.TempDir()
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	cfg := testConfig(t, rcv.Addr)
	def, _ := testutil.NewCert(t, "smtp.forpsi.test")
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "d.crt"), filepath.Join(dir, "d.key")
	testutil.WriteCert(t, def, cfg.TLS.Cert, cfg.TLS.Key)
	firma, _ := testutil.NewCert(t, "smtp.firma.test")
	cfg.TLS.Certificate = []config.CertFiles{{Cert: filepath.Join(dir, "f.crt"), Key: filepath.Join(dir, "f.key")}}
	testutil.WriteCert(t, firma, cfg.TLS.Certificate[0].Cert, cfg.TLS.Certificate[0].Key)
	n := startNode(t, cfg)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-servername", "smtp.firma.test"}, "CN = smtp.firma.test"},
		{[]string{"-noservername"}, "CN = smtp.forpsi.test"},
	} {
		args := append([]string{"s_client", "-connect", n.Addr("submission"), "-starttls", "smtp"}, tc.args...)
		cmd := exec.Command(bin, args...)
		cmd.Stdin = strings.NewReader("QUIT\r\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "subject="+tc.want) && !strings.Contains(string(out), "s:"+tc.want) {
			t.Errorf("openssl %v: certificate is not %q:\n%s", tc.args, tc.want, out)
		}
	}
}
