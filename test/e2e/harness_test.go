// Package e2e drives the built submitd binary with real clients: swaks,
// Python's smtplib, curl, and the server's own CLI.
package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// server is a submitd process with its own data_dir, config and ports.
type server struct {
	t       testing.TB
	bin     string
	dir     string
	config  string
	smtp    string
	sub     string
	subs    string
	cmd     *exec.Cmd
	log     *syncBuffer
	exited  chan struct{}
	exitErr error
}

// newServer writes a config with fresh loopback ports and extra TOML
// appended (it may add tables, e.g. "[guard]\nmax_failures = 3"), and
// prepares the data directory. Outbound delivery goes to a closed loopback
// port, so accepted mail stays in the spool unless extra says otherwise.
func newServer(t testing.TB, extra string) *server {
	t.Helper()
	s := &server{t: t, bin: buildBinary(t), dir: t.TempDir(),
		smtp: freeAddr(t), sub: freeAddr(t), subs: freeAddr(t)}
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
	if err := os.WriteFile(s.config, []byte(cfg+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.kill() })
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
	s.log = &syncBuffer{}
	s.cmd = exec.Command(s.bin, "serve", "-config", s.config)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.exitErr = s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(s.log.String(), "submitd started") {
		select {
		case <-s.exited:
			s.t.Fatalf("submitd serve exited: %v\n%s", s.exitErr, s.log)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("submitd serve did not start:\n%s", s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL, as a crash would.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// stop sends SIGINT and waits for a clean exit.
func (s *server) stop() {
	s.t.Helper()
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.t.Fatalf("submitd did not stop on SIGINT:\n%s", s.log)
	}
	if s.exitErr != nil {
		s.t.Fatalf("submitd exited with %v:\n%s", s.exitErr, s.log)
	}
	s.cmd = nil
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
