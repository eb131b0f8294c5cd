package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/config"
	"submitd/internal/password"
	"submitd/internal/testutil"
)

// testConfig is a node on 127.0.0.1:0 ports in a fresh data_dir, relaying
// everything to smarthost.
func testConfig(t testing.TB, smarthost string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Listen.SMTP = "127.0.0.1:0"
	cfg.Listen.Submission = "127.0.0.1:0"
	cfg.Listen.Submissions = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Auth.MinDuration = 0
	cfg.Delivery.Smarthost = smarthost
	cfg.Delivery.SmarthostTLS = "none"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startNode builds and runs a node from cfg with one account,
// jan@firma.test with password "secret-pw"; it stops when the test ends.
func startNode(t *testing.T, cfg *config.Config) *Node {
	t.Helper()
	return startNodeLog(t, cfg, testWriter{t})
}

// startNodeLog is startNode with the node's log written to w.
func startNodeLog(t *testing.T, cfg *config.Config, w io.Writer) *Node {
	t.Helper()
	n, stop := runNodeLog(t, cfg, w, addJan)
	t.Cleanup(stop)
	return n
}

// runNode builds a node from cfg, hands it to prepare (when not nil) and
// runs it; stop ends the run and waits for Run to return, so a test can
// start another node on the same data_dir, as a restart would.
func runNode(t *testing.T, cfg *config.Config, prepare func(*testing.T, *Node)) (n *Node, stop func()) {
	t.Helper()
	return runNodeLog(t, cfg, testWriter{t}, prepare)
}

// runNodeLog is runNode with the node's log written to w.
func runNodeLog(t *testing.T, cfg *config.Config, w io.Writer, prepare func(*testing.T, *Node)) (n *Node, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := New(ctx, cfg, slog.New(slog.NewTextHandler(w, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(t, n)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	return n, func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// addJan adds the domain firma.test and its account jan@firma.test with
// password "secret-pw".
func addJan(t *testing.T, n *Node) {
	t.Helper()
	ctx := context.Background()
	hash, err := password.Hash("argon2id", "secret-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Directory.AddDomain(ctx, "firma.test"); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory.AddAccount(ctx, "jan@firma.test", hash); err != nil {
		t.Fatal(err)
	}
}

// loginJan connects to the node's submission listener with STARTTLS and
// logs in as jan@firma.test; the client is closed when the test ends. The
// certificate is the self-signed one New generated in data_dir.
func loginJan(t *testing.T, n *Node) *smtp.Client {
	t.Helper()
	c := dialSubmission(t, n)
	if err := c.Auth(sasl.NewPlainClient("", "jan@firma.test", "secret-pw")); err != nil {
		t.Fatal(err)
	}
	return c
}

// dialSubmission connects to the node's submission listener with STARTTLS;
// the client is closed when the test ends.
func dialSubmission(t *testing.T, n *Node) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(n.Addr("submission"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testWriter sends the node's log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

var queuedAs = regexp.MustCompile(`queued as ([0-9a-v]{24})`)

func TestNodeAcceptsAndDelivers(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	n := startNode(t, testConfig(t, rcv.Addr))

	for _, name := range []string{"smtp", "submission", "submissions"} {
		addr := n.Addr(name)
		if ap, err := net.ResolveTCPAddr("tcp", addr); err != nil || ap.Port == 0 {
			t.Fatalf("listener %s bound to %q", name, addr)
		}
	}

	c := loginJan(t, n)
	if err := c.Mail("jan@firma.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("petr@example.test", nil); err != nil {
		t.Fatal(err)
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(wc, "From: jan@firma.test\r\nTo: petr@example.test\r\nSubject: hello\r\n\r\nHello from an in-process node.\r\n")
	resp, err := wc.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	c.Quit()
	m := queuedAs.FindStringSubmatch(resp.StatusText)
	if m == nil {
		t.Fatalf("250 reply %q has no queue id", resp.StatusText)
	}
	// The spool holds the message under the id the reply gave, or the queue
	// has already delivered and removed it; either way the smarthost gets it.
	deadline := time.Now().Add(20 * time.Second)
	for len(rcv.Messages()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("message %s never reached the smarthost", m[1])
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := rcv.Messages()[0]
	if got.From != "jan@firma.test" || len(got.Rcpts) != 1 || got.Rcpts[0] != "petr@example.test" {
		t.Errorf("smarthost got MAIL FROM %q RCPT TO %q", got.From, got.Rcpts)
	}
	if !strings.Contains(string(got.Data), "Hello from an in-process node.") || !strings.Contains(string(got.Data), m[1]) {
		t.Errorf("delivered message lacks the body or the queue id %s:\n%s", m[1], got.Data)
	}
}

// A node that cannot bind a listener reports which one and releases data_dir,
// so that a second node on the same data_dir can start.
func TestNodeListenFailureReleasesDataDir(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Listen.Submissions = busy.Addr().String()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	if _, err := New(context.Background(), cfg, log); err == nil || !strings.Contains(err.Error(), "listen.submissions") {
		t.Fatalf("New with a busy port: %v, want a listen.submissions error", err)
	}
	cfg.Listen.Submissions = "127.0.0.1:0"
	n, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("second New on the same data_dir: %v", err)
	}
	n.Close()
}

// The start warns when the limits need more descriptors than the process may
// open, and is silent when they fit.
func TestNodeWarnsAboutFileLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Skip("no RLIMIT_NOFILE:", err)
	}
	for _, tc := range []struct {
		conns int
		warn  bool
	}{
		{int(min(rl.Cur, 1<<30)), true},
		{10, false},
	} {
		cfg := testConfig(t, "127.0.0.1:1")
		cfg.Limits.MaxConnections = tc.conns
		cfg.Queue.Workers = 2
		if !tc.warn && fdNeed(cfg) > rl.Cur {
			t.Logf("RLIMIT_NOFILE %d is below even %d", rl.Cur, fdNeed(cfg))
			continue
		}
		var log bytes.Buffer
		n, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(&log, nil)))
		if err != nil {
			t.Fatal(err)
		}
		n.Close()
		if got := strings.Contains(log.String(), "RLIMIT_NOFILE"); got != tc.warn {
			t.Errorf("max_connections %d under RLIMIT_NOFILE %d: warned %v, want %v\n%s", tc.conns, rl.Cur, got, tc.warn, log.String())
		}
	}
}
