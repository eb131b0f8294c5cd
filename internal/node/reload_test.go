package node

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/emersion/go-smtp"

	"submitd/internal/config"
	"submitd/internal/sending"
	"submitd/internal/systemd"
	"submitd/internal/testutil"
)

// writeConfig writes cfg as a TOML file in dir and returns its path.
func writeConfig(t *testing.T, dir string, cfg *config.Config) string {
	t.Helper()
	path := filepath.Join(dir, "submitd.toml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := toml.NewEncoder(f).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// reloadNode starts a node from a config file, which the test may rewrite
// and reload; it returns the node, the configuration written and the path.
func reloadNode(t *testing.T) (*Node, *config.Config, string) {
	t.Helper()
	cfg := testConfig(t, "127.0.0.1:1")
	path := writeConfig(t, t.TempDir(), cfg)
	loaded, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, loaded)
	n.ConfigPath = path
	return n, cfg, path
}

// sendOne sends one message over c and fails the test unless it is queued.
func sendOne(t *testing.T, c *smtp.Client) {
	t.Helper()
	if err := c.SendMail("jan@firma.test", []string{"petr@example.test"},
		strings.NewReader("From: jan@firma.test\r\nSubject: x\r\n\r\nhello\r\n")); err != nil {
		t.Fatalf("an open session cannot send: %v", err)
	}
}

// A reload puts each package's new settings in force: new connections
// get the new limits at once, an open session goes on with its own, and
// the settings that need a restart are named and left as they were.
func TestReloadSwapsSettings(t *testing.T) {
	n, cfg, path := reloadNode(t)
	open := loginJan(t, n)

	cfg.Limits.MaxConnectionsPerIP = 1
	cfg.Limits.MaxMessageSize = 4096
	cfg.Sending.MessagesPerHour = 7
	cfg.Sending.Domain.RecipientsPerDay = 70
	cfg.Guard.MaxFailures = 3
	cfg.Guard.ExemptNetworks = []string{"192.0.2.0/24"}
	cfg.LoginGuard.MaxFailures = 5
	cfg.Policy.WebmailNetworks = []string{"198.51.100.0/24"}
	cfg.Guard.TrustedProxies = []string{"203.0.113.1"}
	cfg.Admin.MetricsNetworks = []string{"10.0.0.0/8"}
	cfg.Admin.LoginMaxFailures = 4
	cfg.Contain.LimitHits = 99
	cfg.Contain.Action = "warn"
	cfg.Contain.Webhook = "http://127.0.0.1:1/hook"
	cfg.Contain.SupportAddress = "support@firma.test"
	cfg.Queue.RetryMin = config.Duration(time.Minute)
	cfg.Auth.HashWait = config.Duration(3 * time.Second)
	cfg.Replies = map[string]string{"auth_failed": "{sid} wrong password, see the help pages"}
	cfg.Log.Level = "debug"
	cfg.SessionLog.Retention = config.Duration(7 * 24 * time.Hour)
	// Need a restart:
	cfg.Listen.SMTP = "127.0.0.1:1"
	cfg.DataDir = filepath.Join(t.TempDir(), "other")
	cfg.Contain.RiseDays = 3
	writeConfig(t, filepath.Dir(path), cfg)
	oldAuth := n.Authenticator()

	applied, restart, err := n.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"limits.max_connections_per_ip", "limits.max_message_size", "sending.messages_per_hour",
		"sending.domain.recipients_per_day", "guard.max_failures", "guard.exempt_networks", "login_guard.max_failures",
		"policy.webmail_networks", "guard.trusted_proxies", "admin.metrics_networks", "admin.login_max_failures",
		"contain.limit_hits", "contain.action", "contain.webhook", "contain.support_address", "queue.retry_min", "auth.hash_wait", "replies.auth_failed", "sessionlog.retention"} {
		if !slices.Contains(applied, k) {
			t.Errorf("applied %v lacks %s", applied, k)
		}
	}
	// The node's log has no LevelVar here, so the level waits too.
	if want := []string{"contain.rise_days", "data_dir", "listen.smtp", "log.level"}; !slices.Equal(restart, want) {
		t.Errorf("restart = %v, want %v", restart, want)
	}
	for _, k := range restart {
		if slices.Contains(applied, k) {
			t.Errorf("%s is both applied and left for a restart", k)
		}
	}

	// SPEC R14: the open session counts against the new limit of one per
	// IP, so a second connection is refused; the open one goes on.
	if greeting := firstLine(t, n.Addr("submission")); !strings.HasPrefix(greeting, "421 ") {
		t.Errorf("second connection from the IP under max_connections_per_ip = 1 greeted %q, want a 421 refusal", greeting)
	}
	sendOne(t, open)
	open.Quit()
	testutil.WaitFor(t, 10*time.Second, "the closed session to give its slot back", func() bool { return n.Server.Open() == 0 })
	c := loginJan(t, n)
	if ok, size := c.Extension("SIZE"); !ok || size != "4096" {
		t.Errorf("SIZE after the reload = %q, want 4096", size)
	}

	st := n.Server.CurrentSettings()
	if st.Auth != n.Authenticator() || st.Auth == oldAuth {
		t.Error("[auth] hash_wait changed, but the SMTP server did not get a new authenticator")
	}
	if !st.Policy.Webmail[0].Contains(netip.MustParseAddr("198.51.100.7")) || st.TrustedProxies[0] != netip.MustParsePrefix("203.0.113.1/32") {
		t.Errorf("networks not swapped: webmail %v, proxies %v", st.Policy.Webmail, st.TrustedProxies)
	}
	if g := n.Guard.Config(); g.MaxFailures != 3 || !n.Guard.Exempt(netip.MustParseAddr("192.0.2.9")) {
		t.Errorf("guard: max_failures %d, exempt %v", g.MaxFailures, g.Exempt)
	}
	if got := n.LoginGuard.Config().MaxFailures; got != 4 {
		t.Errorf("staff login guard max_failures %d, want 4", got)
	}
	if got := n.Logins.Config().MaxFailures; got != 5 {
		t.Errorf("login_guard max_failures %d, want 5", got)
	}
	acct, dom := n.Sending.Effective(context.Background(), "jan@firma.test", "firma.test")
	if acct[sending.MessagesPerHour] != 7 || dom[sending.RecipientsPerDay] != 70 {
		t.Errorf("sending limits %v / %v, want 7 messages per hour / 70 recipients per day", acct, dom)
	}
	if got := n.CurrentConfig(); got.Listen.SMTP != "127.0.0.1:0" || got.DataDir != n.Config.DataDir || got.Limits.MaxConnectionsPerIP != 1 {
		t.Errorf("configuration in force: listen.smtp %q, data_dir %q, max_connections_per_ip %d",
			got.Listen.SMTP, got.DataDir, got.Limits.MaxConnectionsPerIP)
	}

	// A second reload of the same file applies nothing new and still
	// names what waits for a restart.
	applied, restart, err = n.Reload(context.Background())
	if err != nil || len(applied) != 0 || len(restart) != 4 {
		t.Errorf("second reload: applied %v, restart %v, err %v", applied, restart, err)
	}
}

// firstLine connects to addr and returns the server's first line.
func firstLine(t *testing.T, addr string) string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	l, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil {
		t.Fatalf("read the greeting: %v", err)
	}
	return l
}

// A file that does not parse or validate changes nothing, and the error
// names the file's line.
func TestReloadBadFileChangesNothing(t *testing.T) {
	n, cfg, path := reloadNode(t)
	before := n.Server.CurrentSettings()
	for _, tc := range []struct{ name, text, want string }{
		{"syntax", "[limits]\nmax_connections_per_ip = 2\nmax_recipients = \n", "line 3"},
		{"value", "hostname = \"mail.test\"\n\n[limits]\nmax_connections_per_ip = 0\n", "line 4: invalid value 0 for limits.max_connections_per_ip"},
		{"unknown key", "[limits]\nmax_connections_per_ip = 2\nmax_conections = 3\n", "line 3: unknown key limits.max_conections"},
	} {
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		applied, restart, err := n.Reload(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one naming %q", tc.name, err, tc.want)
		}
		if applied != nil || restart != nil {
			t.Errorf("%s: applied %v, restart %v", tc.name, applied, restart)
		}
		if n.Server.CurrentSettings() != before || n.CurrentConfig().Limits.MaxConnectionsPerIP != cfg.Limits.MaxConnectionsPerIP {
			t.Errorf("%s: the settings changed", tc.name)
		}
	}
	m, _ := scrape(t, n)
	if m[`submitd_config_reloads_total{result="failed"}`] != 3 || m["submitd_config_last_reload_successful"] != 0 {
		t.Errorf("after three failed reloads: reloads %v, last successful %v",
			m[`submitd_config_reloads_total{result="failed"}`], m["submitd_config_last_reload_successful"])
	}
	writeConfig(t, filepath.Dir(path), cfg)
	if _, _, err := n.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m, _ := scrape(t, n); m[`submitd_config_reloads_total{result="applied"}`] != 1 || m["submitd_config_last_reload_successful"] != 1 {
		t.Errorf("after a good reload: %v applied, last successful %v",
			m[`submitd_config_reloads_total{result="applied"}`], m["submitd_config_last_reload_successful"])
	}
	loginJan(t, n)
}

// A reloader added for settings that need a restart gets the new
// configuration, and its keys no longer wait for a restart; its error
// leaves everything as it was.
func TestReloadRunsReloaders(t *testing.T) {
	n, cfg, path := reloadNode(t)
	var got *config.Config
	fail := false
	n.AddReloader([]string{"contain.rise_days"}, func(_ context.Context, c *config.Config) (func(), error) {
		if fail {
			return nil, errors.New("history cannot be resized")
		}
		return func() { got = c }, nil
	})
	cfg.Contain.RiseDays++
	writeConfig(t, filepath.Dir(path), cfg)
	applied, restart, err := n.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Contain.RiseDays != cfg.Contain.RiseDays || !slices.Contains(applied, "contain.rise_days") || len(restart) != 0 {
		t.Errorf("reloader got %v; applied %v, restart %v", got, applied, restart)
	}
	fail = true
	cfg.Contain.RiseDays++
	cfg.Limits.MaxConnectionsPerIP = 3
	writeConfig(t, filepath.Dir(path), cfg)
	if _, _, err := n.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot be resized") {
		t.Errorf("reload with a failing reloader: %v", err)
	}
	if got := n.Server.CurrentSettings().Limits.MaxConnsPerIP; got == 3 {
		t.Error("a reloader's error left the other settings changed")
	}
}

// A reload that fails in a later step serves the certificates it served
// before: the [tls] step checks the new files but puts them in force only
// with the other steps.
func TestReloadFailureKeepsCerts(t *testing.T) {
	n, cfg, path := reloadNode(t)
	def := implicitTLS(t, n.Addr("submissions"), "smtp.firma.test", nil)
	n.AddReloader([]string{"contain.rise_days"}, func(context.Context, *config.Config) (func(), error) {
		return nil, errors.New("history cannot be resized")
	})
	dir := t.TempDir()
	c, _ := testutil.NewCert(t, "smtp.firma.test")
	f := config.CertFiles{Cert: filepath.Join(dir, "firma.crt"), Key: filepath.Join(dir, "firma.key")}
	testutil.WriteCert(t, c, f.Cert, f.Key)
	cfg.TLS.Certificate = []config.CertFiles{f}
	cfg.Contain.RiseDays++
	writeConfig(t, filepath.Dir(path), cfg)
	if _, _, err := n.Reload(context.Background()); err == nil {
		t.Fatal("reload with a failing step succeeded")
	}
	if got := implicitTLS(t, n.Addr("submissions"), "smtp.firma.test", nil); !got.Equal(def) {
		t.Errorf("after the failed reload smtp.firma.test gets %s, want the default %s", serial(got), serial(def))
	}
}

// Reload tells systemd of itself when Notify is set.
func TestReloadNotifies(t *testing.T) {
	dir, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sockPath := filepath.Join(dir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: sockPath})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	sock.SetReadDeadline(time.Now().Add(60 * time.Second))

	cfg := testConfig(t, "127.0.0.1:1")
	path := writeConfig(t, t.TempDir(), cfg)
	loaded, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewWith(context.Background(), loaded, slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Options{Notifier: &systemd.Notifier{Socket: sockPath}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	n.ConfigPath = path
	if _, _, err := n.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	var states []string
	for range 2 {
		buf := make([]byte, 4096)
		k, err := sock.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, strings.SplitN(string(buf[:k]), "\n", 2)[0])
	}
	if !slices.Equal(states, []string{"RELOADING=1", "READY=1"}) {
		t.Errorf("notified %v", states)
	}
}

// ChangedKeys names entries of a table of free keys ([replies]) one by one.
func TestChangedKeys(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.Replies = map[string]string{"auth_failed": "x"}
	b.Sending.MessagesPerHour++
	b.Guard.ExemptNetworks = []string{"10.0.0.1"}
	want := []string{"guard.exempt_networks", "replies.auth_failed", "sending.messages_per_hour"}
	if got := ChangedKeys(a, b); !slices.Equal(got, want) {
		t.Errorf("ChangedKeys = %v, want %v", got, want)
	}
}
