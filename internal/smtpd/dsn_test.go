package smtpd

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"submitd/internal/spool"
)

// RFC 3461: DSN is advertised; RET and ENVID on MAIL, NOTIFY and ORCPT on
// RCPT are accepted, decoded from xtext and kept with the message.
func TestDSNParameters(t *testing.T) {
	e := newTestEnv(t)
	c := e.login("submissions", "jan@firma.cz")
	if ehlo := strings.Join(c.reply0("EHLO client.example"), "\n"); !strings.Contains(ehlo, "250-DSN") && !strings.Contains(ehlo, "250 DSN") {
		t.Fatalf("EHLO does not offer DSN:\n%s", ehlo)
	}
	c.expect("MAIL FROM:<jan@firma.cz> RET=HDRS ENVID=QQ+2B1", "250 ")
	c.expect("RCPT TO:<eva@example.org> NOTIFY=success,FAILURE ORCPT=rfc822;eva+40example.org", "250 ")
	c.expect("RCPT TO:<adam@example.net> NOTIFY=NEVER", "250 ")
	c.expect("RCPT TO:<ota@example.net>", "250 ")
	c.expect("DATA", "354 ")
	env := e.queuedEnvelope(c.cmd(msg("From: jan@firma.cz", "To: eva@example.org") + "."))
	want := &spool.DSN{Ret: "HDRS", EnvID: "QQ+1", Rcpts: map[string]spool.RcptDSN{
		"eva@example.org":  {Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;eva@example.org"},
		"adam@example.net": {Notify: []string{"NEVER"}},
	}}
	if !reflect.DeepEqual(env.DSN, want) {
		t.Errorf("DSN kept %+v, want %+v", env.DSN, want)
	}
	if !env.DSN.Notifies("ota@example.net", "FAILURE") || env.DSN.Notifies("ota@example.net", "SUCCESS") || env.DSN.Notifies("adam@example.net", "FAILURE") {
		t.Error("Notifies does not follow RFC 3461 §4.1")
	}

	// Bad values get a 501 naming the problem; the transaction goes on.
	for _, bad := range []struct{ cmd, detail string }{
		{"MAIL FROM:<jan@firma.cz> RET=ALL", "RET must be given once, FULL or HDRS"},
		{"MAIL FROM:<jan@firma.cz> ENVID=a=b", "ENVID: character '=' is not allowed in xtext"},
		{"MAIL FROM:<jan@firma.cz> ENVID=" + strings.Repeat("x", 101), "ENVID is longer than 100 characters"},
		{"MAIL FROM:<jan@firma.cz> RET=FULL RET=HDRS", "RET must be given once, FULL or HDRS"},
	} {
		matchSID(t, c.cmd(bad.cmd), "501 5.5.4 SID syntax error: "+bad.detail)
	}
	c.expect("MAIL FROM:<jan@firma.cz> RET=FULL", "250 ")
	for _, bad := range []struct{ param, detail string }{
		{"NOTIFY=NEVER,SUCCESS", "NOTIFY=NEVER cannot be combined with other values"},
		{"NOTIFY=SOMETIMES", `NOTIFY value "SOMETIMES" is not NEVER, SUCCESS, FAILURE or DELAY`},
		{"NOTIFY=DELAY,DELAY", "NOTIFY names DELAY twice"},
		{"ORCPT=eva@example.org", "ORCPT must be addr-type;address"},
		{"ORCPT=rfc822;eva+4", `ORCPT: "+" must be followed by two uppercase hex digits`},
		{"ORCPT=rfc822;", "ORCPT has no address"},
		{"ORCPT=rfc822;" + strings.Repeat("x", 494), "ORCPT is longer than 500 characters"},
		{"NOTIFY=DELAY NOTIFY=DELAY", "NOTIFY must be given once"},
	} {
		matchSID(t, c.cmd("RCPT TO:<eva@example.org> "+bad.param), "501 5.5.4 SID syntax error: "+bad.detail)
	}
	c.expect("RCPT TO:<eva@example.org> NOTIFY=DELAY", "250 ")
}

// queuedEnvelope returns the envelope of the message the reply after its
// data says was queued.
func (e *testEnv) queuedEnvelope(reply string) *spool.Envelope {
	e.t.Helper()
	m := regexp.MustCompile(`queued as ([0-9a-v]{24})$`).FindStringSubmatch(reply)
	if m == nil {
		e.t.Fatalf("after DATA: %q", reply)
	}
	env, err := e.spool.Envelope(m[1])
	if err != nil {
		e.t.Fatal(err)
	}
	return env
}

func FuzzXtext(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		d, err := decodeXtext(s)
		if err != nil {
			return
		}
		if len(d) > len(s) {
			t.Fatalf("decoded %q longer than %q", d, s)
		}
		if n, err := parseNotify(s); err == nil && (len(n) == 0 || len(n) > 4) {
			t.Fatalf("parseNotify(%q) = %v", s, n)
		}
		if o, err := parseORcpt(s); err == nil && !strings.Contains(o, ";") {
			t.Fatalf("parseORcpt(%q) = %q", s, o)
		}
	})
}

// RFC 8689: REQUIRETLS is offered inside TLS and kept with the message;
// "TLS-Required: No" is kept as TLSOptional unless REQUIRETLS was given.
func TestRequireTLSKept(t *testing.T) {
	e := newTestEnv(t)
	c := e.login("submissions", "jan@firma.cz")
	if ehlo := strings.Join(c.reply0("EHLO client.example"), "\n"); !strings.Contains(ehlo, "REQUIRETLS") {
		t.Fatalf("EHLO inside TLS does not offer REQUIRETLS:\n%s", ehlo)
	}
	queued := func(mail string, headers ...string) *spool.Envelope {
		t.Helper()
		c.expect(mail, "250 ")
		c.expect("RCPT TO:<eva@example.org>", "250 ")
		c.expect("DATA", "354 ")
		return e.queuedEnvelope(c.cmd(msg(append([]string{"From: jan@firma.cz"}, headers...)...) + "."))
	}
	if env := queued("MAIL FROM:<jan@firma.cz> REQUIRETLS", "TLS-Required: No"); !env.RequireTLS || env.TLSOptional {
		t.Errorf("REQUIRETLS with TLS-Required: No: require %v optional %v, want true false", env.RequireTLS, env.TLSOptional)
	}
	if env := queued("MAIL FROM:<jan@firma.cz>", "TLS-Required: no"); env.RequireTLS || !env.TLSOptional {
		t.Errorf("TLS-Required: No: require %v optional %v, want false true", env.RequireTLS, env.TLSOptional)
	}
	if env := queued("MAIL FROM:<jan@firma.cz>"); env.RequireTLS || env.TLSOptional {
		t.Errorf("plain message: require %v optional %v", env.RequireTLS, env.TLSOptional)
	}
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz> REQUIRETLS=YES"), "555 5.5.4 SID parameter not supported: REQUIRETLS=YES")
}

// RFC 8689 §4.1: without TLS, REQUIRETLS is neither offered nor taken.
func TestRequireTLSNeedsTLS(t *testing.T) {
	e := newTestEnv(t)
	c := e.session("plain", nil)
	if ehlo := strings.Join(c.reply0("EHLO client.example"), "\n"); strings.Contains(ehlo, "REQUIRETLS") {
		t.Fatalf("EHLO without TLS offers REQUIRETLS:\n%s", ehlo)
	}
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	matchSID(t, c.cmd("MAIL FROM:<jan@firma.cz> REQUIRETLS"), "555 5.5.4 SID parameter not supported: REQUIRETLS")
	c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
}
