package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// serveTLS serves handshakes with s's certificates on a loopback port and
// returns its address.
func serveTLS(t *testing.T, s *Set) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// served makes a handshake for name and returns the server's certificate.
func served(t *testing.T, addr, name string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestACMERenewalFails: while the CA is unreachable a due renewal fails;
// the certificate in use stays, the failure is logged and counted, and it
// is tried again until the CA is back. A new start reads the certificate
// from the cache instead of ordering one.
func TestACMERenewalFails(t *testing.T) {
	const name = "mail.acme.test"
	dns := testutil.NewDNSServer(t)
	dns.AddA(name, "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pb := testutil.StartPebble(t, testutil.PebbleOptions{DNS: dns.Addr, TLSPort: ln.Addr().(*net.TCPAddr).Port, Validity: 30 * time.Second})
	log := &testutil.SyncBuffer{}
	cfg := Config{
		DataDir: t.TempDir(), Hostname: name, Log: slog.New(slog.NewTextHandler(log, nil)),
		ACME: &ACMEConfig{
			Directory: pb.Directory, Names: []string{name}, Challenge: "tls-alpn-01",
			CacheDir: t.TempDir(), CARoots: pb.Roots, RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
		},
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeACME(ln)
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := serveTLS(t, s)

	roots := pb.Root(t)
	var first *x509.Certificate
	testutil.WaitFor(t, time.Minute, "a certificate from the CA", func() bool {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
		if err != nil {
			return false
		}
		defer c.Close()
		first = c.ConnectionState().PeerCertificates[0]
		return true
	})
	if s.Stats().ACMERenewals != 1 {
		t.Fatalf("renewals %d after the first certificate", s.Stats().ACMERenewals)
	}

	// A new start reads the certificate from the cache at once.
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := served(t, serveTLS(t, s2), name); !got.Equal(first) {
		t.Errorf("after a restart: got serial %s, want the cached %s", got.SerialNumber, first.SerialNumber)
	}

	pb.Stop()
	testutil.WaitFor(t, time.Minute, "failed renewals", func() bool { return s.Stats().ACMEErrors >= 2 })
	if got := served(t, addr, name); !got.Equal(first) {
		t.Fatalf("while the CA is away: got serial %s, want the one in use %s", got.SerialNumber, first.SerialNumber)
	}
	if st := s.Stats(); st.ACMEFailing != 1 {
		t.Errorf("failing names %d while the CA is away, want 1", st.ACMEFailing)
	}
	if !strings.Contains(log.String(), "level=ERROR msg=\"acme: certificate not obtained") || !strings.Contains(log.String(), "name="+name) {
		t.Errorf("no error logged for the failed renewal:\n%s", log.String())
	}
	if err := pb.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the renewal once the CA is back", func() bool {
		return !served(t, addr, name).Equal(first)
	})
	if st := s.Stats(); st.ACMERenewals != 2 || st.ACMEFailing != 0 {
		t.Errorf("renewals %d, failing names %d; want 2 and 0", st.ACMERenewals, st.ACMEFailing)
	}
}
