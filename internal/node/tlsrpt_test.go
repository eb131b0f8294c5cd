package node

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
	"submitd/internal/tlspolicy"
)

// A finished day's TLS results go through the queue, as a mail from the
// null sender, to the address in the domain's _smtp._tls record.
func TestTLSReportMailed(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	dns := testutil.NewDNSServer(t)
	dns.AddTXT("_smtp._tls.example.test", "v=TLSRPTv1; rua=mailto:tlsrpt@example.test")
	cfg := testConfig(t, rcv.Addr)
	cfg.Delivery.Resolver = dns.Addr
	n := startNode(t, cfg)
	n.TLSResults.Add(time.Now().Add(-24*time.Hour), tlspolicy.Session{Domain: "example.test", Kind: tlspolicy.MTASTS, MXHost: "mx.example.test"})
	if sent, err := n.tlsReporter().Send(context.Background()); sent != 1 || err != nil {
		t.Fatalf("Send: %d, %v", sent, err)
	}
	testutil.WaitFor(t, 10*time.Second, "the report delivered", func() bool { return len(rcv.Messages()) == 1 })
	m := rcv.Messages()[0]
	if m.From != "" || strings.Join(m.Rcpts, ",") != "tlsrpt@example.test" ||
		!bytes.Contains(m.Data, []byte("TLS-Report-Domain: example.test\r\n")) || !bytes.Contains(m.Data, []byte("application/tlsrpt+gzip")) {
		t.Errorf("report from %q to %v:\n%.600s", m.From, m.Rcpts, m.Data)
	}
}
