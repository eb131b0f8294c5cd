package testutil

import (
	"crypto/tls"
	"errors"
	"strings"
	"sync"
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

// TestReceiverDataHook: the hook sees the message and decides the reply to
// the final dot; a refused message is not recorded.
func TestReceiverDataHook(t *testing.T) {
	var mu sync.Mutex
	var seen []Received
	r := NewReceiver(t, ReceiverOptions{DataHook: func(m Received) *smtp.SMTPError {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, m)
		if strings.Contains(string(m.Data), "refuse me") {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
		}
		return nil
	}})
	send := func(body string) error {
		c, err := smtp.Dial(r.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Mail("a@example.org", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("b@example.com", nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
		return w.Close()
	}
	if err := send("Subject: 1\r\n\r\nrefuse me\r\n"); err == nil || !strings.Contains(err.Error(), "not now") {
		t.Errorf("refused message: %v, want 451 not now", err)
	}
	if err := send("Subject: 2\r\n\r\nkeep me\r\n"); err != nil {
		t.Errorf("accepted message: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0].From != "a@example.org" || len(seen[1].Rcpts) != 1 || seen[1].Rcpts[0] != "b@example.com" {
		t.Errorf("hook saw %+v", seen)
	}
	if msgs := r.Messages(); len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "keep me") {
		t.Errorf("recorded %+v, want only the accepted message", msgs)
	}
}

// TestReceiverMaxRcpts: past MaxRcpts accepted recipients a transaction gets
// 452 4.5.3, and the next transaction on the same connection starts afresh.
func TestReceiverMaxRcpts(t *testing.T) {
	r := NewReceiver(t, ReceiverOptions{MaxRcpts: 2})
	c, err := smtp.Dial(r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(rcpts ...string) (refused []string) {
		if err := c.Mail("a@example.org", nil); err != nil {
			t.Fatal(err)
		}
		for _, to := range rcpts {
			err := c.Rcpt(to, nil)
			var se *smtp.SMTPError
			switch {
			case err == nil:
			case errors.As(err, &se) && se.Code == 452 && se.EnhancedCode == smtp.EnhancedCode{4, 5, 3}:
				refused = append(refused, to)
			default:
				t.Fatalf("RCPT %s: %v, want 250 or 452 4.5.3", to, err)
			}
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return refused
	}
	if got := send("a@x.test", "b@x.test", "c@x.test"); len(got) != 1 || got[0] != "c@x.test" {
		t.Errorf("first transaction refused %v, want [c@x.test]", got)
	}
	if got := send("c@x.test"); len(got) != 0 {
		t.Errorf("second transaction refused %v, want none", got)
	}
	msgs := r.Messages()
	if len(msgs) != 2 || len(msgs[0].Rcpts) != 2 || len(msgs[1].Rcpts) != 1 || msgs[1].Rcpts[0] != "c@x.test" {
		t.Errorf("recorded %+v", msgs)
	}
	if n := r.Connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}
