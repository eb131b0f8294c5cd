package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

// The tests in this file drive the built submitd binary: they submit mail
// over SMTP, let it deliver through a DNS server and SMTP receivers the test
// starts on loopback, and use "submitd queue" the way an operator would.

// newQueueServer makes a server (not yet started) that delivers through the
// DNS server at dnsAddr to remote port rport, with plaintext AUTH allowed on
// the submission listener, and creates the domain firma.test with the
// account jan@firma.test and a DKIM key. It returns the key's TXT record in
// zone-file syntax, as "submitd dkim generate" printed it.
func newQueueServer(t *testing.T, dnsAddr string, rport int) (s *server, dkimRecord string) {
	t.Helper()
	s = newServer(t, fmt.Sprintf(`[listener.submission]
allow_plaintext_auth = true
[queue]
warn_after = "0s"
[delivery]
resolver = %q
port = %d
connect_timeout = "5s"
timeout = "60s"
`, dnsAddr, rport))
	s.mustCLI("", "domain", "add", "firma.test")
	s.mustCLI("secret-pw\n", "account", "add", "jan@firma.test")
	return s, strings.TrimSpace(s.mustCLI("", "dkim", "generate", "firma.test"))
}

// qSend submits one message as jan@firma.test to s's submission listener
// and returns its queue id from the 250 reply.
func qSend(t *testing.T, s *server, to []string, body string) string {
	t.Helper()
	c, err := smtp.Dial(s.sub)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "jan@firma.test", "secret-pw")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("jan@firma.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(wc, body)
	resp, err := wc.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	c.Quit()
	return qQueueID(t, resp.StatusText)
}

var qIDRe = regexp.MustCompile(`queued as ([0-9a-v]{24})`)

func qQueueID(t *testing.T, reply string) string {
	t.Helper()
	m := qIDRe.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("no queue id in reply %q", reply)
	}
	return m[1]
}

// qStall is a receiving MX that, while stalling, takes a message's data
// and then does not answer, like a server that hangs after the final dot;
// otherwise it accepts.
type qStall struct {
	*testutil.Receiver
	stall   atomic.Bool
	stalled atomic.Int32
	inData  chan struct{} // one value each time a stalled DATA is reached
}

func qNewStall(t *testing.T, ln net.Listener) *qStall {
	st := &qStall{inData: make(chan struct{}, 16)}
	st.stall.Store(true)
	release := make(chan struct{})
	st.Receiver = testutil.NewReceiver(t, testutil.ReceiverOptions{Listener: ln,
		DataHook: func(testutil.Received) *smtp.SMTPError {
			if !st.stall.Load() {
				return nil
			}
			st.stalled.Add(1)
			st.inData <- struct{}{}
			<-release
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "gave up"}
		}})
	// Registered after the receiver's own cleanup, so it runs first and
	// lets stalled sessions end before the receiver stops.
	t.Cleanup(func() { close(release) })
	return st
}

// qListLine returns the "submitd queue list" line of message id, or "".
func qListLine(s *server, id string) string {
	s.t.Helper()
	out := s.mustCLI("", "queue", "list")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, id+"\t") {
			return l
		}
	}
	return ""
}

// Killed with SIGKILL in the middle of delivering a two-recipient message,
// after one recipient was confirmed and while the other's server had the
// data but had not answered: after a restart only the other recipient is
// tried, and nothing confirmed is delivered twice.
func TestQueueCrashMidDelivery(t *testing.T) {
	dns := testutil.NewDNSServer(t)
	lns := testutil.ListenSamePort(t, "127.0.0.2", "127.0.0.3")
	port := lns[0].Addr().(*net.TCPAddr).Port
	a := testutil.NewReceiver(t, testutil.ReceiverOptions{Listener: lns[0]})
	b := qNewStall(t, lns[1])
	dns.AddMX("a.test", 10, "mx.a.test")
	dns.AddA("mx.a.test", "127.0.0.2")
	dns.AddMX("b.test", 10, "mx.b.test")
	dns.AddA("mx.b.test", "127.0.0.3")

	s, dkimRecord := newQueueServer(t, dns.Addr, port)
	dns.Add(t, dkimRecord)
	s.start()
	id := qSend(t, s, []string{"eva@a.test", "petr@b.test"},
		"From: Jan <jan@firma.test>\r\nTo: eva@a.test, petr@b.test\r\nSubject: crash test\r\n\r\nBody.\r\n")

	// b.test has the data and stalls; a.test has answered 250.
	select {
	case <-b.inData:
	case <-time.After(30 * time.Second):
		t.Fatalf("b.test never got the data:\n%s", s.log)
	}
	testutil.WaitFor(t, 30*time.Second, "eva@a.test confirmed in the queue state", func() bool {
		return strings.Contains(qListLine(s, id), "eva@a.test:delivered")
	})
	s.kill()

	line := qListLine(s, id)
	if !strings.Contains(line, "eva@a.test:delivered") || !strings.Contains(line, "petr@b.test:pending") {
		t.Fatalf("queue list after the crash: %q", line)
	}

	b.stall.Store(false)
	s.start()
	testutil.WaitFor(t, 30*time.Second, "the message to leave the queue", func() bool { return qListLine(s, id) == "" })

	if msgs := a.Messages(); len(msgs) != 1 {
		t.Errorf("a.test got the message %d times, want once", len(msgs))
	}
	acc, stalled := b.Messages(), b.stalled.Load()
	if len(acc) != 1 || strings.Join(acc[0].Rcpts, ",") != "petr@b.test" || stalled != 1 {
		t.Errorf("b.test accepted %d (rcpts %v), stalled %d; want 1 for petr@b.test after 1 stalled", len(acc), acc, stalled)
	}
	if !bytes.Contains(acc[0].Data, []byte("Subject: crash test")) {
		t.Errorf("b.test got:\n%s", acc[0].Data)
	}
	if strings.Contains(s.log.String(), "rcpt=eva@a.test") {
		t.Errorf("after the restart eva@a.test was tried again:\n%s", s.log)
	}

	// Both copies carry the one signature made before the first attempt
	// (SPEC R17), and it verifies against the published key.
	msgs := a.Messages()
	if len(msgs) == 0 || len(acc) == 0 {
		return
	}
	sigA, sigB := qDKIMHeader(msgs[0].Data), qDKIMHeader(acc[0].Data)
	if sigA == "" || sigA != sigB {
		t.Errorf("DKIM-Signature of a.test's copy %q, of b.test's %q; want one and the same", sigA, sigB)
	}
	for name, data := range map[string][]byte{"a.test": msgs[0].Data, "b.test": acc[0].Data} {
		vs, err := msgauth.VerifyWithOptions(bytes.NewReader(data), &msgauth.VerifyOptions{LookupTXT: dns.LookupTXT})
		if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "firma.test" {
			t.Errorf("DKIM verification of %s's copy: %v %+v", name, err, vs)
		}
	}
}

// qDKIMHeader returns the DKIM-Signature field a message starts with.
func qDKIMHeader(data []byte) string {
	if !bytes.HasPrefix(data, []byte("DKIM-Signature:")) {
		return ""
	}
	end := 0
	for {
		i := bytes.Index(data[end:], []byte("\r\n"))
		if i < 0 {
			return string(data)
		}
		end += i + 2
		if end >= len(data) || (data[end] != ' ' && data[end] != '\t') {
			return string(data[:end])
		}
	}
}

// qSmtpSink finds Postfix's smtp-sink: $SMTP_SINK, else on PATH, else
// /usr/sbin/smtp-sink. For a binary unpacked from the Debian package (not
// installed), its libraries are beside it in usr/lib/postfix.
func qSmtpSink(t *testing.T) (string, []string) {
	t.Helper()
	p := os.Getenv("SMTP_SINK")
	if p == "" {
		if lp, err := exec.LookPath("smtp-sink"); err == nil {
			p = lp
		} else if _, err := os.Stat("/usr/sbin/smtp-sink"); err == nil {
			p = "/usr/sbin/smtp-sink"
		}
	}
	if p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("required tool smtp-sink (Debian package postfix) not found: set SMTP_SINK or put it on PATH (CI=true)")
		}
		t.Skip("skipping: tool smtp-sink (Debian package postfix) not found; set SMTP_SINK or put it on PATH")
	}
	env := os.Environ()
	lib := filepath.Join(filepath.Dir(filepath.Dir(p)), "lib", "postfix")
	if _, err := os.Stat(lib); err == nil {
		env = append(env, "LD_LIBRARY_PATH="+lib+":"+os.Getenv("LD_LIBRARY_PATH"))
	}
	return p, env
}

// qSink is one smtp-sink process dumping each transaction to a directory.
type qSink struct {
	dump string
	*proc
}

func qStartSink(t *testing.T, bin string, env []string, addr string, extra ...string) *qSink {
	t.Helper()
	k := &qSink{dump: t.TempDir()}
	args := []string{}
	if os.Geteuid() == 0 {
		// smtp-sink refuses to run as root without dropping to a user.
		args = append(args, "-u", "root")
	}
	args = append(args, "-d", filepath.Join(k.dump, "m."))
	args = append(args, extra...)
	args = append(args, addr, "100")
	k.proc = startProc(t, bin, "", env, args...)
	testutil.WaitFor(t, 30*time.Second, "smtp-sink listening on "+addr, func() bool {
		select {
		case <-k.exited:
			t.Fatalf("smtp-sink exited: %s", k.log)
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return k
}

// messages returns the dumped transactions.
func (k *qSink) messages(t *testing.T) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(k.dump, "m.*"))
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// Postfix's smtp-sink is the receiving MX for a message swaks submits: one
// sink accepts, one answers RCPT with 4xx (-r) and one with 5xx (-f). The
// accepting one gets the message, the 5xx recipient is reported to the
// sender with the sink's reply, the 4xx one stays deferred until "submitd
// queue retry" after its sink starts accepting.
func TestQueueSmtpSink(t *testing.T) {
	sink, env := qSmtpSink(t)
	swaks := testutil.NeedTool(t, "swaks")
	dns := testutil.NewDNSServer(t)
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	lns := testutil.ListenSamePort(t, ips...)
	port := lns[0].Addr().(*net.TCPAddr).Port
	for i, d := range []string{"ok.test", "soft.test", "hard.test", "firma.test"} {
		dns.AddMX(d, 10, "mx."+d)
		dns.AddA("mx."+d, ips[i])
	}
	// The sender's own MX, for the report, is a Go receiver; the three
	// recipient MXs are smtp-sink on the addresses freed here.
	firma := testutil.NewReceiver(t, testutil.ReceiverOptions{Listener: lns[3]})
	for _, ln := range lns[:3] {
		ln.Close()
	}
	addr := func(ip string) string { return fmt.Sprintf("%s:%d", ip, port) }
	ok := qStartSink(t, sink, env, addr(ips[0]))
	soft := qStartSink(t, sink, env, addr(ips[1]), "-r", "RCPT", "-b", "451 4.2.0 greylisted, come back later")
	hard := qStartSink(t, sink, env, addr(ips[2]), "-f", "RCPT", "-B", "550 5.1.1 <nobody@hard.test>: user unknown")

	s, _ := newQueueServer(t, dns.Addr, port)
	s.start()
	out, err := exec.Command(swaks, "--server", s.sub, "--ehlo", "client.test",
		"--auth", "PLAIN", "--auth-user", "jan@firma.test", "--auth-password", "secret-pw",
		"--from", "jan@firma.test", "--to", "eva@ok.test,petr@soft.test,nobody@hard.test",
		"--header", "Subject: smtp-sink e2e", "--body", "Hello from swaks.").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	id := qQueueID(t, string(out))

	testutil.WaitFor(t, 30*time.Second, "the report to the sender", func() bool { return len(firma.Messages()) > 0 })
	testutil.WaitFor(t, 30*time.Second, "eva@ok.test delivered", func() bool { return len(ok.messages(t)) > 0 })
	got := ok.messages(t)
	if len(got) != 1 || !strings.Contains(got[0], "X-Rcpt-Args: <eva@ok.test>") || strings.Contains(got[0], "X-Rcpt-Args: <petr") ||
		!strings.Contains(got[0], "Subject: smtp-sink e2e") || !strings.Contains(got[0], "X-Mail-Args: <jan@firma.test>") ||
		!strings.Contains(got[0], "\nDKIM-Signature: ") || !strings.Contains(got[0], " d=firma.test;") {
		t.Fatalf("ok.test sink got:\n%s", strings.Join(got, "\n----\n"))
	}
	if n := len(hard.messages(t)); n != 0 {
		t.Errorf("hard.test sink stored %d messages", n)
	}

	rep := firma.Messages()
	if len(rep) != 1 || rep[0].From != "" {
		t.Fatalf("sender got %d reports (first from %q), want 1 from <>", len(rep), rep[0].From)
	}
	data := string(rep[0].Data)
	for _, want := range []string{
		"report-type=delivery-status",
		"Final-Recipient: rfc822; nobody@hard.test",
		"Action: failed",
		"Status: 5.1.1",
		"Diagnostic-Code: smtp; 550 5.1.1 <nobody@hard.test>: user unknown",
		"Remote-MTA: dns; mx.hard.test",
		"Subject: smtp-sink e2e",
	} {
		if !strings.Contains(data, want) {
			t.Errorf("report lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(data, "Final-Recipient: rfc822; petr@soft.test") || strings.Contains(data, "Final-Recipient: rfc822; eva@ok.test") {
		t.Errorf("report names a recipient that did not fail:\n%s", data)
	}

	line := qListLine(s, id)
	for _, want := range []string{"<jan@firma.test>", "eva@ok.test:delivered", "petr@soft.test:deferred(1)", "nobody@hard.test:failed"} {
		if !strings.Contains(line, want) {
			t.Fatalf("queue list line %q lacks %q", line, want)
		}
	}
	show := s.mustCLI("", "queue", "show", id)
	for _, want := range []string{"451 4.2.0 greylisted, come back later", "mx.soft.test", "Subject: smtp-sink e2e", "reported to sender"} {
		if !strings.Contains(show, want) {
			t.Errorf("queue show lacks %q:\n%s", want, show)
		}
	}

	// The greylisting sink now accepts; an operator retries at once.
	soft.kill()
	soft = qStartSink(t, sink, env, addr(ips[1]))
	if out := s.mustCLI("", "queue", "retry", id); !strings.Contains(out, "retry scheduled for "+id) {
		t.Fatalf("queue retry said %q", out)
	}
	testutil.WaitFor(t, 30*time.Second, "the message to leave the queue", func() bool { return qListLine(s, id) == "" })
	got = soft.messages(t)
	if len(got) != 1 || !strings.Contains(got[0], "X-Rcpt-Args: <petr@soft.test>") {
		t.Fatalf("soft.test sink got:\n%s", strings.Join(got, "\n----\n"))
	}
	if n := len(ok.messages(t)); n != 1 {
		t.Errorf("ok.test got the message %d times", n)
	}
	if n := len(firma.Messages()); n != 1 {
		t.Errorf("sender got %d reports", n)
	}
}
