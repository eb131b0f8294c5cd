package delivery

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
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

// mailOpts is an SMTP server that records the MAIL FROM parameters of each
// transaction; go-smtp offers 8BITMIME always and SMTPUTF8 when asked to.
type mailOpts struct {
	mu   sync.Mutex
	seen []smtp.MailOptions
}

func (m *mailOpts) NewSession(*smtp.Conn) (smtp.Session, error) { return m, nil }
func (m *mailOpts) Mail(_ string, o *smtp.MailOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen = append(m.seen, *o)
	return nil
}
func (m *mailOpts) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (m *mailOpts) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (m *mailOpts) Reset()        {}
func (m *mailOpts) Logout() error { return nil }

// 8-bit content is announced with BODY=8BITMIME (RFC 6152 §3) and UTF-8 in
// the header section with SMTPUTF8 (RFC 6531 §3.4) when the server offers
// them; plain ASCII mail carries neither.
func TestBodyAndSMTPUTF8Parameters(t *testing.T) {
	rec := &mailOpts{}
	srv := smtp.NewServer(rec)
	srv.Domain = "receiver.test"
	srv.EnableSMTPUTF8 = true
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	w := newWorld(t, nil)
	w.port = ln.Addr().(*net.TCPAddr).Port
	w.dns.AddA("example.test", "127.0.0.2")

	cases := []struct {
		name, content string
		body          smtp.BodyType
		utf8          bool
	}{
		{"ascii", "From: a@sender.test\r\nSubject: hi\r\n\r\nhello\r\n", "", false},
		{"8-bit body", "From: a@sender.test\r\nSubject: hi\r\n\r\nDobr\xc3\xbd den\r\n", smtp.Body8BitMIME, false},
		{"UTF-8 header", "From: a@sender.test\r\nSubject: P\xc5\x99\xc3\xadklad\r\n\r\nhello\r\n", smtp.Body8BitMIME, true},
		{"8-bit far into the body", "From: a@sender.test\r\n\r\n" + strings.Repeat("ascii line\r\n", 10000) + "\xc3\xbd\r\n", smtp.Body8BitMIME, false},
	}
	i := 0
	for _, inMemory := range []bool{false, true} {
		for _, c := range cases {
			m := msg("example.test", "x@example.test")
			m.Size = int64(len(c.content))
			m.Open = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(c.content)), nil }
			if inMemory {
				m.Data, m.Open = []byte(c.content), nil
			}
			check(t, w.mx(nil).Deliver(context.Background(), m), "x@example.test", Delivered, "250")
			rec.mu.Lock()
			got := rec.seen[i]
			rec.mu.Unlock()
			i++
			if got.Body != c.body || got.UTF8 != c.utf8 {
				t.Errorf("%s (in memory %v): MAIL FROM had BODY=%q SMTPUTF8=%v, want BODY=%q SMTPUTF8=%v", c.name, inMemory, got.Body, got.UTF8, c.body, c.utf8)
			}
		}
	}
}
