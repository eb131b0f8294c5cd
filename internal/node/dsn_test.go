package node

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// RFC 3461 end to end: DSN parameters given on submission go on to a
// smarthost that offers DSN; to one that does not, a recipient asking for
// SUCCESS makes the node send a "relayed" notice to the sender.
func TestNodeDSNParameters(t *testing.T) {
	for _, offer := range []bool{true, false} {
		rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{DSN: offer})
		n := startNode(t, testConfig(t, rcv.Addr))
		c := loginJan(t, n)
		if err := c.Mail("jan@firma.test", &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "ENV-9"}); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("petr@example.test", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure},
			OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "petr@example.test"}); err != nil {
			t.Fatal(err)
		}
		wc, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(wc, "From: jan@firma.test\r\nTo: petr@example.test\r\nSubject: hello\r\n\r\nHello.\r\n")
		if err := wc.Close(); err != nil {
			t.Fatal(err)
		}
		want := 1
		if !offer {
			want = 2
		}
		testutil.WaitFor(t, 20*time.Second, "the messages at the smarthost", func() bool { return len(rcv.Messages()) >= want })
		msgs := rcv.Messages()
		got := msgs[0]
		if offer {
			if got.Ret != "HDRS" || got.EnvID != "ENV-9" || got.Notify["petr@example.test"] != "SUCCESS,FAILURE" || got.ORcpt["petr@example.test"] != "RFC822;petr@example.test" {
				t.Errorf("smarthost with DSN got RET %q ENVID %q NOTIFY %v ORCPT %v", got.Ret, got.EnvID, got.Notify, got.ORcpt)
			}
			continue
		}
		notice := msgs[1]
		if notice.From != "" || len(notice.Rcpts) != 1 || notice.Rcpts[0] != "jan@firma.test" ||
			!bytes.Contains(notice.Data, []byte("Action: relayed")) || !bytes.Contains(notice.Data, []byte("Original-Envelope-Id: ENV-9")) {
			t.Errorf("notice from %q to %v:\n%s", notice.From, notice.Rcpts, notice.Data)
		}
	}
}
