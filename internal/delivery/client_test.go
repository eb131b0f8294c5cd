package delivery

import (
	"context"
	"testing"
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
