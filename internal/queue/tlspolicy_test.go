package queue

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/testutil"
	"submitd/internal/tlspolicy"
)

// SPEC R23: mail that cannot be sent under its domain's policy is
// deferred with the reason, never sent in clear, and bounced at expiry
// with the reason. a.test publishes DNSSEC-validated TLSA records that
// its MX host's certificate does not match.
func TestTLSPolicyDeferredThenBounced(t *testing.T) {
	cert, _ := testutil.NewCert(t, "mx.a.test")
	published, _ := testutil.NewCert(t, "mx.a.test")
	opts := map[string]testutil.ReceiverOptions{"a.test": {STARTTLS: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}
	w := newWorld(t, opts, func(c *Config) {
		c.MaxAge = time.Hour
		c.RetryMax = 20 * time.Minute
	})
	w.policySender()
	sum := sha256.Sum256(published.Leaf.RawSubjectPublicKeyInfo)
	w.dns.Add(t, fmt.Sprintf("_25._tcp.mx.a.test. 300 IN TLSA 3 1 1 %x", sum))
	w.dns.SetSecure("a.test", true)
	w.dns.SetSecure("mx.a.test", true)
	w.dns.SetSecure("_25._tcp.mx.a.test", true)

	id := w.submit("jan@firma.test", "eva@a.test")
	w.run()
	r := w.state(id).Rcpts[0]
	const reason = "TLS handshake: DANE: mx.a.test: no TLSA record matches the certificate"
	if r.Status != Deferred || !strings.Contains(r.Reply, reason) {
		t.Fatalf("after the first attempt: %s %q, want deferred with %q", r.Status, r.Reply, reason)
	}
	for i := 0; i < 10 && len(w.queued()) > 0; i++ {
		due, ok := w.q.NextDue()
		if !ok {
			t.Fatal("nothing due while the message is queued")
		}
		w.clk.Set(due)
		w.run()
	}
	if n := len(w.rcv["a.test"].Messages()); n != 0 {
		t.Fatalf("a.test got %d messages against its DANE records", n)
	}
	reports := w.rcv["firma.test"].Messages()
	if len(reports) != 1 {
		t.Fatalf("sender got %d reports, want 1 at expiry", len(reports))
	}
	d := parseDSN(t, reports[0].Data)
	if h := d.rcpt(t, "eva@a.test"); h.Get("Action") != "failed" || !strings.Contains(d.human, reason) {
		t.Errorf("report: %v\n%s", h, d.human)
	}
}

// policySender makes the queue deliver under the recipient domains' TLS
// policies (SPEC R23), the test DNS server standing for the validating
// resolver too.
func (w *world) policySender() {
	res := &delivery.Resolver{Addr: w.dns.Addr, Timeout: 5 * time.Second}
	w.cfg.Sender = delivery.NewMX(delivery.MXConfig{
		SessionConfig: delivery.SessionConfig{Hostname: "submit.test", ConnectTimeout: 5 * time.Second, Timeout: 30 * time.Second},
		Resolver:      res, Port: w.port,
		Policy: tlspolicy.New(tlspolicy.Config{DNS: res, SecureDNS: res}),
	})
	w.stop()
	w.start()
}
