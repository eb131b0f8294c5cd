package delivery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// An internationalized domain has an ASCII form (its A-labels, RFC 5890), so
// an address whose local part is ASCII goes to any server, SMTPUTF8 or not:
// SMTPUTF8 is needed only for a UTF-8 local part (RFC 6531 §3.2). The result
// still names the recipient as the queue gave it.
func TestIDNDomainsSentAsALabels(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.2")
	w.dns.AddMX("xn--pklad-zsa96e.test", 10, "mx.xn--pklad-zsa96e.test")
	w.dns.AddA("mx.xn--pklad-zsa96e.test", "127.0.0.2")
	m := msg("xn--pklad-zsa96e.test", "jan@příklad.test", "eva@xn--pklad-zsa96e.test")
	m.From = "info@odesílatel.test"
	res := w.mx(nil).Deliver(context.Background(), m)
	check(t, res, "jan@příklad.test", Delivered, "250")
	check(t, res, "eva@xn--pklad-zsa96e.test", Delivered, "250")
	got := w.rx["127.0.0.2"].Messages()
	if len(got) != 1 {
		t.Fatalf("receiver got %d messages, want 1", len(got))
	}
	if got[0].From != "info@xn--odeslatel-j5a.test" {
		t.Errorf("MAIL FROM:<%s>, want the A-label form info@xn--odeslatel-j5a.test", got[0].From)
	}
	if len(got[0].Rcpts) != 2 || got[0].Rcpts[0] != "jan@xn--pklad-zsa96e.test" || got[0].Rcpts[1] != "eva@xn--pklad-zsa96e.test" {
		t.Errorf("RCPT TO %q, want both in A-label form", got[0].Rcpts)
	}
}

// Cancelling a session that runs inside STARTTLS ends it at once. (Under
// -race this also checks that the cancellation does not read the connection
// field the STARTTLS upgrade replaced.)
func TestCancelInsideSTARTTLS(t *testing.T) {
	inData := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {
		STARTTLS: true,
		DataHook: func(testutil.Received) *smtp.SMTPError {
			close(inData)
			<-release
			return nil
		},
	}}, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-inData
		cancel()
	}()
	// Without the cancellation the session would wait for its hour.
	res := w.mx(func(c *MXConfig) { c.Timeout = time.Hour }).Deliver(ctx, msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Temporary, "no reply after the end of DATA")
}

// The cap on addresses per attempt does not keep a backup MX from being
// tried: a first MX with many dead addresses must not use it all up.
func TestBackupMXTriedDespiteAddressCap(t *testing.T) {
	w := newWorld(t, nil, "127.0.0.3")
	w.dns.AddMX("example.test", 10, "mx1.example.test")
	w.dns.AddMX("example.test", 20, "mx2.example.test")
	var dead []string
	for i := 0; i < MaxAddresses+2; i++ {
		dead = append(dead, fmt.Sprintf("127.0.1.%d", i+1)) // nothing listens there
	}
	w.dns.AddA("mx1.example.test", dead...)
	w.dns.AddA("mx2.example.test", "127.0.0.3")
	res := w.mx(nil).Deliver(context.Background(), msg("example.test", "x@example.test"))
	check(t, res, "x@example.test", Delivered, "250")
}
