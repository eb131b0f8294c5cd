// Package e2e drives the built submitd binary with real clients: swaks,
// Python's smtplib, curl, and the server's own CLI.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"submitd/internal/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildBinary builds cmd/submitd once for the whole test run.
func buildBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "submitd-e2e-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "submitd")
		cmd := exec.Command("go", "build", "-race", "-o", binPath, "../../cmd/submitd")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	handedOut.mu.Lock()
	defer handedOut.mu.Unlock()
	if handedOut.addrs == nil {
		handedOut.addrs = map[string]bool{}
	}
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		// The kernel may hand a port it just freed out again; a test that
		// asks for three addresses for three listeners must get three.
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
}

// handedOut is every address freeAddr has returned in this test binary.
var handedOut struct {
	// mu guards addrs.
	mu    sync.Mutex
	addrs map[string]bool
}

// proc is one process a test started (submitd, smtp-sink), with its output
// collected.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	log    *testutil.SyncBuffer
	exited chan struct{}
	err    error // how it exited, once exited is closed
}

// procEnv is the environment without SUBMITD_CONFIG, so that only what a
// test passes decides submitd's config file.
func procEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SUBMITD_CONFIG=") {
			env = append(env, kv)
		}
	}
	return env
}

// startProc starts bin with args in dir ("" for the test's own) with env
// (nil for procEnv), and kills it when the test ends if it still runs.
func startProc(t testing.TB, bin, dir string, env []string, args ...string) *proc {
	t.Helper()
	if env == nil {
		env = procEnv()
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	return startCmd(t, cmd)
}

// startCmd starts cmd, its output collected, and kills it when the test
// ends if it still runs.
func startCmd(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, log: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill)
	return p
}

// kill ends the process with SIGKILL, as a crash or power cut would, and
// waits for it; it does nothing when the process has exited already.
func (p *proc) kill() {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and checks for a clean exit.
func (p *proc) interrupt() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("submitd did not stop within 20s of SIGINT:\n%s", p.log)
	}
	if p.err != nil {
		p.t.Errorf("submitd exited with %v after SIGINT:\n%s", p.err, p.log)
	}
	if !strings.Contains(p.log.String(), "msg=stopped") {
		p.t.Errorf("no \"stopped\" log line:\n%s", p.log)
	}
}

// server is a submitd process with its own data_dir, config and ports. The
// embedded proc is the running "submitd serve", once started.
type server struct {
	t      testing.TB
	bin    string
	dir    string
	config string
	smtp   string
	sub    string
	subs   string
	// admin is [admin] listen, where /metrics is served.
	admin string
	*proc
}

// newServer writes a config with fresh loopback ports and extra TOML
// appended (it may add tables, e.g. "[guard]\nmax_failures = 3"), and
// prepares the data directory. Outbound delivery goes to a closed loopback
// port, so accepted mail stays in the spool, unless extra has a [delivery]
// table of its own. The admin server gets a fresh port too, unless extra has
// an [admin] table, and a compromised account is only warned of, unless
// extra has a [contain] table.
func newServer(t testing.TB, extra string) *server {
	t.Helper()
	s := &server{t: t, bin: buildBinary(t), dir: t.TempDir(),
		smtp: freeAddr(t), sub: freeAddr(t), subs: freeAddr(t), admin: freeAddr(t)}
	s.config = filepath.Join(s.dir, "submitd.toml")
	cfg := fmt.Sprintf(`hostname = "mail.e2e.test"
data_dir = %q
[listen]
smtp = %q
submission = %q
submissions = %q
[auth]
min_duration = "0s"
[log]
level = "debug"
`, filepath.Join(s.dir, "data"), s.smtp, s.sub, s.subs)
	if !strings.Contains(extra, "[delivery]") {
		cfg += "[delivery]\nsmarthost = \"127.0.0.1:1\"\nsmarthost_tls = \"none\"\n"
	}
	if !strings.Contains(extra, "[admin]") {
		cfg += fmt.Sprintf("[admin]\nlisten = %q\n", s.admin)
	}
	if !strings.Contains(extra, "[contain]") {
		// The tests mail from one account far more than a customer does;
		// the signals are counted, but a trip only warns.
		cfg += "[contain]\naction = \"warn\"\n"
	}
	if err := os.WriteFile(s.config, []byte(cfg+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// cli runs a submitd subcommand against this server's config.
func (s *server) cli(stdin string, args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), "SUBMITD_CONFIG="+s.config)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("submitd %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// sessionRecord waits for the record of session sid, written by the
// server after the session closed, and returns "submitd session"'s output.
func sessionRecord(t *testing.T, s *server, sid string) string {
	t.Helper()
	var rec string
	testutil.WaitFor(t, 10*time.Second, "the session record of "+sid, func() bool {
		var code int
		rec, _, code = s.cli("", "session", sid)
		return code == 0
	})
	return rec
}

// mustCLI runs a subcommand that must succeed.
func (s *server) mustCLI(stdin string, args ...string) string {
	s.t.Helper()
	out, errOut, code := s.cli(stdin, args...)
	if code != 0 {
		s.t.Fatalf("submitd %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// start runs "submitd serve" and waits until it has started.
func (s *server) start() {
	s.t.Helper()
	s.startWith(s.bin, "serve", "-config", s.config)
}

// startWith runs bin with args, a command that ends by running
// "submitd serve" (such as a shell that lowers a limit first), and waits
// until the server has started.
func (s *server) startWith(bin string, args ...string) {
	s.t.Helper()
	s.proc = startProc(s.t, bin, "", nil, args...)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(s.log.String(), "submitd started") {
		select {
		case <-s.exited:
			s.t.Fatalf("submitd serve exited: %v\n%s", s.err, s.log)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("submitd serve did not start:\n%s", s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spoolFile returns the path of a queued message.
func (s *server) spoolFile(queueID string) string {
	return filepath.Join(s.dir, "data", "spool", queueID+".msg")
}

// setupFirma creates the domain, alias and accounts most tests use.
func (s *server) setupFirma() {
	s.t.Helper()
	s.mustCLI("", "domain", "add", "firma.cz")
	s.mustCLI("", "alias", "add", "firma.com", "firma.cz")
	s.mustCLI("", "domain", "add", "jina.cz")
	s.mustCLI(e2ePassword+"\n", "account", "add", "jan@firma.cz")
	s.mustCLI(e2ePassword+"\n", "account", "add", "zakazany@firma.cz")
	s.mustCLI("", "account", "disable", "zakazany@firma.cz")
}

const e2ePassword = "Tajne-heslo 42"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// authPlain is the AUTH PLAIN command that logs in as login with pw.
func authPlain(login, pw string) string {
	return "AUTH PLAIN " + b64("\x00"+login+"\x00"+pw)
}

// rawConn is a raw SMTP client connection, for what the real clients cannot
// do: send a PROXY header, connect from a chosen address, break off in the
// middle of DATA, or look at the bytes of a refusal.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

// dialRaw connects to addr from local ("" for any), sends prefix (a PROXY
// header) if given, and wraps the connection in TLS when implicit is set. It
// does not read the greeting.
func dialRaw(t *testing.T, addr, local string, prefix []byte, implicit bool) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if len(prefix) > 0 {
		if _, err := nc.Write(prefix); err != nil {
			t.Fatal(err)
		}
	}
	if implicit {
		nc = tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	}
	return &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// openRaw is dialRaw followed by the greeting (which must be 220) and EHLO
// (which must be answered 250).
func openRaw(t *testing.T, addr string, prefix []byte, implicit bool) *rawConn {
	t.Helper()
	c := dialRaw(t, addr, "", prefix, implicit)
	c.expect("", "220 ")
	c.expect("EHLO e2e.test", "250 ")
	return c
}

// line reads one raw line, CRLF included.
func (c *rawConn) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	return l
}

// reply reads a whole reply and returns its last line without CRLF.
func (c *rawConn) reply() string {
	c.t.Helper()
	for {
		l := strings.TrimRight(c.line(), "\r\n")
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// write sends raw text.
func (c *rawConn) write(text string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, text); err != nil {
		c.t.Fatalf("send %q: %v", text, err)
	}
}

// cmd sends a command line and returns the last line of the reply.
func (c *rawConn) cmd(line string) string {
	c.t.Helper()
	c.write(line + "\r\n")
	return c.reply()
}

// expect sends a command line (none when line is "") and checks that the
// reply's last line starts with prefix.
func (c *rawConn) expect(line, prefix string) string {
	c.t.Helper()
	if line != "" {
		c.write(line + "\r\n")
	}
	l := c.reply()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("%q: got %q, want %q…", line, l, prefix)
	}
	return l
}

// send runs MAIL, RCPT and DATA with data (which must end in CRLF) and
// returns the reply to the final dot.
func (c *rawConn) send(from, to, data string) string {
	c.t.Helper()
	c.expect("MAIL FROM:<"+from+">", "250 ")
	c.expect("RCPT TO:<"+to+">", "250 ")
	c.expect("DATA", "354 ")
	c.write(data + ".\r\n")
	return c.reply()
}

// closed checks that the server closed the connection without more output.
func (c *rawConn) closed() {
	c.t.Helper()
	rest, err := io.ReadAll(c.r)
	if len(rest) > 0 || (err != nil && !strings.Contains(err.Error(), "reset")) {
		c.t.Fatalf("connection not closed: read %q, %v", rest, err)
	}
}
