package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestGenerateThenReuse(t *testing.T) {
	dir := t.TempDir()
	c1, gen, err := Load("", "", dir, "mail.example.cz")
	if err != nil || !gen {
		t.Fatalf("first Load: generated=%v err=%v", gen, err)
	}
	leaf, err := x509.ParseCertificate(c1.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("mail.example.cz"); err != nil {
		t.Fatalf("certificate does not name the host: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "tls", "key.pem")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	c2, gen, err := Load("", "", dir, "mail.example.cz")
	if err != nil || gen {
		t.Fatalf("second Load: generated=%v err=%v", gen, err)
	}
	if string(c2.Certificates[0].Certificate[0]) != string(c1.Certificates[0].Certificate[0]) {
		t.Fatal("certificate regenerated on restart")
	}
	// A configured pair is used as it is.
	c3, gen, err := Load(filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem"), t.TempDir(), "x")
	if err != nil || gen || string(c3.Certificates[0].Certificate[0]) != string(c1.Certificates[0].Certificate[0]) {
		t.Fatalf("configured pair: generated=%v err=%v", gen, err)
	}
	if _, _, err := Load("/nonexistent/cert.pem", "/nonexistent/key.pem", dir, "x"); err == nil {
		t.Fatal("missing configured files accepted")
	}
}
