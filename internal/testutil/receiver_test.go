package testutil

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func TestReceiverRecordsAndRefuses(t *testing.T) {
	r := NewReceiver(t, ReceiverOptions{STARTTLS: true, User: "u", Password: "p"})
	r.SetRcptError("bad@example.com", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	c, err := smtp.DialStartTLS(r.Addr, &tls.Config{RootCAs: r.Pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.org", &smtp.MailOptions{Size: 20}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bad@example.com", nil); err == nil || !strings.Contains(err.Error(), "no such user") {
		t.Errorf("RCPT bad: %v, want 550 no such user", err)
	}
	if err := c.Rcpt("good@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	msgs := r.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages recorded, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "a@example.org" || len(m.Rcpts) != 1 || m.Rcpts[0] != "good@example.com" ||
		!m.TLS || m.AuthUser != "u" || m.Size != 20 || string(m.Data) != "Subject: x\r\n\r\nbody\r\n" {
		t.Errorf("recorded %+v", m)
	}
}
