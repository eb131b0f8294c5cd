package admin

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/delivery"
	"submitd/internal/testutil"
)

// backoffQueue is the world's queue with a sender's back-off, as the
// running queue has it.
type backoffQueue struct {
	Queue
	mx *delivery.MX
}

func (q backoffQueue) Backoffs() []delivery.Backoff { return q.mx.Backoffs() }

// The queue page lists the MX hosts in back-off and the reply that asked
// for it; without any, it shows no such section.
func TestWebQueueBackoff(t *testing.T) {
	w := newWorld(t)
	dns := testutil.NewDNSServer(t)
	rx := testutil.NewReceiver(t, testutil.ReceiverOptions{
		RcptHook: func(string, int) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "unusual rate of mail"}
		},
	})
	dns.AddMX("example.org", 10, "mx.example.org")
	dns.AddA("mx.example.org", "127.0.0.1")
	mx := delivery.NewMX(delivery.MXConfig{
		SessionConfig: delivery.SessionConfig{Hostname: "mail.test", ConnectTimeout: 5 * time.Second, Timeout: 10 * time.Second},
		Resolver:      &delivery.Resolver{Addr: dns.Addr, Timeout: 2 * time.Second}, Port: rx.Port,
	})
	t.Cleanup(mx.CloseIdle)
	w.srv.cfg.Queue = backoffQueue{Queue: w.srv.cfg.Queue, mx: mx}
	b := w.webClient()
	b.login("petra")
	if p := b.get("/queue"); strings.Contains(p.body, "Destinations in back-off") {
		t.Fatal("back-off section shown with no host in back-off")
	}
	m := &delivery.Message{From: "jan@firma.cz", Rcpts: []string{"eva@example.org"}, Domain: "example.org", Size: 9,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("Subject: x\r\n\r\nhi\r\n")), nil }}
	if r := mx.Deliver(context.Background(), m)[0]; r.Status != delivery.Temporary {
		t.Fatalf("delivery: %v %q, want deferred", r.Status, r.Reply)
	}
	p := b.get("/queue")
	contains(t, p, "Destinations in back-off", "<td>mx.example.org</td>", "421 4.7.28 unusual rate of mail", `href="/queue/`+w.qid+`"`)

	// The API lists the same, to support staff; a queued message's id is
	// not taken for the path.
	r := w.do("GET", "/api/v1/queue/backoffs", "", RoleSupport)
	if r.status != 200 {
		t.Fatalf("GET /api/v1/queue/backoffs: %d %s", r.status, r.raw)
	}
	items, _ := r.body["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("back-offs %s, want mx.example.org", r.raw)
	}
	it := items[0].(map[string]any)
	if it["host"] != "mx.example.org" || !strings.HasPrefix(it["reason"].(string), "421 4.7.28 unusual rate of mail") ||
		it["level"] != 1.0 || it["max_connections"].(float64) < 1 || it["paused_until"] == it["since"] {
		t.Fatalf("back-off %s", r.raw)
	}
	if r := w.do("GET", "/api/v1/queue/backoffs", "", ""); r.status != 401 {
		t.Fatalf("without a token: %d", r.status)
	}
}
