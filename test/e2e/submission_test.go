package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"submitd/internal/testutil"
)

var queuedRe = regexp.MustCompile(`250 2\.0\.0 ([A-Za-z0-9]{22}) queued as ([0-9a-v]{24})`)

// swaks runs swaks against the server and returns its transcript.
func swaks(t *testing.T, args ...string) string {
	t.Helper()
	bin := testutil.NeedTool(t, "swaks")
	out, _ := exec.Command(bin, append([]string{"--timeout", "20"}, args...)...).CombinedOutput()
	return string(out)
}

// serverLine finds the server reply line in a swaks transcript that
// matches pattern (SID stands for a session id).
func serverLine(t *testing.T, transcript, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^<~?\*? +` + strings.Replace(regexp.QuoteMeta(pattern), "SID", `([A-Za-z0-9]{22})`, 1) + `\r?$`)
	m := re.FindStringSubmatch(transcript)
	if m == nil {
		t.Fatalf("no server reply %q in transcript:\n%s", pattern, transcript)
	}
	if len(m) > 1 {
		return m[1]
	}
	return ""
}

// TestSwaks: a good send and each rejection, with STARTTLS and both
// mechanisms, as a customer's client sees them (SPEC R4, R8).
func TestSwaks(t *testing.T) {
	s := newServer(t, "")
	s.setupFirma()
	s.start()
	base := []string{"--server", s.sub, "-tls", "--to", "eva@example.org"}
	for _, mech := range []string{"LOGIN", "PLAIN"} {
		out := swaks(t, append(base, "--auth", mech, "--auth-user", "jan@firma.cz", "--auth-password", e2ePassword,
			"--from", "jan@firma.cz", "--header", "Subject: e2e "+mech)...)
		m := queuedRe.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: not queued:\n%s", mech, out)
		}
		content, err := os.ReadFile(s.spoolFile(m[2]))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(content), "with ESMTPSA id "+m[1]) || !strings.Contains(string(content), "Subject: e2e "+mech) {
			t.Fatalf("%s: spooled content:\n%s", mech, content)
		}
		// Support finds the session by the id in the reply.
		rec := sessionRecord(t, s, m[1])
		for _, want := range []string{"account   jan@firma.cz", "queued    " + m[2] + "  eva@example.org:", "client    127.0.0.1", "tls       TLS"} {
			if !strings.Contains(rec, want) {
				t.Fatalf("session record lacks %q:\n%s", want, rec)
			}
		}
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"wrong password", []string{"--auth-user", "jan@firma.cz", "--auth-password", "spatne", "--from", "jan@firma.cz"},
			"535 5.1.0 SID authentication failed"},
		{"login without domain", []string{"--auth-user", "jan", "--auth-password", e2ePassword, "--from", "jan@firma.cz"},
			"535 5.1.0 SID authentication rejected"},
		{"disabled", []string{"--auth-user", "zakazany@firma.cz", "--auth-password", e2ePassword, "--from", "zakazany@firma.cz"},
			"535 5.1.0 SID authentication rejected access disabled"},
		{"no auth", []string{"--from", "jan@firma.cz"},
			"550 5.1.0 SID authentication failed"},
		{"foreign sender", []string{"--auth-user", "jan@firma.cz", "--auth-password", e2ePassword, "--from", "jan.novak@seznam.cz"},
			"550 5.1.0 <jan.novak@seznam.cz> sender rejected"},
		{"other hosted domain", []string{"--auth-user", "jan@firma.cz", "--auth-password", e2ePassword, "--from", "info@jina.cz"},
			"550 5.1.0 <info@jina.cz> sender rejected"},
		{"third-level domain", []string{"--auth-user", "jan@firma.cz", "--auth-password", e2ePassword, "--from", "x@praha.firma.cz"},
			"550 5.1.0 <x@praha.firma.cz> sender rejected"},
		{"header From foreign", []string{"--auth-user", "jan@firma.cz", "--auth-password", e2ePassword, "--from", "jan@firma.cz",
			"--header", "From: boss@gmail.com"}, "550 5.1.0 <boss@gmail.com> sender rejected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := swaks(t, append(base, c.args...)...)
			sid := serverLine(t, out, c.want)
			if queuedRe.MatchString(out) {
				t.Fatalf("queued despite rejection:\n%s", out)
			}
			if sid != "" {
				if rec := sessionRecord(t, s, sid); !strings.Contains(rec, sid) {
					t.Fatalf("session %s not found:\n%s", sid, rec)
				}
			}
		})
	}
	// The alias domain is accepted.
	out := swaks(t, append(base, "--auth-user", "jan@firma.cz", "--auth-password", e2ePassword, "--from", "obchod@firma.com")...)
	if !queuedRe.MatchString(out) {
		t.Fatalf("alias sender not queued:\n%s", out)
	}
}

// TestPythonSmtplib: implicit TLS on the submissions port with Python's
// smtplib, which sends without Message-ID and Date, so the server adds them.
func TestPythonSmtplib(t *testing.T) {
	py := testutil.NeedTool(t, "python3")
	s := newServer(t, "")
	s.setupFirma()
	s.start()
	host, port, _ := net.SplitHostPort(s.subs)
	script := fmt.Sprintf(`
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP_SSL(%q, %s, context=ctx, timeout=20) as c:
    c.login("jan@firma.cz", %q)
    msg = "From: Jan <jan@firma.cz>\r\nTo: eva@example.org\r\nSubject: z Pythonu\r\n\r\nradek 1\r\n.tecka na zacatku\r\n"
    refused = c.sendmail("jan@firma.cz", ["eva@example.org"], msg)
    code, resp = c.noop()
    print("refused", refused)
    try:
        c.sendmail("petr@gmail.com", ["eva@example.org"], msg)
    except smtplib.SMTPSenderRefused as e:
        print("sender-refused", e.smtp_code, e.smtp_error.decode())
`, host, port, e2ePassword)
	cmd := exec.Command(py, "-c", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "refused {}") || !strings.Contains(string(out), "sender-refused 550 5.1.0 <petr@gmail.com> sender rejected") {
		t.Fatalf("python output:\n%s", out)
	}
	// Find the queued message through the session log.
	ids := spooled(t, s)
	if len(ids) != 1 {
		t.Fatalf("spool holds %d messages", len(ids))
	}
	content, _ := os.ReadFile(s.spoolFile(ids[0]))
	for _, want := range []string{"with ESMTPSA id ", "Message-ID: <" + ids[0] + "@mail.e2e.test>", "\r\nDate: ",
		"Subject: z Pythonu\r\n\r\nradek 1\r\n.tecka na zacatku\r\n"} {
		if !strings.Contains(string(content), want) {
			t.Fatalf("spooled content lacks %q:\n%s", want, content)
		}
	}
}

// spooled lists the queue ids in the spool directory.
func spooled(t *testing.T, s *server) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(s.dir, "data", "spool", "*.msg"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range names {
		ids = append(ids, strings.TrimSuffix(filepath.Base(n), ".msg"))
	}
	return ids
}

// TestCurl: curl's SMTP client with --ssl-reqd (STARTTLS) and AUTH.
func TestCurl(t *testing.T) {
	curl := testutil.NeedTool(t, "curl")
	s := newServer(t, "")
	s.setupFirma()
	s.start()
	mail := filepath.Join(t.TempDir(), "mail.txt")
	os.WriteFile(mail, []byte("From: jan@firma.com\r\nTo: eva@example.org\r\nSubject: curl\r\n\r\nfrom curl\r\n"), 0o600)
	out, err := exec.Command(curl, "-sS", "-v", "--ssl-reqd", "-k", "smtp://"+s.sub,
		"--mail-from", "jan@firma.com", "--mail-rcpt", "eva@example.org",
		"--user", "jan@firma.cz:"+e2ePassword, "-T", mail).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	m := queuedRe.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("curl: not queued:\n%s", out)
	}
	content, _ := os.ReadFile(s.spoolFile(m[2]))
	if !strings.Contains(string(content), "\r\n\r\nfrom curl\r\n") {
		t.Fatalf("content:\n%s", content)
	}
}

// TestCrashKeepsAcceptedMail: a message that got 250 survives SIGKILL; one
// whose DATA was cut off by the kill leaves nothing behind (SPEC R15).
func TestCrashKeepsAcceptedMail(t *testing.T) {
	s := newServer(t, "")
	s.setupFirma()
	s.start()

	accepted := openRaw(t, s.subs, nil, true)
	accepted.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	reply := accepted.send("jan@firma.cz", "eva@example.org", "From: jan@firma.cz\r\nSubject: accepted\r\n\r\nACCEPTED-BODY\r\n")
	m := queuedRe.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("not queued: %q", reply)
	}
	qid := m[2]

	cut := openRaw(t, s.subs, nil, true)
	cut.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	cut.expect("MAIL FROM:<jan@firma.cz>", "250 ")
	cut.expect("RCPT TO:<eva@example.org>", "250 ")
	cut.expect("DATA", "354 ")
	io.WriteString(cut.nc, "From: jan@firma.cz\r\nSubject: cut\r\n\r\nCUT-BODY "+strings.Repeat("x", 20000)+"\r\n")
	time.Sleep(200 * time.Millisecond) // let the server write part of it to tmp/

	s.kill()
	s.start()
	defer s.interrupt()

	if !strings.Contains(s.log.String(), "messages=") {
		t.Fatalf("no spool load line:\n%s", s.log)
	}
	content, err := os.ReadFile(s.spoolFile(qid))
	if err != nil {
		t.Fatalf("accepted message lost: %v", err)
	}
	if !strings.Contains(string(content), "ACCEPTED-BODY") {
		t.Fatalf("accepted message damaged:\n%s", content)
	}
	err = filepath.Walk(filepath.Join(s.dir, "data", "spool"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), "CUT-BODY") {
			t.Errorf("cut-off message left in %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.log.String(), "damaged message") {
		t.Fatalf("spool reported damage:\n%s", s.log)
	}
}

// TestCorruptSpoolEntry: a damaged spool file is moved aside at start, and
// the server starts anyway.
func TestCorruptSpoolEntry(t *testing.T) {
	s := newServer(t, "")
	spoolDir := filepath.Join(s.dir, "data", "spool")
	os.MkdirAll(spoolDir, 0o750)
	bad := "33lrhkj7b47fao68fvg29102.msg"
	os.WriteFile(filepath.Join(spoolDir, bad), []byte("submitd-spool 1\n{\"id\":\"33lrhkj7b47fao68fvg29102\"}\ntruncat"), 0o640)
	s.start()
	defer s.interrupt()
	if _, err := os.Stat(filepath.Join(spoolDir, "corrupt", bad)); err != nil {
		t.Fatalf("damaged entry not moved aside: %v\n%s", err, s.log)
	}
	if !strings.Contains(s.log.String(), "damaged message moved aside") {
		t.Fatalf("no log line:\n%s", s.log)
	}
}
