package queue

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"submitd/internal/message"
	"submitd/internal/spool"
)

// KindDSN is the envelope Kind of a report the queue made; such a message
// never causes a report of its own (SPEC R18, RFC 3464 §2 rule against
// reporting on reports).
const KindDSN = "dsn"

// maxReportHeader is the most of the original header section a report
// quotes; the rest is left out.
const maxReportHeader = 64 << 10

// Bounceable reports whether a message may be answered with a DSN: never one
// with the null sender and never a DSN itself (SPEC R18; RFC 5321 §4.5.5).
func Bounceable(env *spool.Envelope) bool {
	return env.From != "" && env.Kind != KindDSN
}

// reportKind says what a report tells of its recipients.
type reportKind int

const (
	// reportFailed: delivery failed for good.
	reportFailed reportKind = iota
	// reportDelayed: still being retried after [queue] delay_warning.
	reportDelayed
	// reportDelivered: delivered, or relayed to a server without DSN, as
	// the recipient asked with NOTIFY=SUCCESS (RFC 3461 §4.1).
	reportDelivered
)

func (k reportKind) String() string {
	switch k {
	case reportDelayed:
		return "delayed"
	case reportDelivered:
		return "delivered"
	}
	return "failed"
}

// report is what one DSN says.
type report struct {
	// hostname is the reporting MTA.
	hostname string
	// env is the original message's envelope.
	env *spool.Envelope
	// rcpts are the recipients the report is about.
	rcpts []*Rcpt
	// kind says whether it reports failures, delays or deliveries.
	kind reportKind
	// until is when retrying stops, for a delay warning.
	until time.Time
	// now is when the report is made.
	now time.Time
	// headers is the original message's header section.
	headers []byte
	// full, when set, is the whole original message, returned instead of
	// the header section (RET=FULL, RFC 3461 §4.3).
	full []byte
}

// maxReturnedMessage bounds the message a RET=FULL failure report
// returns; a bigger one is returned as its header section, which RFC 3461
// §4.3 allows.
const maxReturnedMessage = 10 << 20

// sendReport writes a DSN about rcpts of message env into sp as a new message
// from <> to the original sender, with Kind KindDSN, and returns its envelope.
func sendReport(sp *spool.Spool, r *report) (*spool.Envelope, error) {
	if r.headers == nil {
		r.headers = readHeaders(sp, r.env.ID)
	}
	if r.kind == reportFailed && r.env.DSN != nil && r.env.DSN.Ret == "FULL" && r.full == nil {
		r.full = readFull(sp, r.env.ID)
	}
	body := r.build()
	denv := &spool.Envelope{
		From: "", To: []string{r.env.From}, SessionID: r.env.SessionID,
		Received: r.now, Kind: KindDSN,
	}
	w, err := sp.Create(denv)
	if err != nil {
		return nil, fmt.Errorf("queue: report on %s: %w", r.env.ID, err)
	}
	// The Message-ID names the report's own queue id, known only now.
	body = bytes.Replace(body, []byte("\x00ID\x00"), []byte(denv.ID), 1)
	if _, err := w.Write(body); err != nil {
		w.Abort()
		return nil, fmt.Errorf("queue: report on %s: %w", r.env.ID, err)
	}
	if err := w.Commit(); err != nil {
		return nil, fmt.Errorf("queue: report on %s: %w", r.env.ID, err)
	}
	return denv, nil
}

// readHeaders returns the header section of message id, or nil when it
// cannot be read (the report then goes without it).
func readHeaders(sp *spool.Spool, id string) []byte {
	rc, _, err := sp.Message(id)
	if err != nil {
		return nil
	}
	defer rc.Close()
	h, err := message.ReadHeader(bufio.NewReader(io.LimitReader(rc, maxReportHeader)), maxReportHeader)
	if err != nil && len(h) == 0 {
		return nil
	}
	return h
}

// readFull returns message id whole, or nil when it cannot be read or is
// larger than maxReturnedMessage.
func readFull(sp *spool.Spool, id string) []byte {
	rc, _, err := sp.Message(id)
	if err != nil {
		return nil
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxReturnedMessage+1))
	if err != nil || len(b) > maxReturnedMessage {
		return nil
	}
	return b
}

// build formats the report as an RFC 3464 multipart/report message.
func (r *report) build() []byte {
	var b bytes.Buffer
	var rnd [12]byte
	rand.Read(rnd[:])
	boundary := "=_report_" + hex.EncodeToString(rnd[:])
	subject := "Undelivered Mail Returned to Sender"
	switch r.kind {
	case reportDelayed:
		subject = "Delayed Mail (still being retried)"
	case reportDelivered:
		subject = "Successful Mail Delivery Report"
	}
	date := r.now.Format(time.RFC1123Z)
	crlf := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	crlf("From: Mail Delivery System <MAILER-DAEMON@%s>", r.hostname)
	crlf("To: <%s>", r.env.From)
	crlf("Subject: %s", subject)
	crlf("Date: %s", date)
	crlf("Message-ID: <\x00ID\x00@%s>", r.hostname)
	// RFC 3834 §5: an automatic message says so, so that responders and
	// vacation programs do not answer it.
	crlf("Auto-Submitted: auto-replied")
	crlf("MIME-Version: 1.0")
	crlf("Content-Type: multipart/report; report-type=delivery-status;")
	crlf("\tboundary=\"%s\"", boundary)
	crlf("")
	crlf("This is a MIME-encapsulated message.")
	crlf("")

	// Part 1: the explanation for a human (RFC 3464 §2, first part).
	crlf("--%s", boundary)
	crlf("Content-Type: text/plain; charset=utf-8")
	crlf("Content-Transfer-Encoding: 8bit")
	crlf("")
	crlf("This is the mail system at host %s.", r.hostname)
	crlf("")
	switch r.kind {
	case reportDelayed:
		crlf("Your message has not yet been delivered to the recipients below.")
		crlf("It is still being retried until %s;", r.until.Format(time.RFC1123Z))
		crlf("there is no need to send it again. You will get another report")
		crlf("only if delivery finally fails.")
	case reportDelivered:
		crlf("Your message was delivered to the recipients below, as you asked")
		crlf("to be told. Where it says \"relayed\", it went to a server that")
		crlf("sends no such notices, and this is the last one you will get.")
	default:
		crlf("Your message could not be delivered to the recipients below.")
		crlf("Each is listed with the reason; the message was not sent to them.")
	}
	crlf("")
	for _, rc := range r.rcpts {
		// RFC 5322 §2.1.1: the whole line, address included, stays
		// within 998 bytes.
		if r.kind == reportDelivered {
			crlf("%s", oneLine("<"+rc.Addr+">: "+rc.action(r.kind)+" to "+rc.Host, 990))
			continue
		}
		crlf("%s", oneLine("<"+rc.Addr+">: "+rc.explain(), 990))
	}
	crlf("")
	crlf("Queue id: %s", r.env.ID)
	if r.env.SessionID != "" {
		crlf("Session id: %s", r.env.SessionID)
	}
	crlf("")

	// Part 2: the machine-readable status (RFC 3464 §2.2, §2.3).
	crlf("--%s", boundary)
	crlf("Content-Type: message/delivery-status")
	crlf("")
	crlf("Reporting-MTA: dns; %s", r.hostname)
	if id := r.env.DSN.EnvIDOrEmpty(); id != "" {
		// RFC 3461 §6.3.1: the ENVID the message was submitted with.
		crlf("Original-Envelope-Id: %s", oneLine(id, 200))
	}
	crlf("X-Submitd-Queue-ID: %s", r.env.ID)
	if !r.env.Received.IsZero() {
		crlf("Arrival-Date: %s", r.env.Received.Format(time.RFC1123Z))
	}
	for _, rc := range r.rcpts {
		crlf("")
		if o := r.env.DSN.ORcptOf(rc.Addr); o != "" {
			// RFC 3461 §6.3.2: the ORCPT the recipient was given with.
			crlf("Original-Recipient: %s", oneLine(o, 900))
		}
		crlf("Final-Recipient: %s", addrType(rc.Addr))
		crlf("Action: %s", rc.action(r.kind))
		crlf("Status: %s", rc.status(r.kind))
		if rc.Host != "" {
			// The host is recorded as "name [address]"; the field wants the name.
			host, _, _ := strings.Cut(rc.Host, " ")
			crlf("Remote-MTA: dns; %s", oneLine(host, 255))
		}
		if rc.Reply != "" {
			if isSMTPReply(rc.Reply) {
				crlf("Diagnostic-Code: smtp; %s", oneLine(rc.Reply, 900))
			} else {
				crlf("Diagnostic-Code: X-Submitd; %s", oneLine(rc.Reply, 900))
			}
		}
		if n := len(rc.History); n > 0 {
			crlf("Last-Attempt-Date: %s", rc.History[n-1].Time.Format(time.RFC1123Z))
		}
		if r.kind == reportDelayed {
			crlf("Will-Retry-Until: %s", r.until.Format(time.RFC1123Z))
		}
	}
	crlf("")

	if r.full != nil {
		// Part 3: the whole message, as RET=FULL asked (RFC 3461 §4.3,
		// RFC 3464 §2).
		crlf("--%s", boundary)
		crlf("Content-Type: message/rfc822")
		crlf("")
		b.Write(r.full)
		if !bytes.HasSuffix(r.full, []byte("\r\n")) {
			crlf("")
		}
		crlf("")
		crlf("--%s--", boundary)
		return b.Bytes()
	}
	// Part 3: the original header section (RFC 3462 text/rfc822-headers).
	crlf("--%s", boundary)
	crlf("Content-Type: text/rfc822-headers")
	crlf("")
	h := bytes.TrimRight(r.headers, "\r\n")
	if len(h) > 0 {
		b.Write(h)
		crlf("")
	}
	crlf("")
	crlf("--%s--", boundary)
	return b.Bytes()
}

// explain is the human-readable reason a recipient is reported.
func (rc *Rcpt) explain() string {
	var s string
	switch {
	case rc.Reply != "" && rc.Host != "":
		s = fmt.Sprintf("host %s said: %s", rc.Host, rc.Reply)
	case rc.Reply != "":
		s = rc.Reply
	default:
		s = "no reply recorded"
	}
	if rc.Reason != "" {
		if rc.Reply == "" {
			return rc.Reason
		}
		return rc.Reason + "; last reply: " + s
	}
	return s
}

// status is the RFC 3463 status code for the report: the enhanced code of
// the remote reply when it has one, else one derived from the reply code or
// the outcome.
func (rc *Rcpt) status(kind reportKind) string {
	delayed := kind == reportDelayed
	if code, ok := enhancedCode(rc.Reply); ok {
		return code
	}
	switch {
	case kind == reportDelivered:
		return "2.0.0"
	case rc.Code != "" && !rc.Expired && (rc.Code[0] == '4') == delayed:
		return rc.Code
	case delayed:
		return "4.0.0"
	case rc.Expired:
		// RFC 3463 §3.5: X.4.7 delivery time expired.
		return "4.4.7"
	case isSMTPReply(rc.Reply) && rc.Reply[0] == '4':
		return "4.0.0"
	}
	return "5.0.0"
}

// action is the Action field of the recipient in a report of kind (RFC
// 3464 §2.3.3).
func (rc *Rcpt) action(kind reportKind) string {
	switch {
	case kind == reportDelayed:
		return "delayed"
	case kind == reportDelivered && rc.Relayed:
		return "relayed"
	case kind == reportDelivered:
		return "delivered"
	}
	return "failed"
}

// isSMTPReply reports whether s starts like an SMTP reply: three digits and a
// space, hyphen or end.
func isSMTPReply(s string) bool {
	if len(s) < 3 || s[0] < '2' || s[0] > '5' {
		return false
	}
	for i := 1; i < 3; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) == 3 || s[3] == ' ' || s[3] == '-'
}

// enhancedCode returns the RFC 3463 code after the reply code, like "5.1.1"
// in "550 5.1.1 no such user", when its class matches the reply's.
func enhancedCode(reply string) (string, bool) {
	if !isSMTPReply(reply) || len(reply) < 5 {
		return "", false
	}
	f := strings.Fields(reply[4:])
	if len(f) == 0 {
		return "", false
	}
	code := f[0]
	parts := strings.Split(code, ".")
	if len(parts) != 3 || parts[0] != reply[:1] {
		return "", false
	}
	for i, p := range parts {
		max := 3
		if i == 0 {
			max = 1
		}
		if p == "" || len(p) > max {
			return "", false
		}
		for _, c := range []byte(p) {
			if c < '0' || c > '9' {
				return "", false
			}
		}
	}
	return code, true
}

// addrType formats a Final-Recipient value: rfc822 for an ASCII address,
// utf-8 for an internationalized one (RFC 6533 §3).
func addrType(addr string) string {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			return "utf-8; " + addr
		}
	}
	return "rfc822; " + addr
}

// oneLine makes s safe for one header or text line: control characters
// (a multi-line reply's line breaks among them) become spaces and it is cut
// to at most max bytes on a character boundary.
func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	// Cut before a character that would be split.
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max] + "…"
}
