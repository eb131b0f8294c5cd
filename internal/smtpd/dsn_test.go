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
	got := c.cmd(msg("From: jan@firma.cz", "To: eva@example.org") + ".")
	m := regexp.MustCompile(`queued as ([0-9a-v]{24})$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("after DATA: %q", got)
	}
	env, err := e.spool.Envelope(m[1])
	if err != nil {
		t.Fatal(err)
	}
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
	c.expect("MAIL FROM:<jan@firma.cz> RET=ALL", "501 ")
	c.expect("MAIL FROM:<jan@firma.cz> ENVID=a=b", "501 ")
	c.expect("MAIL FROM:<jan@firma.cz> ENVID="+strings.Repeat("x", 101), "501 ")
	c.expect("MAIL FROM:<jan@firma.cz> RET=FULL RET=HDRS", "501 ")
	c.expect("MAIL FROM:<jan@firma.cz> RET=FULL", "250 ")
	for _, bad := range []string{"NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=DELAY,DELAY", "ORCPT=eva@example.org",
		"ORCPT=rfc822;eva+4", "ORCPT=rfc822;", "NOTIFY=DELAY NOTIFY=DELAY"} {
		if r := c.cmd("RCPT TO:<eva@example.org> " + bad); !strings.HasPrefix(r, "501 ") {
			t.Errorf("RCPT with %s: %q, want 501", bad, r)
		}
	}
	c.expect("RCPT TO:<eva@example.org> NOTIFY=DELAY", "250 ")
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
		got := c.cmd(msg(append([]string{"From: jan@firma.cz"}, headers...)...) + ".")
		m := regexp.MustCompile(`queued as ([0-9a-v]{24})$`).FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("after DATA: %q", got)
		}
		env, err := e.spool.Envelope(m[1])
		if err != nil {
			t.Fatal(err)
		}
		return env
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
	c.expect("MAIL FROM:<jan@firma.cz> REQUIRETLS=YES", "555 ")
}
