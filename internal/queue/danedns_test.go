package queue

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"submitd/internal/testutil"
)

// RFC 7672 §2.2: a TLSA lookup that fails (SERVFAIL, as a validating
// resolver answers for bogus data) for an MX host whose address records
// are validated makes the host unusable: the message stays queued with
// the reason, and goes out under DANE once the records can be had.
func TestTLSAServfailDeferred(t *testing.T) {
	cert, _ := testutil.NewCert(t, "mx.a.test")
	opts := map[string]testutil.ReceiverOptions{"a.test": {STARTTLS: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}
	w := newWorld(t, opts, nil)
	w.policySender()
	for _, n := range []string{"a.test", "mx.a.test", "_25._tcp.mx.a.test"} {
		w.dns.SetSecure(n, true)
	}
	w.dns.SetRcode("_25._tcp.mx.a.test", dns.RcodeServerFailure)

	id := w.submit("jan@firma.test", "eva@a.test")
	w.run()
	r := w.state(id).Rcpts[0]
	const reason = "DANE: TLSA lookup of _25._tcp.mx.a.test failed: lookup TLSA _25._tcp.mx.a.test: server"
	if r.Status != Deferred || !strings.Contains(r.Reply, reason) || !strings.Contains(r.Reply, "answered SERVFAIL") {
		t.Fatalf("after the first attempt: %s %q, want deferred with %q", r.Status, r.Reply, reason)
	}
	if n := len(w.rcv["a.test"].Messages()); n != 0 {
		t.Fatalf("a.test got %d messages while its TLSA records could not be had", n)
	}

	w.dns.SetRcode("_25._tcp.mx.a.test", dns.RcodeSuccess)
	sum := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	w.dns.Add(t, fmt.Sprintf("_25._tcp.mx.a.test. 300 IN TLSA 3 1 1 %x", sum))
	due, ok := w.q.NextDue()
	if !ok {
		t.Fatal("nothing due while the message is queued")
	}
	w.clk.Set(due)
	w.run()
	if q := w.queued(); len(q) != 0 {
		t.Errorf("%d messages still queued after the records came back", len(q))
	}
	if got := w.rcv["a.test"].Messages(); len(got) != 1 || !got[0].TLS {
		t.Errorf("a.test got %d messages (TLS %v), want 1 over TLS", len(got), len(got) > 0 && got[0].TLS)
	}
}
