package node

import (
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// TestACME: a node with [acme] obtains its certificate from a real ACME
// server (Pebble) at start, answering the challenge on [acme] listen, and
// serves it on 587 and 465, for its name and to clients that ask for none;
// it renews it while running when a third of its lifetime is left.
func TestACME(t *testing.T) {
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			const name = "smtp.acme.test"
			dns := testutil.NewDNSServer(t)
			dns.AddA(name, "127.0.0.1")
			port := testutil.FreePort(t, "127.0.0.1")
			opts := testutil.PebbleOptions{DNS: dns.Addr, Validity: 30 * time.Second}
			if challenge == "http-01" {
				opts.HTTPPort = port
			} else {
				opts.TLSPort = port
			}
			pb := testutil.StartPebble(t, opts)

			rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
			cfg := testConfig(t, rcv.Addr)
			cfg.Hostname = name
			cfg.ACME.Enabled = true
			cfg.ACME.Directory = pb.Directory
			cfg.ACME.CARoots = pb.Roots
			cfg.ACME.Challenge = challenge
			cfg.ACME.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			cfg.ACME.Email = "postmaster@acme.test"
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			n := startNode(t, cfg)
			roots := pb.Root(t)

			// The certificate verifies against the CA's root, for the name.
			var first *x509.Certificate
			testutil.WaitFor(t, time.Minute, "the ACME certificate on 465", func() bool {
				c, err := dialTLS(n.Addr("submissions"), name, roots)
				first = c
				return err == nil
			})
			startTLS(t, n.Addr("submission"), name, roots)
			if got := implicitTLS(t, n.Addr("submissions"), "", nil); !got.Equal(first) {
				t.Errorf("without SNI: got %s, want the ACME certificate %s", serial(got), serial(first))
			}
			m, _ := scrape(t, n)
			series := fmt.Sprintf("submitd_tls_certificate_expiry_timestamp_seconds{name=%q}", name)
			if m[series] != float64(first.NotAfter.Unix()) {
				t.Errorf("%s = %v, want %d", series, m[series], first.NotAfter.Unix())
			}

			// Renewed when a third of its 30 seconds is left.
			testutil.WaitFor(t, time.Minute, "a renewed certificate", func() bool {
				return !implicitTLS(t, n.Addr("submissions"), name, nil).Equal(first)
			})
			renewed := startTLS(t, n.Addr("submission"), name, roots)
			if !renewed.NotAfter.After(first.NotAfter) {
				t.Errorf("renewed certificate expires %s, the first %s", renewed.NotAfter, first.NotAfter)
			}
			if after, _ := scrape(t, n); after["submitd_tls_acme_renewals_total"] < 2 || after["submitd_tls_acme_errors_total"] != 0 {
				t.Errorf("renewals %v, errors %v", after["submitd_tls_acme_renewals_total"], after["submitd_tls_acme_errors_total"])
			}
		})
	}
}
