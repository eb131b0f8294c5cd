package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// handoverConfig lets one client send as fast as the handover tests do and
// AUTH without TLS on submission, so that a session costs little CPU on a
// busy machine and the greeting wait measures the server, not TLS. The
// sessions that waited in the backlog log in at once when the new process
// takes over, its credential cache empty: more password checks under way
// from one IP than the guard's max_failures are refused (SPEC R11), so the
// limit is raised.
const handoverConfig = `[guard]
max_failures = 1000
[listener.submission]
allow_plaintext_auth = true
[limits]
max_connections_per_ip = 500
[sending]
messages_per_hour = 100000
recipients_per_hour = 100000
recipients_per_day = 100000
new_recipients_per_day = 100000
[sending.domain]
messages_per_hour = 100000
recipients_per_hour = 100000
recipients_per_day = 100000
new_recipients_per_day = 100000
`

// newHandoverServer is newServer with handoverConfig, delivering to rcv.
// AUTH requests wait for a hash worker rather than get 454 while a new
// process, its credential cache empty, hashes the first logins of the
// sessions that queued up during the handover.
func newHandoverServer(t *testing.T, rcv *testutil.Receiver) *server {
	s := newServer(t, fmt.Sprintf("[delivery]\nsmarthost = %q\nsmarthost_tls = \"none\"\n", rcv.Addr)+handoverConfig)
	b, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.Replace(string(b), "[auth]\n", "[auth]\nhash_queue = 1000\nhash_wait = \"60s\"\n", 1))
	if err := os.WriteFile(s.config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// traffic is a mail client that connects and sends a message every
// interval, each in a session of its own, and keeps what happened.
type traffic struct {
	t    *testing.T
	addr string

	mu sync.Mutex
	// acked are the tokens of the messages answered 250 at the final dot.
	acked map[string]bool
	// tried are the tokens of every message sent, acknowledged or not.
	tried map[string]bool
	// refused counts connections the kernel refused.
	refused int
	// failed lists sessions that ended without a 250 or a 4xx (a 421 is
	// the server asking the client to come back, and it does; so is a 454
	// while the new process's password checks catch up, SPEC R16a).
	failed []string
	// retried counts sessions that got 4xx and were tried again.
	retried int
	// greetings are when each session started and how long it waited
	// for its 220.
	greetings []greeting

	stop chan struct{}
	wg   sync.WaitGroup
	seq  int
}

// greeting is one session's wait from connect to its 220.
type greeting struct {
	at   time.Time
	wait time.Duration
}

// startTraffic starts sending to addr every interval until stopTraffic.
func startTraffic(t *testing.T, addr string, interval time.Duration) *traffic {
	tr := &traffic{t: t, addr: addr, acked: map[string]bool{}, tried: map[string]bool{}, stop: make(chan struct{})}
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
				tr.wg.Add(1)
				go func() {
					defer tr.wg.Done()
					tr.send()
				}()
			}
		}
	}()
	t.Cleanup(tr.halt)
	return tr
}

// halt stops sending and waits for the sessions under way.
func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// ackedCount is how many messages were acknowledged so far.
func (tr *traffic) ackedCount() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.acked)
}

// waitAcked waits until n more messages than now have been acknowledged.
func (tr *traffic) waitAcked(n int) {
	tr.t.Helper()
	want := tr.ackedCount() + n
	testutil.WaitFor(tr.t, 60*time.Second, fmt.Sprintf("%d acknowledged messages", want), func() bool {
		return tr.ackedCount() >= want
	})
}

// send delivers one message, trying again with a new token after a 421,
// as a mail client does.
func (tr *traffic) send() {
	for range 5 {
		tr.mu.Lock()
		tr.seq++
		token := fmt.Sprintf("handover-%d", tr.seq)
		tr.tried[token] = true
		tr.mu.Unlock()
		err := tr.session(token)
		tr.mu.Lock()
		switch {
		case err == nil:
			tr.acked[token] = true
		case errors.Is(err, syscall.ECONNREFUSED):
			tr.refused++
		case errors.Is(err, errRetry):
			tr.retried++
		default:
			tr.failed = append(tr.failed, err.Error())
		}
		tr.mu.Unlock()
		if !errors.Is(err, errRetry) {
			return
		}
	}
}

// errRetry is a temporary reply: 421, the server is going away, or 454,
// the password checks are busy; the client comes back.
var errRetry = errors.New("temporary failure")

// session runs one SMTP session that sends the message token.
func (tr *traffic) session(token string) error {
	start := time.Now()
	nc, err := net.DialTimeout("tcp", tr.addr, 30*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(nc)
	reply := func(line string) (string, error) {
		if line != "" {
			if _, err := io.WriteString(nc, line+"\r\n"); err != nil {
				return "", err
			}
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "", fmt.Errorf("after %q: %w", line, err)
			}
			if len(l) < 4 || l[3] != '-' {
				l = strings.TrimRight(l, "\r\n")
				if strings.HasPrefix(l, "421") || strings.HasPrefix(l, "454") {
					return l, errRetry
				}
				return l, nil
			}
		}
	}
	greet, err := reply("")
	if err != nil {
		return err
	}
	tr.mu.Lock()
	tr.greetings = append(tr.greetings, greeting{at: start, wait: time.Since(start)})
	tr.mu.Unlock()
	steps := []struct{ line, want string }{
		{"EHLO client.e2e.test", "250"},
		{authPlain("jan@firma.cz", e2ePassword), "235"},
		{"MAIL FROM:<jan@firma.cz>", "250"},
		{"RCPT TO:<eva@example.org>", "250"},
		{"DATA", "354"},
		{"From: <jan@firma.cz>\r\nTo: <eva@example.org>\r\nSubject: " + token + "\r\n\r\n" + token + "\r\n.", "250"},
	}
	if !strings.HasPrefix(greet, "220") {
		return fmt.Errorf("greeting %q", greet)
	}
	for _, s := range steps {
		got, err := reply(s.line)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(got, s.want) {
			return fmt.Errorf("%.20q: got %q", s.line, got)
		}
	}
	reply("QUIT")
	return nil
}

// longestGreeting is the longest wait for a 220 of the sessions that
// started between from and to.
func (tr *traffic) longestGreeting(from, to time.Time) time.Duration {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var longest time.Duration
	for _, g := range tr.greetings {
		if !g.at.Before(from) && !g.at.After(to) {
			longest = max(longest, g.wait)
		}
	}
	return longest
}

// check stops the traffic and asserts what a handover promises: no
// connection refused, no session failing otherwise than with a 421, and
// every acknowledged message delivered exactly once (a message not
// acknowledged may have been delivered at most once).
func (tr *traffic) check(rcv *testutil.Receiver) {
	tr.t.Helper()
	tr.halt()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.refused > 0 {
		tr.t.Errorf("%d connections refused", tr.refused)
	}
	if len(tr.failed) > 0 {
		tr.t.Errorf("%d sessions failed, first: %s", len(tr.failed), tr.failed[0])
	}
	count := func() map[string]int {
		got := map[string]int{}
		for _, m := range rcv.Messages() {
			for _, tok := range handoverTokenRe.FindAllString(string(m.Data), 1) {
				got[tok]++
			}
		}
		return got
	}
	testutil.WaitFor(tr.t, 60*time.Second, fmt.Sprintf("delivery of the %d acknowledged messages", len(tr.acked)), func() bool {
		got := count()
		for tok := range tr.acked {
			if got[tok] == 0 {
				return false
			}
		}
		return true
	})
	for tok, n := range count() {
		switch {
		case !tr.tried[tok]:
			tr.t.Errorf("delivered %q, which was never sent", tok)
		case n > 1:
			tr.t.Errorf("%s delivered %d times", tok, n)
		}
	}
	tr.t.Logf("%d messages acknowledged and delivered once, %d sessions got 421 or 454 and were retried, 0 refused", len(tr.acked), tr.retried)
}

// handoverTokenRe finds a message's token in its body.
var handoverTokenRe = regexp.MustCompile(`handover-[0-9]+`)

// takenOver matches "submitd restart"'s last line.
var takenOver = regexp.MustCompile(`process ([0-9]+) serves`)

// restartVia runs "submitd restart" and returns the new server's pid and
// the longest greeting wait of the sessions that started meanwhile.
func restartVia(t *testing.T, s *server, tr *traffic) (int, time.Duration) {
	t.Helper()
	before := time.Now()
	out := s.mustCLI("", "restart")
	after := time.Now()
	m := takenOver.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submitd restart said:\n%s", out)
	}
	pid, _ := strconv.Atoi(m[1])
	// The sessions that started during the handover must have their
	// greeting before the wait is read.
	tr.waitAcked(20)
	return pid, tr.longestGreeting(before, after)
}

// stopPid ends the server process pid with SIGTERM and waits until it is
// gone; a process started by a handover is no child of the test.
func stopPid(t *testing.T, pid int) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("server %d did not stop within 30s of SIGTERM", pid)
	}
}

// gone reports whether process pid has exited.
func gone(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }

// TestRestartHandover: a client connects and sends 20 times a second
// while "submitd restart" replaces the server twice (the second time the
// process a restart started restarts itself). No connection is refused,
// every acknowledged message reaches the receiver once, the old processes
// exit, and the audit log names each restart.
func TestRestartHandover(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	s := newHandoverServer(t, rcv)
	s.setupFirma()
	s.mustCLI("boss-password\n", "staff", "add", "boss", "-role", "admin")
	token := strings.TrimSpace(s.mustCLI("", "staff", "token", "boss"))
	s.start()
	first := s.cmd.Process.Pid
	tr := startTraffic(t, s.sub, 50*time.Millisecond)
	tr.waitAcked(20)

	second, wait1 := restartVia(t, s, tr)
	t.Cleanup(func() { stopPid(t, second) })
	if second == first {
		t.Fatalf("restart reports the same process %d", first)
	}
	testutil.WaitFor(t, 30*time.Second, "the first process to exit", func() bool { return gone(first) })
	third, wait2 := restartVia(t, s, tr)
	t.Cleanup(func() { stopPid(t, third) })
	testutil.WaitFor(t, 30*time.Second, "the second process to exit", func() bool { return gone(second) })
	tr.check(rcv)
	t.Logf("longest wait for a greeting during a handover: %v, %v", wait1, wait2)

	status, body, raw := apiCurl(t, s, token, "/api/v1/audit?action=server.restart")
	items, _ := body["items"].([]any)
	if status != 200 || len(items) != 2 || items[1].(map[string]any)["target"] != fmt.Sprintf("pid:%d", first) {
		t.Errorf("audit: %d %s", status, raw)
	}
}

// TestSocketActivation: "submitd serve" started as systemd starts a
// socket-activated service, its four sockets bound by the test and passed
// as descriptors 3 to 6 with LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES,
// serves on them rather than on the addresses in its config, tells
// $NOTIFY_SOCKET it is ready, and hands over under traffic with SIGUSR2
// like "submitd restart": no refused connection, every acknowledged
// message delivered once, and the new process tells the service manager
// it is the main process.
func TestSocketActivation(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	s := newHandoverServer(t, rcv)
	s.setupFirma()
	configured := s.sub

	names := []string{"smtp", "submission", "submissions", "admin"}
	var files []*os.File
	addrs := map[string]string{}
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close() // the socket stays open through f
		files = append(files, f)
		addrs[name] = ln.Addr().String()
	}
	s.smtp, s.sub, s.subs, s.admin = addrs["smtp"], addrs["submission"], addrs["submissions"], addrs["admin"]

	notify := listenNotify(t)
	// LISTEN_PID must be the pid of the process that serves: the shell
	// sets it to its own and execs submitd, which keeps the pid.
	env := append(procEnv(), "LISTEN_FDS=4", "LISTEN_FDNAMES="+strings.Join(names, ":"), "NOTIFY_SOCKET="+notify.path)
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" serve -config "$1"`, s.bin, s.config)
	cmd.Env = env
	cmd.ExtraFiles = files
	s.proc = startCmd(t, cmd)
	for _, f := range files {
		f.Close()
	}
	first := s.cmd.Process.Pid
	notify.expect(t, "READY=1", fmt.Sprintf("MAINPID=%d", first))

	if c, err := net.DialTimeout("tcp", configured, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("the configured address %s is served too; only the passed sockets should be", configured)
	}
	// The passed admin socket serves the API.
	if out, _ := exec.Command("curl", "-s", "http://"+s.admin+"/api/v1/me").CombinedOutput(); !strings.Contains(string(out), "error") {
		t.Errorf("admin socket: %s", out)
	}

	tr := startTraffic(t, s.sub, 50*time.Millisecond)
	tr.waitAcked(20)
	before := time.Now()
	if err := syscall.Kill(first, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	moved := notify.expect(t, "MAINPID=")
	second, err := strconv.Atoi(strings.TrimPrefix(moved, "MAINPID="))
	if err != nil || second == first {
		t.Fatalf("the old process named main pid %q", moved)
	}
	t.Cleanup(func() { stopPid(t, second) })
	notify.expect(t, "READY=1", fmt.Sprintf("MAINPID=%d", second))
	after := time.Now()
	tr.waitAcked(20)
	testutil.WaitFor(t, 30*time.Second, "the first process to exit", func() bool { return gone(first) })
	tr.check(rcv)
	t.Logf("longest wait for a greeting during the handover: %v", tr.longestGreeting(before, after))
}

// notifySocket is a stand-in for systemd's $NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

// listenNotify opens a notification socket in a short temporary path
// (unix socket paths are limited to 107 bytes).
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{path: path, conn: c}
}

// expect reads messages until one has every line of want (a line ending
// in "=" matches any value) and returns the line that matched want's
// first entry.
func (n *notifySocket) expect(t *testing.T, want ...string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	var seen []string
	for {
		k, err := n.conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification with %q (got %q): %v", want, seen, err)
		}
		msg := string(buf[:k])
		seen = append(seen, msg)
		lines := strings.Split(msg, "\n")
		match := ""
		ok := true
		for i, w := range want {
			found := ""
			for _, l := range lines {
				if l == w || strings.HasSuffix(w, "=") && strings.HasPrefix(l, w) {
					found = l
				}
			}
			if found == "" {
				ok = false
				break
			}
			if i == 0 {
				match = found
			}
		}
		if ok {
			return match
		}
	}
}

// TestRestartBrokenConfig: a restart whose new process cannot start (its
// configuration names a certificate that is not there, which only a
// starting server reads) changes nothing:
// "submitd restart" exits 1 with the reason, the running server goes on
// serving on its sockets, and a restart once the file is mended succeeds.
func TestRestartBrokenConfig(t *testing.T) {
	s := newServer(t, "")
	s.setupFirma()
	s.start()
	good, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, append(good, "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := s.cli("", "restart", "-config", s.config)
	if code != 1 || !strings.Contains(errOut, "failed before it was ready") || !strings.Contains(errOut, "goes on serving") {
		t.Fatalf("restart with a broken config: exit %d\n%s%s", code, out, errOut)
	}
	// The failed process's output reaches the test through a pipe, which
	// may be read after "submitd restart" has returned.
	testutil.WaitFor(t, 10*time.Second, "the log to name the missing certificate", func() bool {
		return strings.Contains(s.log.String(), "/nonexistent/cert.pem")
	})
	c := openRaw(t, s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("QUIT", "221 ")

	if err := os.WriteFile(s.config, good, 0o600); err != nil {
		t.Fatal(err)
	}
	m := takenOver.FindStringSubmatch(s.mustCLI("", "restart"))
	if m == nil {
		t.Fatal("no new process after the file was mended")
	}
	pid, _ := strconv.Atoi(m[1])
	t.Cleanup(func() { stopPid(t, pid) })
	c = openRaw(t, s.subs, nil, true)
	c.expect(authPlain("jan@firma.cz", e2ePassword), "235 ")
	c.expect("QUIT", "221 ")
}
