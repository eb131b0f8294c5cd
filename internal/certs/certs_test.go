package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// TestGenerateThenReuse: without files a self-signed certificate for the
// hostname is made once in data_dir/tls and used again at the next start.
func TestGenerateThenReuse(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(Config{DataDir: dir, Hostname: "mail.example.cz"})
	if err != nil || !s1.Generated {
		t.Fatalf("first New: generated=%v err=%v", s1 != nil && s1.Generated, err)
	}
	c1 := s1.table.Load().def
	leaf, err := x509.ParseCertificate(c1.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("mail.example.cz"); err != nil {
		t.Fatalf("certificate does not name the host: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "tls", "key.pem")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	s2, err := New(Config{DataDir: dir, Hostname: "mail.example.cz"})
	if err != nil || s2.Generated {
		t.Fatalf("second New: err=%v", err)
	}
	if string(s2.table.Load().def.Certificate[0]) != string(c1.Certificate[0]) {
		t.Fatal("certificate regenerated on restart")
	}
	// A configured pair is used as it is.
	s3, err := New(Config{Cert: filepath.Join(dir, "tls", "cert.pem"), Key: filepath.Join(dir, "tls", "key.pem"), DataDir: t.TempDir(), Hostname: "x"})
	if err != nil || s3.Generated || string(s3.table.Load().def.Certificate[0]) != string(c1.Certificate[0]) {
		t.Fatalf("configured pair: err=%v", err)
	}
	if _, err := New(Config{Cert: "/nonexistent/cert.pem", Key: "/nonexistent/key.pem", DataDir: dir, Hostname: "x"}); err == nil {
		t.Fatal("missing configured files accepted")
	}
}

// TestChoice: of two certificates for one name the one expiring last is
// served, an exact name wins over a wildcard, and the certificates expiring
// within WarnBefore are the front page's warnings.
func TestChoice(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	write := func(base string, notAfter time.Time, names ...string) (Files, tls.Certificate) {
		c, _ := testutil.NewCertUntil(t, notAfter, names...)
		f := Files{Cert: filepath.Join(dir, base+".crt"), Key: filepath.Join(dir, base+".key")}
		testutil.WriteCert(t, c, f.Cert, f.Key)
		return f, c
	}
	defFiles, def := write("default", now.Add(90*24*time.Hour), "smtp.forpsi.test")
	oldFiles, _ := write("old", now.Add(3*24*time.Hour), "smtp.firma.test")
	newFiles, renewed := write("new", now.Add(80*24*time.Hour), "smtp.firma.test")
	wildFiles, wild := write("wild", now.Add(70*24*time.Hour), "*.firma.test")
	s, err := New(Config{Cert: defFiles.Cert, Key: defFiles.Key, More: []Files{oldFiles, newFiles, wildFiles}, DataDir: dir, Hostname: "x"})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s)
	for sni, want := range map[string]tls.Certificate{
		"":                 def,
		"smtp.firma.test":  renewed,
		"smtp.firma.test.": renewed,
		"mail.firma.test":  wild,
		"firma.test":       def,
		"smtp.forpsi.test": def,
	} {
		if got := served(t, addr, sni); !got.Equal(want.Leaf) {
			t.Errorf("SNI %q: got %v, want %v", sni, got.DNSNames, want.Leaf.DNSNames)
		}
	}
	w := s.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "smtp.firma.test") || !strings.Contains(w[0], oldFiles.Cert) {
		t.Errorf("warnings %q, want one of %s", w, oldFiles.Cert)
	}
}

// FuzzParsePair: whatever the files hold, loading them returns a
// certificate with its parsed leaf or an error naming a file, never a
// panic.
func FuzzParsePair(f *testing.F) {
	c, _ := testutil.NewCert(f, "smtp.example.test")
	dir := f.TempDir()
	testutil.WriteCert(f, c, filepath.Join(dir, "c"), filepath.Join(dir, "k"))
	cert, _ := os.ReadFile(filepath.Join(dir, "c"))
	key, _ := os.ReadFile(filepath.Join(dir, "k"))
	f.Add(cert, key)
	f.Add(append(key, cert...), append(key, cert...))
	f.Add(cert, cert)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), key)
	f.Fuzz(func(t *testing.T, cert, key []byte) {
		got, err := parsePair(Files{Cert: "cert.pem", Key: "key.pem"}, cert, key)
		if err != nil {
			if !strings.Contains(err.Error(), "cert.pem") {
				t.Fatalf("error names no file: %v", err)
			}
			return
		}
		if got.Leaf == nil {
			t.Fatal("loaded without a leaf")
		}
	})
}

// TestConfigure: a configuration reload adds a certificate for a new name
// without a restart; one whose file is broken changes nothing and names
// the file.
func TestConfigure(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir, Hostname: "smtp.forpsi.test"})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s)
	def := served(t, addr, "smtp.firma.test")
	c, _ := testutil.NewCert(t, "smtp.firma.test")
	firma := Files{Cert: filepath.Join(dir, "firma.crt"), Key: filepath.Join(dir, "firma.key")}
	testutil.WriteCert(t, c, firma.Cert, firma.Key)
	broken := Files{Cert: filepath.Join(dir, "broken.crt"), Key: firma.Key}
	testutil.WriteFileAtomic(t, broken.Cert, []byte("not a certificate"))

	if err := s.Configure("", "", []Files{firma, broken}); err == nil || !strings.Contains(err.Error(), broken.Cert) {
		t.Fatalf("Configure with a broken file: %v", err)
	}
	if got := served(t, addr, "smtp.firma.test"); !got.Equal(def) {
		t.Fatal("a failed Configure changed what is served")
	}
	if err := s.Configure("", "", []Files{firma}); err != nil {
		t.Fatal(err)
	}
	if got := served(t, addr, "smtp.firma.test"); !got.Equal(c.Leaf) {
		t.Fatalf("after Configure: got %v", got.DNSNames)
	}
	if got := served(t, addr, ""); !got.Equal(def) {
		t.Fatalf("default after Configure: got %v", got.DNSNames)
	}
}
