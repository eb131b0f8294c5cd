package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/guard"
)

// TestContentRulesDATAandBDAT: DATA and BDAT apply the same content rules
// with the same replies, whether a BDAT chunk comes with its command or
// after a pause (SPEC R14, R16; RFC 5322 §3.5 and RFC 6152 §3 for NUL).
func TestContentRulesDATAandBDAT(t *testing.T) {
	e := newTestEnv(t)
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name, data, want string
	}{
		{"long body line", msg("From: jan@firma.cz") + long + "\r\n", "554 5.6.0 SID message has a line longer than 1000 bytes"},
		{"long header line", msg("From: jan@firma.cz", "X: "+long), "554 5.6.0 SID message has a line longer than 1000 bytes"},
		{"NUL in body", msg("From: jan@firma.cz") + "a\x00b\r\n", "554 5.6.0 SID message contains a NUL byte, which mail may not hold"},
		{"NUL before a dot line", msg("From: jan@firma.cz") + "x\r\n\x00.\r\ny\r\n", "554 5.6.0 SID message contains a NUL byte, which mail may not hold"},
		{"NUL in header", "From: jan@firma.cz\r\nX: \x00\r\n\r\nbody\r\n", "554 5.6.0 SID message contains a NUL byte, which mail may not hold"},
		{"bare LF", msg("From: jan@firma.cz") + "a\nb\r\n", "554 5.6.0 SID message contains a bare CR or LF; lines must end with CRLF"},
		{"bare CR", msg("From: jan@firma.cz") + "a\rb\r\n", "554 5.6.0 SID message contains a bare CR or LF; lines must end with CRLF"},
		{"header too large", "From: jan@firma.cz\r\n" + strings.Repeat("X-A: "+strings.Repeat("y", 900)+"\r\n", 40) + "\r\nb\r\n", "552 5.3.4 SID message header section is larger than 32768 bytes"},
		{"too big", msg("From: jan@firma.cz") + strings.Repeat(strings.Repeat("z", 998)+"\r\n", 70), "552 5.3.4 SID message is larger than the limit of 65536 bytes"},
		{"no From", msg("Subject: x"), "550 5.6.0 SID message has no From: header"},
		{"foreign From", msg("From: ceo@bank.example"), "550 5.1.0 <ceo@bank.example> sender rejected"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how, got string) {
				t.Helper()
				if strings.Contains(tc.want, "SID") {
					matchSID(t, got, tc.want)
				} else if got != tc.want {
					t.Fatalf("%s: got %q, want %q", how, got, tc.want)
				}
			}
			c := e.login("smtp", "jan@firma.cz")
			check("DATA", c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, tc.data))
			c.expect("NOOP", "250 ")

			for _, pause := range []bool{false, true} {
				c := e.login("smtp", "jan@firma.cz")
				c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
				c.expect("RCPT TO:<eva@example.org>", "250 ")
				cmd := fmt.Sprintf("BDAT %d LAST\r\n", len(tc.data))
				if pause {
					io.WriteString(c.conn, cmd)
					time.Sleep(20 * time.Millisecond)
					io.WriteString(c.conn, tc.data)
				} else {
					io.WriteString(c.conn, cmd+tc.data)
				}
				check(fmt.Sprintf("BDAT (pause %v)", pause), c.last())
				c.expect("NOOP", "250 ")
			}
		})
	}
	if n := len(e.spooled()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// TestAuthUncheckedCounts: an AUTH refused before any password is checked
// (initial response not base64, unknown mechanism, cancelled, malformed)
// counts as a failure (SPEC R11: every AUTH that does not succeed), and its
// reply comes from the reply table with the session id.
func TestAuthUncheckedCounts(t *testing.T) {
	for _, tc := range []struct{ auth, want string }{
		{"AUTH PLAIN !!!not-base64", "501 5.5.2 SID malformed AUTH response"},
		{"AUTH CRAM-MD5", "504 5.5.4 SID unsupported authentication mechanism; use PLAIN or LOGIN"},
		{"AUTH XOAUTH2 dG9rZW4=", "504 5.5.4 SID unsupported authentication mechanism; use PLAIN or LOGIN"},
		{"AUTH PLAIN " + b64("no-nuls"), "501 5.5.2 SID malformed AUTH response"},
	} {
		t.Run(tc.auth, func(t *testing.T) {
			e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 10, Window: time.Hour, BlockFor: time.Hour}))
			for i := 0; i < 10; i++ {
				c := e.open("smtp")
				matchSID(t, c.cmd(tc.auth), tc.want)
			}
			e.expectRefused("smtp", "127.0.0.1", nil)
		})
	}
}

// TestStartTLSHandshakeFailure: after a failed STARTTLS handshake the
// connection is closed (RFC 3207 §4.1): what the client sends next never
// runs as plaintext commands.
func TestStartTLSHandshakeFailure(t *testing.T) {
	e := newTestEnv(t)
	c := e.session("plain", nil)
	c.expect("STARTTLS", "220 ")
	// Not a TLS ClientHello: plaintext commands where TLS must start.
	io.WriteString(c.conn, "EHLO x\r\n"+plain("jan@firma.cz", testPassword)+"\r\nMAIL FROM:<jan@firma.cz>\r\nNOOP\r\n")
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.r)
	if len(rest) > 0 && !strings.HasPrefix(string(rest), "\x15\x03") {
		// Only a TLS alert may come back; never an SMTP reply.
		t.Fatalf("after a failed handshake the server answered %q", rest)
	}
	if err != nil && !isReset(err) {
		t.Fatalf("connection not closed: %v", err)
	}
}

// goSMTPTexts are the default texts of go-smtp's server, which must never
// reach customers: every reply comes from submitd's reply table.
var goSMTPTexts = []string{
	"Roger, accepting mail", "I'll make sure", "Too long line", "Invalid base64 data",
	"Go ahead", "Bye", "Session reset", "I have successfully done nothing",
	"Cannot VRFY user", "Please introduce yourself", "Was expecting", "Missing RCPT TO",
	"Missing MAIL FROM", "Ready to start TLS", "Handshake error", "Hello ", "Error: bad syntax",
	"Bad command", "Negotiation cancelled", "Already authenticated", "Unknown BDAT argument",
	"Malformed size argument", "Max message size exceeded", "Service Ready", "Authentication succeeded",
	"Too many errors", "is not implemented", "Unknown MAIL FROM argument", "Maximum limit of",
}

// tableLine reports whether line is a reply the table can produce: the row
// of some key with its variables filled in.
func tableLine(r *Replies, line string) bool {
	for key := range r.rows {
		re := regexp.QuoteMeta(r.Line(key, Vars{SID: "§s§", Address: "§a§", IP: "§i§", QueueID: "§q§", Detail: "§d§", Host: "§h§", Limit: 9876543}))
		re = strings.NewReplacer("§s§", sidRe, "§a§", ".*", "§i§", `[0-9a-f.:]+`, "§q§", `[0-9A-Za-z]+`, "§d§", ".*", "§h§", `[a-z.]+`, "9876543", `[0-9]+`).Replace(re)
		if regexp.MustCompile("^" + re + "$").MatchString(line) {
			return true
		}
	}
	return false
}

// TestEveryReplyFromTable drives sessions through every command and state
// and checks each reply line: it comes from the reply table (or is an EHLO
// keyword or an AUTH challenge), no error lacks the session id, and none is
// one of go-smtp's default texts.
func TestEveryReplyFromTable(t *testing.T) {
	e := newTestEnv(t)
	var lines []string
	// collect sends cmd, unless it is "-", and collects the reply.
	collect := func(c *client, cmd string) {
		t.Helper()
		if cmd != "-" {
			c.send(cmd)
		}
		lines = append(lines, c.reply()...)
	}
	data := func(c *client, body string) {
		io.WriteString(c.conn, body)
		collect(c, "-")
	}
	// Before and around EHLO, in plaintext.
	c := e.dial("plain")
	collect(c, "-")
	for _, cmd := range []string{"MAIL FROM:<jan@firma.cz>", "AUTH PLAIN", "HELO", "FOO", "", "NOOP", "RSET",
		"VRFY jan", "EXPN list", "HELP", "HELO client.example", "AUTH PLAIN", "EHLO", "EHLO client.example",
		"STARTTLS now", "RCPT TO:<a@b.cz>", "DATA", "BDAT 0 LAST", "NOOP " + strings.Repeat("x", 1100), "QUIT"} {
		collect(c, cmd)
	}
	// The rest in a new session, which starts without errors counted.
	c = e.dial("plain")
	collect(c, "-")
	collect(c, "EHLO client.example")
	collect(c, "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	c.conn, c.r = tc, bufio.NewReader(tc)
	for _, cmd := range []string{"MAIL FROM:<jan@firma.cz>", "EHLO client.example", "STARTTLS",
		plain("jan@firma.cz", "wrong"), plain("nikdo@firma.cz", "x"), plain("zakazany@firma.cz", "x"),
		"AUTH PLAIN", "*", "AUTH LOGIN", b64("jan@firma.cz"), "*", "AUTH LOGIN", "@@", "AUTH CRAM-MD5",
		plain("jan@firma.cz", testPassword), plain("jan@firma.cz", testPassword),
		"DATA", "RCPT TO:<eva@example.org>", "MAIL FROM:<jan@firma.cz> BODY=BINARYMIME", "MAIL FROM:<jan@firma.cz> RET=FULL",
		"MAIL FROM:<jan@firma.cz> SIZE=x", "MAIL FROM:<jan@firma.cz> SIZE=99999999", "MAIL FROM:jan@firma.cz>",
		"MAIL FROM:<x@gmail.com>", "MAIL TO:<jan@firma.cz>", "MAIL FROM:<jan@firma.cz> SIZE=10 BODY=8BITMIME SMTPUTF8",
		"MAIL FROM:<jan@firma.cz>", "AUTH PLAIN", "RCPT FROM:<x@y.cz>", "RCPT TO:<nonsense>", "RCPT TO:<x@y.cz> NOTIFY=NEVER",
		"RCPT TO:<>", "RCPT TO:<r1@example.org>", "RCPT TO:<r1@example.org>", "DATA now"} {
		collect(c, cmd)
	}
	for i := 2; i <= 6; i++ {
		collect(c, fmt.Sprintf("RCPT TO:<r%d@example.org>", i))
	}
	collect(c, "DATA")
	data(c, msg("From: jan@firma.cz")+".\r\n")
	collect(c, "MAIL FROM:<>")
	collect(c, "RCPT TO:<eva@example.org>")
	collect(c, "DATA")
	data(c, msg("From: x@gmail.com")+".\r\n")
	collect(c, "MAIL FROM:<jan@firma.cz>")
	collect(c, "RCPT TO:<eva@example.org>")
	c.send("BDAT 4")
	data(c, "From")
	collect(c, "DATA")
	collect(c, "RCPT TO:<other@example.org>")
	rest := ": jan@firma.cz\r\n\r\nx\r\n"
	c.send(fmt.Sprintf("BDAT %d LAST", len(rest)))
	data(c, rest)
	c.send("BDAT 3")
	data(c, "abc")
	collect(c, "QUIT")

	// Timeouts and limits that end sessions.
	e2 := newTestEnv(t, withServer(func(s *Server) { s.Limits.CommandTimeout = 100 * time.Millisecond }))
	c = e2.dial("smtp")
	collect(c, "-")
	collect(c, "-")
	e3 := newTestEnv(t)
	c = e3.dial("smtp")
	collect(c, "-")
	for i := 0; i < maxErrors; i++ {
		collect(c, "FOO")
	}
	c = e3.dial("smtp")
	collect(c, "-")
	collect(c, "BDAT x")

	goSMTP := strings.Join(goSMTPTexts, "|")
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "250-") || strings.HasPrefix(l, "250 ") && regexp.MustCompile(`^250 (AUTH|SIZE|PIPELINING|8BITMIME|SMTPUTF8|CHUNKING|STARTTLS|ENHANCEDSTATUSCODES|LIMITS|DSN|REQUIRETLS)\b`).MatchString(l):
			// EHLO keywords.
			continue
		case strings.HasPrefix(l, "334 "):
			continue
		case regexp.MustCompile(goSMTP).MatchString(l):
			t.Errorf("go-smtp's text reached the client: %q", l)
		case !tableLine(e.srv.Replies, l):
			t.Errorf("reply not from the reply table: %q", l)
		case l[0] >= '4' && !regexp.MustCompile(sidRe).MatchString(l) && !strings.HasSuffix(l, "sender rejected"):
			t.Errorf("error reply without the session id: %q", l)
		}
	}
	if len(lines) < 80 {
		t.Fatalf("only %d reply lines", len(lines))
	}
}

// TestSlotFreeAtQuit: a client that has read the 221 can connect again at
// once; its connection slot is given back before the 221 is written, not
// after the close has been logged and recorded (SPEC R14).
func TestSlotFreeAtQuit(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) { s.Limits.MaxConnsPerIP = 1 }))
	for i := 0; i < 300; i++ {
		c := e.dial("smtp")
		if g := c.last(); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("connection %d refused after the previous one got its 221: %q", i, g)
		}
		c.expect("QUIT", "221 ")
		c.conn.Close()
	}
}

// TestShutdownIdleSessions: Shutdown tells sessions waiting for a command
// at once, with a 421, instead of waiting for them to leave.
func TestShutdownIdleSessions(t *testing.T) {
	e := newTestEnv(t)
	c := e.login("smtp", "jan@firma.cz")
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		close(done)
	}()
	matchSID(t, c.last(), "421 4.3.2 SID server shutting down, try again later")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the idle session ended")
	}
	// A connection that arrives while the server shuts down is told so.
	matchSID(t, e.dial("smtp").last(), "421 4.3.2 SID server shutting down, try again later")
}

// TestRepliesDocumented: operators override replies by key, so every key
// is listed in the operations guide.
func TestRepliesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ReplyKeys() {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("reply key %s is not in docs/operations.md", k)
		}
	}
}

func TestExpand(t *testing.T) {
	v := Vars{SID: "S", Address: "a\r\nb@x", IP: "1.2.3.4", QueueID: "Q", Detail: strings.Repeat("ž", 150), Host: "h", Limit: 42}
	for text, want := range map[string]string{
		"plain":                 "plain",
		"{sid} {ip} {queue_id}": "S 1.2.3.4 Q",
		"<{address}> {limit}":   "<a  b@x> 42",
		"{host}{unknown}{sid}":  "h{unknown}S",
		"open { brace {sid":     "open { brace {sid",
		"{detail}":              strings.Repeat("ž", 100),
		"}{sid}{":               "}S{",
	} {
		if got := expand(text, v); got != want {
			t.Errorf("expand(%q) = %q, want %q", text, got, want)
		}
	}
}
