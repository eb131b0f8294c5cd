package delivery

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

func smarthost(t *testing.T, rx *testutil.Receiver, mode, user, pass string) *Smarthost {
	t.Helper()
	s, err := NewSmarthost(SmarthostConfig{
		Addr: rx.Addr, TLS: mode, User: user, Password: pass,
		SessionConfig: SessionConfig{Hostname: "submit.sender.test",
			RootCAs: rx.Pool, ConnectTimeout: 5 * time.Second, Timeout: 20 * time.Second,
			Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSmarthostModes(t *testing.T) {
	cases := []struct {
		name     string
		opts     testutil.ReceiverOptions
		mode     string
		wantTLS  bool
		wantUser string
	}{
		{"starttls with AUTH PLAIN", testutil.ReceiverOptions{STARTTLS: true, CertHosts: []string{"127.0.0.1"}, User: "relay", Password: "s3cret"}, "starttls", true, "relay"},
		{"implicit TLS with AUTH PLAIN", testutil.ReceiverOptions{ImplicitTLS: true, CertHosts: []string{"127.0.0.1"}, User: "relay", Password: "s3cret"}, "implicit", true, "relay"},
		{"none, AUTH over loopback", testutil.ReceiverOptions{User: "relay", Password: "s3cret", AllowInsecureAuth: true}, "none", false, "relay"},
		{"none without AUTH", testutil.ReceiverOptions{}, "none", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rx := testutil.NewReceiver(t, c.opts)
			pass := ""
			if c.wantUser != "" {
				pass = "s3cret"
			}
			s := smarthost(t, rx, c.mode, c.wantUser, pass)
			// Recipients of any domain go to the smarthost; no DNS is asked.
			res := s.Deliver(context.Background(), msg("faraway.example", "x@faraway.example", "y@faraway.example"))
			check(t, res, "x@faraway.example", Delivered, "250")
			check(t, res, "y@faraway.example", Delivered, "250")
			m := rx.Messages()
			if len(m) != 1 || len(m[0].Rcpts) != 2 {
				t.Fatalf("smarthost got %+v, want one message for both recipients", m)
			}
			if m[0].TLS != c.wantTLS || m[0].AuthUser != c.wantUser || string(m[0].Data) != testMsg {
				t.Errorf("got TLS=%v user=%q data %q; want TLS=%v user=%q", m[0].TLS, m[0].AuthUser, m[0].Data, c.wantTLS, c.wantUser)
			}
			// A message for another domain goes over the same session,
			// inside its TLS and its AUTH, without a new connection.
			sessions := rx.Connections()
			check(t, s.Deliver(context.Background(), msg("elsewhere.example", "z@elsewhere.example")), "z@elsewhere.example", Delivered, "250")
			m = rx.Messages()
			if len(m) != 2 || m[1].TLS != c.wantTLS || m[1].AuthUser != c.wantUser {
				t.Fatalf("second message: %+v", m)
			}
			if n := rx.Connections(); n != sessions {
				t.Errorf("%d sessions after the second message, want %d: the connection is reused", n, sessions)
			}
		})
	}
}

func TestSmarthostRefusals(t *testing.T) {
	t.Run("wrong password defers", func(t *testing.T) {
		rx := testutil.NewReceiver(t, testutil.ReceiverOptions{STARTTLS: true, CertHosts: []string{"127.0.0.1"}, User: "relay", Password: "s3cret"})
		res := smarthost(t, rx, "starttls", "relay", "wrong").Deliver(context.Background(), msg("x.example", "x@x.example"))
		check(t, res, "x@x.example", Temporary, "535 5.7.8 authentication failed")
	})
	t.Run("starttls required but not offered", func(t *testing.T) {
		rx := testutil.NewReceiver(t, testutil.ReceiverOptions{})
		res := smarthost(t, rx, "starttls", "", "").Deliver(context.Background(), msg("x.example", "x@x.example"))
		check(t, res, "x@x.example", Temporary, "TLS required but the server does not offer STARTTLS")
		if n := len(rx.Messages()); n != 0 {
			t.Errorf("%d messages sent in clear text", n)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		rx := testutil.NewReceiver(t, testutil.ReceiverOptions{STARTTLS: true, CertHosts: []string{"127.0.0.1"}})
		s, err := NewSmarthost(SmarthostConfig{Addr: rx.Addr, TLS: "starttls"})
		if err != nil {
			t.Fatal(err)
		}
		res := s.Deliver(context.Background(), msg("x.example", "x@x.example"))
		check(t, res, "x@x.example", Temporary, "TLS handshake")
	})
	t.Run("password never in clear text to a non-loopback host", func(t *testing.T) {
		// The smarthost is named by a non-loopback address and reached
		// through an injected dialer; the password must not go out.
		rx := testutil.NewReceiver(t, testutil.ReceiverOptions{User: "relay", Password: "s3cret", AllowInsecureAuth: true})
		s, err := NewSmarthost(SmarthostConfig{Addr: "192.0.2.1:25", TLS: "none", User: "relay", Password: "s3cret",
			SessionConfig: SessionConfig{Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, rx.Addr)
			}}})
		if err != nil {
			t.Fatal(err)
		}
		res := s.Deliver(context.Background(), msg("x.example", "x@x.example"))
		check(t, res, "x@x.example", Temporary, "refusing to send the password without TLS")
		if n := rx.Connections(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
		if n := len(rx.Messages()); n != 0 {
			t.Errorf("%d messages sent", n)
		}
	})
	t.Run("per-recipient and 5xx replies pass through", func(t *testing.T) {
		rx := testutil.NewReceiver(t, testutil.ReceiverOptions{})
		rx.SetRcptError("bad@x.example", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
		res := smarthost(t, rx, "none", "", "").Deliver(context.Background(), msg("x.example", "bad@x.example", "ok@x.example"))
		check(t, res, "bad@x.example", Permanent, "550 5.1.1 no such user")
		check(t, res, "ok@x.example", Delivered, "250")
	})
	t.Run("bad settings", func(t *testing.T) {
		for _, c := range []SmarthostConfig{{Addr: "nohostport"}, {Addr: "h:25", TLS: "sometimes"}} {
			if _, err := NewSmarthost(c); err == nil || !strings.Contains(err.Error(), "must be") {
				t.Errorf("NewSmarthost(%+v) = %v, want an error saying what it must be", c, err)
			}
		}
	})
}
