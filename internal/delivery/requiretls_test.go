package delivery

import (
	"context"
	"strings"
	"testing"

	"submitd/internal/testutil"
)

// RFC 8689: a REQUIRETLS message goes only over TLS that DANE (or
// MTA-STS) validates, to a next hop offering REQUIRETLS, and the parameter
// goes on; otherwise it is returned with the codes of §6. "TLS-Required:
// No" sets the domain's policy aside, unless REQUIRETLS is given too.
func TestRequireTLS(t *testing.T) {
	self, _ := testutil.NewCert(t, "mx.example.test")
	other, _ := testutil.NewCert(t, "mx.example.test")
	withReq := func(o testutil.ReceiverOptions) testutil.ReceiverOptions { o.REQUIRETLS = true; return o }
	for _, tc := range []struct {
		name                    string
		opts                    testutil.ReceiverOptions
		dane                    bool
		requireTLS, tlsOptional bool
		// want is "" for delivered, else the status and the start of
		// the reason, and code the DSN code of a permanent failure.
		want   Status
		reason string
		code   string
	}{
		{name: "DANE-validated, REQUIRETLS offered", opts: withReq(starttls(self)), dane: true, requireTLS: true, want: Delivered, reason: "250"},
		{name: "DANE-validated, REQUIRETLS not offered", opts: starttls(self), dane: true, requireTLS: true,
			want: Permanent, reason: "REQUIRETLS: the server does not offer REQUIRETLS", code: "5.7.30"},
		{name: "no policy validates TLS", opts: withReq(starttls(self)), requireTLS: true,
			want: Permanent, reason: "REQUIRETLS: no DANE or MTA-STS policy validates TLS", code: "5.7.10"},
		{name: "DANE fails: retried", opts: withReq(starttls(other)), dane: true, requireTLS: true,
			want: Temporary, reason: "TLS handshake: DANE: mx.example.test: no TLSA record matches"},
		{name: "TLS-Required: No sets DANE aside", opts: starttls(other), dane: true, tlsOptional: true, want: Delivered, reason: "250"},
		{name: "REQUIRETLS overrides TLS-Required: No", opts: withReq(starttls(other)), dane: true, requireTLS: true, tlsOptional: true,
			want: Temporary, reason: "TLS handshake: DANE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := daneWorld(t, tc.opts)
			if tc.dane {
				w.dns.Add(t, tlsa("_25._tcp.mx.example.test.", 3, self.Leaf))
			}
			x, _ := w.policyMX(nil, 0)
			m := msg("example.test", "x@example.test")
			m.RequireTLS, m.TLSOptional = tc.requireTLS, tc.tlsOptional
			res := x.Deliver(context.Background(), m)
			check(t, res, "x@example.test", tc.want, tc.reason)
			if res[0].Code != tc.code {
				t.Errorf("code %q, want %q", res[0].Code, tc.code)
			}
			got := w.rx["127.0.0.2"].Messages()
			if tc.want != Delivered {
				if len(got) != 0 {
					t.Errorf("receiver got %d messages", len(got))
				}
				return
			}
			if len(got) != 1 || got[0].RequireTLS != tc.requireTLS || !got[0].TLS {
				t.Errorf("received %+v", got)
			}
		})
	}
}

// A REQUIRETLS message never goes to a smarthost without TLS, even one
// offering REQUIRETLS.
func TestRequireTLSSmarthostWithoutTLS(t *testing.T) {
	rx := testutil.NewReceiver(t, testutil.ReceiverOptions{REQUIRETLS: true})
	s := smarthost(t, rx, "none", "", "")
	m := msg("example.test", "x@example.test")
	m.RequireTLS = true
	res := s.Deliver(context.Background(), m)
	if res[0].Status == Delivered || len(rx.Messages()) != 0 {
		t.Fatalf("REQUIRETLS message sent in clear: %+v", res)
	}
	if !strings.Contains(res[0].Reply, "REQUIRETLS") {
		t.Errorf("reply %q does not say why", res[0].Reply)
	}
}
