package queue

import (
	"bytes"
	"strings"
	"testing"
)

// A report keeps every line within RFC 5322's 998 bytes also when the
// recipient address is as long as SMTP allows and the reply is long: the
// text part names the address and the reply on one line.
func TestReportLineLengthLongAddress(t *testing.T) {
	addr := strings.Repeat("l", 64) + "@" + strings.Repeat(strings.Repeat("d", 62)+".", 4) + "test"
	rc := &Rcpt{Addr: addr, Domain: addr[65:], Status: Failed, Host: "mx.example.test [192.0.2.1]",
		Reply: "550 5.1.1 " + strings.Repeat("no such user ", 100)}
	r := &report{hostname: "submit.test", env: fuzzEnv, rcpts: []*Rcpt{rc}, now: fuzzEnv.Received,
		headers: []byte("Subject: x\r\n\r\n")}
	for i, line := range bytes.Split(r.build(), []byte("\r\n")) {
		if len(line) > 998 {
			t.Errorf("line %d is %d bytes long (RFC 5322 §2.1.1 allows 998): %.60q…", i, len(line), line)
		}
	}
}
