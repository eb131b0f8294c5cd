package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
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
