package queue

import (
	"bufio"
	"bytes"
	"encoding/json"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/spool"
)

var fuzzEnv = &spool.Envelope{ID: "33lri0tkmc85oqcscipnh29f", From: "jan@firma.test",
	To: []string{"eva@a.test", "petr@b.test"}, Received: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)}

// FuzzState feeds arbitrary state files to the decoder: it either refuses
// them or yields a state the queue can schedule, report on and save again.
func FuzzState(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(fuzzEnv, data)
		if err != nil {
			return
		}
		st.Done()
		st.NextDue()
		openDomains(st)
		summary(st)
		var failed []*Rcpt
		for _, r := range st.Rcpts {
			if r.Status == Failed {
				failed = append(failed, r)
			}
		}
		r := &report{hostname: "submit.test", env: fuzzEnv, rcpts: failed, now: fuzzEnv.Received}
		r.build()
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		st2, err := decodeState(fuzzEnv, again)
		if err != nil {
			t.Fatalf("a state that decoded does not decode after saving: %v\n%s", err, again)
		}
		for i := range st.Rcpts {
			if st.Rcpts[i].Status != st2.Rcpts[i].Status || st.Rcpts[i].Attempts != st2.Rcpts[i].Attempts {
				t.Fatalf("recipient %d changed by saving: %+v != %+v", i, st.Rcpts[i], st2.Rcpts[i])
			}
		}
	})
}

var statusRe = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// FuzzReport builds a report around an arbitrary remote reply and host: it
// must stay a well-formed RFC 3464 message whatever the remote server said.
func FuzzReport(f *testing.F) {
	f.Fuzz(func(t *testing.T, reply, host string) {
		rc := &Rcpt{Addr: "eva@a.test", Domain: "a.test", Status: Failed, Reply: reply, Host: host}
		r := &report{hostname: "submit.test", env: fuzzEnv, rcpts: []*Rcpt{rc}, now: fuzzEnv.Received,
			headers: []byte("Subject: x\r\n\r\n")}
		out := r.build()
		for i, line := range bytes.Split(out, []byte("\r\n")) {
			if bytes.ContainsAny(line, "\r\n") {
				t.Fatalf("line %d has a bare CR or LF: %q", i, line)
			}
			if len(line) > 998 {
				t.Fatalf("line %d is %d bytes long (RFC 5322 §2.1.1 allows 998)", i, len(line))
			}
		}
		m, err := mail.ReadMessage(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("report does not parse: %v", err)
		}
		_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		mr := multipart.NewReader(m.Body, params["boundary"])
		var status textproto.MIMEHeader
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.Header.Get("Content-Type") != "message/delivery-status" {
				continue
			}
			tr := textproto.NewReader(bufio.NewReader(p))
			if _, err := tr.ReadMIMEHeader(); err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			status, err = tr.ReadMIMEHeader()
			if err != nil && len(status) == 0 {
				t.Fatalf("per-recipient fields: %v", err)
			}
		}
		if status == nil {
			t.Fatal("no delivery-status part")
		}
		if s := status.Get("Status"); !statusRe.MatchString(s) {
			t.Fatalf("Status %q is not an RFC 3463 code", s)
		}
		if reply != "" && !strings.HasSuffix(status.Get("Diagnostic-Code"), strings.TrimSpace(oneLine(reply, 900))) {
			t.Fatalf("Diagnostic-Code %q does not carry the reply %q", status.Get("Diagnostic-Code"), reply)
		}
	})
}
