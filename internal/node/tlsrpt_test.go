package node

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"slices"
	"strconv"
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

// A restart keeps the TLS state (RFC 8461 §5.1, RFC 8460): the MTA-STS
// policy kept in the node's store is in force after it, so with the
// domain's _mta-sts record gone and its MX record naming another host,
// mail to the domain is deferred rather than sent in clear; and the
// results counted before the restart are in the day's report after it,
// which is sent once.
func TestTLSStateSurvivesRestart(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	_, port, _ := net.SplitHostPort(rcv.Addr)
	dns := testutil.NewDNSServer(t)
	// example.test's mail goes to a host outside its policy; its reports
	// to reports.test.
	dns.AddMX("example.test", 10, "evil.attacker.test")
	dns.AddA("evil.attacker.test", "127.0.0.1")
	dns.AddMX("reports.test", 10, "mx.reports.test")
	dns.AddA("mx.reports.test", "127.0.0.1")
	dns.AddTXT("_smtp._tls.example.test", "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test")
	cfg := testConfig(t, "")
	cfg.Delivery.Smarthost, cfg.Delivery.Resolver = "", dns.Addr
	cfg.Delivery.Port, _ = strconv.Atoi(port)
	ctx := context.Background()
	policy := tlspolicy.Policy{Mode: tlspolicy.ModeEnforce, MaxAge: 7 * 24 * time.Hour, MX: []string{"mx.example.test"}}

	n, stop := runNode(t, cfg, func(t *testing.T, n *Node) {
		addJan(t, n)
		// The policy the node fetched before the restart.
		st, err := tlspolicy.NewSQLiteStore(ctx, n.DB)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if err := st.SavePolicies(ctx, []tlspolicy.StoredPolicy{{Domain: "example.test", ID: "1", Policy: policy,
			Fetched: now.Add(-time.Hour), Expires: now.Add(7*24*time.Hour - time.Hour)}}, now, 10); err != nil {
			t.Fatal(err)
		}
	})
	for range 2 {
		n.TLSResults.Add(time.Now(), tlspolicy.Session{Domain: "example.test", Kind: tlspolicy.MTASTS, MXHost: "mx.example.test",
			Applied: tlspolicy.STSApplied(&policy)})
	}
	n.TLSResults.Add(time.Now(), tlspolicy.Session{Domain: "example.test", Kind: tlspolicy.MTASTS, Result: tlspolicy.ResultSTSPolicyFetchError})
	stop()

	n, stop = runNode(t, cfg, nil)
	t.Cleanup(stop)
	if got := n.STSCache.Len(); got != 1 {
		t.Fatalf("%d MTA-STS policies after the restart, want 1", got)
	}
	c := loginJan(t, n)
	send(t, c)
	c.Quit()
	testutil.WaitFor(t, 20*time.Second, "the message deferred", func() bool { return n.Queue.Stats().Deferred >= 1 })
	if got := rcv.Messages(); len(got) != 0 {
		t.Fatalf("the host outside the policy got %d messages", len(got))
	}

	rp := n.tlsReporter()
	rp.Now = func() time.Time { return time.Now().Add(24 * time.Hour) }
	if sent, err := rp.Send(ctx); sent != 1 || err != nil {
		t.Fatalf("Send: %d, %v", sent, err)
	}
	testutil.WaitFor(t, 20*time.Second, "the report delivered", func() bool { return len(rcv.Messages()) == 1 })
	rep := decodeReport(t, rcv.Messages()[0].Data)
	// Before the restart: a failed fetch, and 2 sessions under the
	// policy; after it, the host outside the policy kept in the store.
	var got []string
	for _, p := range rep.Policies {
		got = append(got, fmt.Sprintf("%s %q %q %d/%d %+v", p.Policy.Type, p.Policy.String, p.Policy.MXHost, p.Summary.Success, p.Summary.Failure, p.FailureDetails))
	}
	want := []string{
		`sts [] [] 0/1 [{ResultType:sts-policy-fetch-error MXHost: ReceivingIP: Count:1}]`,
		`sts ["version: STSv1" "mode: enforce" "mx: mx.example.test" "max_age: 604800"] ["mx.example.test"] 2/1 [{ResultType:validation-failure MXHost:evil.attacker.test ReceivingIP: Count:1}]`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("report\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if sent, err := rp.Send(ctx); sent != 0 || err != nil {
		t.Errorf("sent again: %d, %v", sent, err)
	}
}

// decodeReport returns the JSON report in a TLS report mail.
func decodeReport(t *testing.T, data []byte) tlspolicy.Report {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	_, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no application/tlsrpt+gzip part: %v", err)
		}
		if part.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, part))
		if err != nil {
			t.Fatal(err)
		}
		var rep tlspolicy.Report
		if err := json.NewDecoder(zr).Decode(&rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
}
