package delivery

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// RFC 5321 §4.5.3.1.10: recipients refused with "452 4.5.3 too many
// recipients" go in further transactions on the same connection, right away,
// instead of waiting for the next attempt.
func TestTooManyRecipientsSplitsTransactions(t *testing.T) {
	const n = 2
	w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {MaxRcpts: n}}, "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.2")
	var rcpts []string
	for i := 0; i < 2*n+1; i++ {
		rcpts = append(rcpts, fmt.Sprintf("u%d@example.test", i))
	}
	res := w.mx(nil).Deliver(context.Background(), msg("example.test", rcpts...))
	for _, r := range rcpts {
		check(t, res, r, Delivered, "250")
	}
	rx := w.rx["127.0.0.2"]
	got := rx.Messages()
	if len(got) != 3 {
		t.Fatalf("receiver got %d transactions, want 3", len(got))
	}
	var all []string
	for i, m := range got {
		if want := min(n, len(rcpts)-i*n); len(m.Rcpts) != want {
			t.Errorf("transaction %d had %d recipients, want %d", i, len(m.Rcpts), want)
		}
		if string(m.Data) != testMsg {
			t.Errorf("transaction %d carried %q", i, m.Data)
		}
		all = append(all, m.Rcpts...)
	}
	if strings.Join(all, " ") != strings.Join(rcpts, " ") {
		t.Errorf("recipients over the transactions %v, want each of %v once", all, rcpts)
	}
	if c := rx.Connections(); c != 1 {
		t.Errorf("%d connections, want 1", c)
	}
}

// A server that answers "too many recipients" to the first recipient of a
// transaction makes no progress: the recipients are deferred with its reply
// after one transaction, not retried in a loop. Other 452 replies (mailbox
// full) stay per-recipient temporary failures and start no new transaction.
func TestTooManyRecipientsWithoutProgressDefers(t *testing.T) {
	full := &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	w := newWorld(t, map[string]testutil.ReceiverOptions{
		"127.0.0.2": {RcptHook: func(string, int) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "too many recipients"}
		}},
		"127.0.0.3": {},
	}, "127.0.0.2", "127.0.0.3")
	w.dns.AddA("stuck.test", "127.0.0.2")
	w.dns.AddA("example.test", "127.0.0.3")
	w.rx["127.0.0.3"].SetRcptError("full@example.test", full)

	res := w.mx(nil).Deliver(context.Background(), msg("stuck.test", "a@stuck.test", "b@stuck.test"))
	check(t, res, "a@stuck.test", Temporary, "452 4.5.3 too many recipients")
	check(t, res, "b@stuck.test", Temporary, "452 4.5.3 too many recipients")
	if c := w.rx["127.0.0.2"].Connections(); c != 1 {
		t.Errorf("%d connections, want 1", c)
	}

	res = w.mx(nil).Deliver(context.Background(), msg("example.test", "full@example.test", "ok@example.test"))
	check(t, res, "full@example.test", Temporary, "452 4.2.2 mailbox full")
	check(t, res, "ok@example.test", Delivered, "250")
	if got := w.rx["127.0.0.3"].Messages(); len(got) != 1 {
		t.Errorf("receiver got %d transactions, want 1", len(got))
	}
}

func TestTooMany(t *testing.T) {
	cases := []struct {
		r    Reply
		want bool
	}{
		{Reply{452, []string{"4.5.3 Too many recipients"}}, true},
		{Reply{452, []string{"4.5.3 Maximum limit of 2 recipients reached"}}, true},
		{Reply{452, []string{"Too many recipients"}}, true},
		{Reply{452, []string{"4.2.2 mailbox full"}}, false},
		{Reply{452, []string{"4.3.1 too many recipients in the queue"}}, false},
		{Reply{451, []string{"4.5.3 Too many recipients"}}, false},
		{Reply{452, nil}, false},
	}
	for _, c := range cases {
		if got := tooMany(c.r); got != c.want {
			t.Errorf("tooMany(%v) = %v, want %v", c.r, got, c.want)
		}
	}
}

// A connection lost in a further transaction defers only that
// transaction's recipients: those of the first have the message, and must not
// be offered it again (here, or at another host).
func TestTooManyRecipientsLaterTransactionFails(t *testing.T) {
	s := newSlowServer(t, nil, "")
	s.maxRcpts, s.dropAtMail = 1, 2
	x := mxTo(t, s, 30*time.Second, StepTimeouts{})
	res := x.Deliver(context.Background(), msg("example.test", "a@example.test", "b@example.test"))
	check(t, res, "a@example.test", Delivered, "250 2.0.0 queued")
	check(t, res, "b@example.test", Temporary, "MAIL FROM: ")
	if n := s.delivered.Load(); n != 1 {
		t.Errorf("server answered %d messages, want 1", n)
	}
}
