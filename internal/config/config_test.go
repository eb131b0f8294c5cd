package config

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeConfig writes body to a config file in a temporary directory.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "submitd.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// With no file the server runs unprivileged: no port below 1024.
	for _, a := range []string{c.Listen.SMTP, c.Listen.Submission, c.Listen.Submissions} {
		host, port, err := net.SplitHostPort(a)
		n, _ := strconv.Atoi(port)
		if err != nil || host != "127.0.0.1" || n < 1024 {
			t.Errorf("default listen address %q needs privileges or is not loopback", a)
		}
	}
	got, err := Load("")
	if err != nil {
		t.Fatalf(`Load("") = %v`, err)
	}
	if got.DataDir != c.DataDir || got.Guard.MaxFailures != 10 || got.Guard.Window.D() != time.Hour ||
		got.Guard.BlockFor.D() != time.Hour || got.Guard.IPv6Prefix != 64 {
		t.Errorf("Load(\"\") is not the defaults, or the SPEC R11 defaults changed: %+v", got.Guard)
	}
}

func TestLoadOverridesDefaults(t *testing.T) {
	p := writeConfig(t, `
hostname = "smtp.example.cz"
data_dir = "/var/lib/submitd"

[listen]
smtp = ""
submission = "[::1]:587"

[tls]
cert = "/etc/ssl/submitd.pem"
key = "/etc/ssl/submitd.key"

[policy]
webmail_networks = ["10.1.0.0/16", "192.0.2.7", "2001:db8::/48"]

[guard]
window = "30m"

[sessionlog]
retention = "7d"

[replies]
auth_failed = "authentication failed"
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "smtp.example.cz" || c.DataDir != "/var/lib/submitd" {
		t.Errorf("hostname, data_dir = %q, %q", c.Hostname, c.DataDir)
	}
	// An empty address disables a listener; keys left out keep their default.
	if c.Listen.SMTP != "" || c.Listen.Submission != "[::1]:587" || c.Listen.Submissions != Default().Listen.Submissions {
		t.Errorf("listen = %+v", c.Listen)
	}
	if c.TLS.Cert != "/etc/ssl/submitd.pem" || c.TLS.Key != "/etc/ssl/submitd.key" {
		t.Errorf("tls = %+v", c.TLS)
	}
	if c.Guard.Window.D() != 30*time.Minute || c.Guard.BlockFor.D() != time.Hour {
		t.Errorf("guard window, block_for = %v, %v", c.Guard.Window, c.Guard.BlockFor)
	}
	if c.SessionLog.Retention.D() != 7*24*time.Hour {
		t.Errorf("sessionlog.retention = %v", c.SessionLog.Retention)
	}
	if c.Replies["auth_failed"] != "authentication failed" {
		t.Errorf("replies = %v", c.Replies)
	}
	nets, err := ParsePrefixes(c.Policy.WebmailNetworks)
	if err != nil || len(nets) != 3 || nets[1].String() != "192.0.2.7/32" {
		t.Errorf("webmail networks = %v, %v", nets, err)
	}
}

// TestLoadRefused checks that every bad file is refused with a one-line
// message that names the key and, for a bad value, the value.
func TestLoadRefused(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"unknown top-level key", "foo = 1", []string{"unknown key foo"}},
		{"unknown key in table", "[listen]\nsmtpp = \"127.0.0.1:25\"", []string{"unknown key listen.smtpp"}},
		{"unknown table", "[listener.smtpx]\nproxy_protocol = true", []string{"unknown key listener.smtpx"}},
		{"two unknown keys", "foo = 1\n[guard]\nmax_failure = 3", []string{"foo", "guard.max_failure"}},
		{"listen without port", `listen.smtp = "localhost"`, []string{"listen.smtp", `"localhost"`, "host:port"}},
		{"listen port too big", "[listen]\nsubmission = \"127.0.0.1:99999\"", []string{"listen.submission", `"127.0.0.1:99999"`, "TCP port"}},
		{"listen port not a number", "[listen]\nsubmissions = \"127.0.0.1:smtpx\"", []string{"listen.submissions", `"127.0.0.1:smtpx"`}},
		{"admin listen without port", "[admin]\nlisten = \"localhost\"", []string{"admin.listen", `"localhost"`}},
		{"admin listen on a SMTP port", "[listen]\nsmtp = \"127.0.0.1:8025\"", []string{"admin.listen", "listen.smtp"}},
		{"admin login limit", "[admin]\nlogin_max_failures = 0", []string{"admin.login_max_failures", "at least 1"}},
		{"admin session idle", "[admin]\nsession_idle = \"0s\"", []string{"admin.session_idle", "positive"}},
		{"store driver", "[store]\ndriver = \"mysql\"", []string{"store.driver", `"mysql"`, `"sqlite" or "postgres"`}},
		{"store postgres without dsn", "[store]\ndriver = \"postgres\"", []string{"store.dsn", "must be set"}},
		{"store dsn with sqlite", "[store]\ndsn = \"postgres://u:secret@db/x\"", []string{"store.dsn", "only with"}},
		{"store min over max", "[store]\nmax_conns = 2\nmin_conns = 3", []string{"store.min_conns", "store.max_conns"}},
		{"store cache ttl", "[store]\ncache_ttl = \"2h\"", []string{"store.cache_ttl", "1h"}},
		{"admin metrics networks", "[admin]\nmetrics_networks = [\"prometheus\"]", []string{"admin.metrics_networks", `"prometheus"`}},
		{"smarthost without port", "[delivery]\nsmarthost = \"relay.example.cz\"", []string{"delivery.smarthost", `"relay.example.cz"`}},
		{"bad duration", "[limits]\ncommand_timeout = \"5x\"", []string{"line 2", "limits.command_timeout", `"5x"`, "not a duration"}},
		{"duration without unit", "[guard]\nwindow = 60", []string{"guard.window", `"60"`, "not a duration"}},
		{"duration overflow", "[queue]\nmax_age = \"999999999d\"", []string{"queue.max_age", `"999999999d"`}},
		{"negative duration", "[guard]\nblock_for = \"-1h\"", []string{"guard.block_for", `"-1h0m0s"`, "positive"}},
		{"fractional days", "[queue]\nmax_age = \"1.5d\"", []string{"queue.max_age", `"1.5d"`}},
		{"negative sending limit", "[sending]\nrecipients_per_hour = -1", []string{"sending.recipients_per_hour", "-1", "0 (no limit)"}},
		{"domain sending limit too big", "[sending.domain]\nmessages_per_hour = 10000001", []string{"sending.domain.messages_per_hour", "10000001"}},
		{"unknown sending key", "[sending]\nmessages_per_minute = 5", []string{"unknown key sending.messages_per_minute"}},
		{"bad CIDR", "[policy]\nwebmail_networks = [\"10.0.0.0/33\"]", []string{"policy.webmail_networks", `"10.0.0.0/33"`}},
		{"not an IP", "[guard]\nexempt_networks = [\"monitoring.example.cz\"]", []string{"guard.exempt_networks", `"monitoring.example.cz"`}},
		{"login guard of one failure", "[login_guard]\nmax_failures = 1", []string{"login_guard.max_failures", "1"}},
		{"login guard trust of no time", "[login_guard]\ntrusted_for = \"0s\"", []string{"login_guard.trusted_for", "0s"}},
		{"bad metrics network", "[admin]\nmetrics_networks = [\"prometheus\"]", []string{"admin.metrics_networks", `"prometheus"`}},
		{"admin on an SMTP port", "[admin]\nlisten = \"127.0.0.1:2587\"", []string{"admin.listen", "listen.submission"}},
		{"admin without port", "[admin]\nlisten = \"localhost\"", []string{"admin.listen", `"localhost"`, "host:port"}},
		{"contain action", "[contain]\naction = \"block\"", []string{"contain.action", `"block"`, `"hold" or "warn"`}},
		{"contain bounce share", "[contain]\nbounce_share = 1.5", []string{"contain.bounce_share", "1.5"}},
		{"contain networks", "[contain]\nnetworks = 5000", []string{"contain.networks", "5000", "1000"}},
		{"contain webhook", "[contain]\nwebhook = \"ftp://x\"", []string{"contain.webhook", `"ftp://x"`, "http"}},
		{"contain support address", "[contain]\nsupport_address = \"support\"", []string{"contain.support_address", `"support"`}},
		{"contain spam", "[contain]\nspam = -1", []string{"contain.spam", "-1", "0 (off)"}},
		{"scan url", "[scan]\nrspamd_url = \"127.0.0.1:11333\"", []string{"scan.rspamd_url", `"127.0.0.1:11333"`, "http://host:port"}},
		{"scan url path", "[scan]\nrspamd_url = \"http://127.0.0.1:11333/checkv2\"", []string{"scan.rspamd_url", "normal worker"}},
		{"scan on_error", "[scan]\non_error = \"reject\"", []string{"scan.on_error", `"reject"`, `"accept" or "tempfail"`}},
		{"scan timeout", "[scan]\ntimeout = \"0s\"", []string{"scan.timeout", "positive"}},
		{"scan max_size unit", "[scan]\nmax_size = \"4 lightyears\"", []string{"scan.max_size", "4MiB"}},
		{"scan max_size small", "[scan]\nmax_size = 10", []string{"scan.max_size", "10B", "1KiB"}},
		{"scan max_size large", "[scan]\nmax_size = \"1GiB\"", []string{"scan.max_size", "1GiB", "64MiB"}},
		{"scan max_concurrent", "[scan]\nmax_concurrent = 0", []string{"scan.max_concurrent", "0"}},
		{"scan password", "[scan]\npassword = \"a\\nb\"", []string{"scan.password", "(set)"}},
		{"bad enum log level", "[log]\nlevel = \"verbose\"", []string{"log.level", `"verbose"`, `"debug"`}},
		{"bad enum scheme", "[auth]\npassword_scheme = \"md5\"", []string{"auth.password_scheme", `"md5"`}},
		{"no hash queue", "[auth]\nhash_queue = 0", []string{"auth.hash_queue", "0"}},
		{"negative hash workers", "[auth]\nhash_workers = -1", []string{"auth.hash_workers", "-1"}},
		{"zero hash wait", "[auth]\nhash_wait = \"0s\"", []string{"auth.hash_wait", `"0s"`, "positive"}},
		{"negative cache ttl", "[auth]\ncache_ttl = \"-1m\"", []string{"auth.cache_ttl", `"-1m0s"`}},
		{"bad enum delivery tls", "[delivery]\ntls = \"required\"", []string{"delivery.tls", `"required"`}},
		{"bad enum smarthost tls", "[delivery]\nsmarthost_tls = \"ssl\"", []string{"delivery.smarthost_tls", `"ssl"`}},
		{"no messages per connection", "[delivery]\nmax_messages_per_connection = 0", []string{"delivery.max_messages_per_connection", "0"}},
		{"idle longer than servers wait", "[delivery]\nconnection_idle_timeout = \"10m\"", []string{"delivery.connection_idle_timeout", `"10m0s"`, "5m"}},
		{"no connections per destination", "[delivery]\nmax_connections_per_destination = 0", []string{"delivery.max_connections_per_destination", "0"}},
		{"dnssec resolver without port", "[delivery]\ndnssec_resolver = \"127.0.0.1\"", []string{"delivery.dnssec_resolver", `"127.0.0.1"`, "host:port"}},
		{"ca roots missing", "[delivery]\nca_roots = \"/nonexistent/roots.pem\"", []string{"delivery.ca_roots", "/nonexistent/roots.pem", "no such file"}},
		{"ca roots not PEM", "[delivery]\nca_roots = \"config_test.go\"", []string{"delivery.ca_roots", "no PEM certificate"}},
		{"source ipv4 is v6", "[delivery]\nsource_ipv4 = \"::1\"", []string{"delivery.source_ipv4", `"::1"`, "IPv4"}},
		{"source ipv6 is v4", "[delivery]\nsource_ipv6 = \"192.0.2.1\"", []string{"delivery.source_ipv6", `"192.0.2.1"`, "IPv6"}},
		{"cert without key", "[tls]\ncert = \"/etc/ssl/c.pem\"", []string{"tls.cert", `"/etc/ssl/c.pem"`, "tls.key"}},
		{"reload too often", "[tls]\nreload_interval = \"100ms\"", []string{"tls.reload_interval", `"100ms"`, "1s"}},
		{"more cert without key", "[[tls.certificate]]\ncert = \"/etc/ssl/b.pem\"", []string{"tls.certificate[0].cert", `"/etc/ssl/b.pem"`}},
		{"bad challenge", "[acme]\nchallenge = \"dns-01\"", []string{"acme.challenge", `"dns-01"`}},
		{"acme over http", "[acme]\nenabled = true\ndirectory = \"http://ca.example/dir\"", []string{"acme.directory", "https://"}},
		{"acme wildcard", "[acme]\nenabled = true\nhostnames = [\"*.example.cz\"]", []string{"acme.hostnames", `"*.example.cz"`}},
		{"acme for localhost", "[acme]\nenabled = true", []string{"acme.hostnames", `"localhost"`}},
		{"acme two emails", "hostname = \"smtp.example.cz\"\n[acme]\nenabled = true\nemail = \"a@example.cz, b@example.cz\"", []string{"acme.email"}},
		{"acme listen collides", "hostname = \"smtp.example.cz\"\n[acme]\nenabled = true\nlisten = \"127.0.0.1:8025\"", []string{"acme.listen", "admin.listen"}},
		{"zero limit", "[limits]\nmax_recipients = 0", []string{"limits.max_recipients", "0"}},
		{"huge message size", "[limits]\nmax_message_size = 100000000000000000", []string{"limits.max_message_size", "100000000000000000", "1 GiB"}},
		{"short lines", "[limits]\nmax_line_length = 512", []string{"limits.max_line_length", "512"}},
		{"prefix range", "[guard]\nipv6_prefix = 200", []string{"guard.ipv6_prefix", "200"}},
		{"guard store", "[guard]\nstore = \"memcached\"", []string{"guard.store", `"memcached"`, `"sqlite" or "redis"`}},
		{"redis without a URL", "[guard]\nstore = \"redis\"", []string{"guard.redis_url", "must be set"}},
		{"redis URL", "[guard]\nstore = \"redis\"\nredis_url = \"http://h:1\"", []string{"guard.redis_url", "want redis://"}},
		{"redis URL keeps its password", "[guard]\nstore = \"redis\"\nredis_url = \"redis://u:sekrit@h:x/0\"", []string{"guard.redis_url", "xxxxx"}},
		{"retry order", "[queue]\nretry_min = \"2h\"\nretry_max = \"1h\"", []string{"queue.retry_max", `"1h0m0s"`}},
		{"empty hostname", `hostname = ""`, []string{"hostname", `""`}},
		// The hostname goes into the greeting, Received:, Message-ID: and
		// the outbound EHLO, where receivers check its syntax.
		{"hostname with markup", `hostname = "mail.example.cz<x>"`, []string{"hostname", `"mail.example.cz<x>"`, "letters, digits"}},
		{"hostname with underscore", `hostname = "mail_1.example.cz"`, []string{"hostname", `"mail_1.example.cz"`}},
		{"hostname with empty label", `hostname = "mail..example.cz"`, []string{"hostname", `"mail..example.cz"`}},
		{"hostname trailing dot", `hostname = "mail.example.cz."`, []string{"hostname", `"mail.example.cz."`}},
		{"hostname hyphen", `hostname = "-mail.example.cz"`, []string{"hostname", `"-mail.example.cz"`}},
		{"hostname U-label", `hostname = "pošta.příklad.cz"`, []string{"hostname", `"pošta.příklad.cz"`, "xn--"}},
		{"hostname label too long", `hostname = "` + strings.Repeat("a", 64) + `.cz"`, []string{"hostname", "63"}},
		// Two listeners on one address: the second could never bind.
		{"same listen address", "[listen]\nsmtp = \"127.0.0.1:2525\"\nsubmission = \"127.0.0.1:2525\"",
			[]string{"listen.submission", `"127.0.0.1:2525"`, "listen.smtp"}},
		{"listen port on every address", "[listen]\nsmtp = \":2525\"\nsubmissions = \"127.0.0.1:2525\"",
			[]string{"listen.submissions", `"127.0.0.1:2525"`, "listen.smtp"}},
		{"empty data_dir", `data_dir = ""`, []string{"data_dir", `""`}},
		{"wrong type", "hostname = 25", []string{"hostname", "int64"}},
		{"syntax", "hostname = ", []string{"line 1", "hostname"}},
		{"duplicate key", "hostname = \"a\"\nhostname = \"b\"", []string{"line 2", "hostname", "already"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body)
			c, err := Load(p)
			if err == nil {
				t.Fatalf("Load accepted %q: %+v", tt.body, c)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config "+p+": ") {
				t.Errorf("error %q does not name the file", msg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			// An error message goes to the log; a password in the
			// configuration must not.
			if strings.Contains(msg, "sekrit") {
				t.Errorf("error %q shows the password", msg)
			}
		})
	}
}

// TestLoadAcceptsNearMisses checks values close to the refused ones above
// that are fine: a single-label or A-label hostname, listeners that share a
// port on different addresses, and port 0 (a free port) on several.
func TestLoadAcceptsNearMisses(t *testing.T) {
	for _, body := range []string{
		`hostname = "localhost"`,
		`hostname = "SMTP-1.Example.CZ"`,
		`hostname = "xn--pota-2sa.xn--pklad-zsa96e.cz"`,
		`hostname = "` + strings.Repeat("a", 63) + `.cz"`,
		"[listen]\nsmtp = \"127.0.0.1:0\"\nsubmission = \"127.0.0.1:0\"\nsubmissions = \"127.0.0.1:0\"",
		"[listen]\nsmtp = \"127.0.0.1:25\"\nsubmission = \"127.0.0.2:25\"\nsubmissions = \"[::1]:25\"",
		"[listen]\nsmtp = \"0.0.0.0:25\"\nsubmission = \"[::1]:25\"",
		"[sending]\nmessages_per_hour = 0\nnew_recipients_per_day = 10000000\n[sending.domain]\nrecipients_per_day = 0",
		"hostname = \"smtp.example.cz\"\n[acme]\nenabled = true\nchallenge = \"http-01\"\nlisten = \":80\"\nhostnames = [\"smtp.example.cz\", \"smtp.firma.cz\"]",
		"[tls]\nreload_interval = \"1s\"\n[[tls.certificate]]\ncert = \"/etc/ssl/b.pem\"\nkey = \"/etc/ssl/b.pem\"",
	} {
		if _, err := Load(writeConfig(t, body)); err != nil {
			t.Errorf("Load refused %q: %v", body, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.toml")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Load(missing) = %v; want an error naming %s", err, p)
	}
}

func TestPath(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env.toml")
	flagFile := filepath.Join(dir, "flag.toml")

	t.Chdir(dir) // restores the working directory afterwards
	t.Setenv(EnvVar, "")
	if got := Path(""); got != "" {
		t.Errorf("no flag, no env, no ./%s: Path = %q; want \"\"", DefaultFile, got)
	}
	if err := os.WriteFile(DefaultFile, []byte("hostname = \"cwd\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Path(""); got != DefaultFile {
		t.Errorf("with ./%s: Path = %q", DefaultFile, got)
	}
	t.Setenv(EnvVar, envFile)
	if got := Path(""); got != envFile {
		t.Errorf("with $%s: Path = %q; want %q", EnvVar, got, envFile)
	}
	if got := Path(flagFile); got != flagFile {
		t.Errorf("with -config: Path = %q; want %q", got, flagFile)
	}
	// The chosen file is the one loaded.
	c, err := Load(Path(""))
	if err == nil || !strings.Contains(err.Error(), envFile) {
		t.Errorf("Load(Path) with a missing $%s file = %v, %v; want an error naming it", EnvVar, c, err)
	}
	t.Setenv(EnvVar, "")
	if c, err := Load(Path("")); err != nil || c.Hostname != "cwd" {
		t.Errorf("Load(./%s) = %v, %v; want hostname cwd", DefaultFile, c, err)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"90s", 90 * time.Second, "1m30s"},
		{"15m", 15 * time.Minute, "15m0s"},
		{"1h30m", 90 * time.Minute, "1h30m0s"},
		{"30d", 30 * 24 * time.Hour, "30d"},
		{"1d", 24 * time.Hour, "1d"},
		{"0d", 0, "0s"},
		{"24h", 24 * time.Hour, "1d"},
		{"250ms", 250 * time.Millisecond, "250ms"},
		{"0", 0, "0s"},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil || d.D() != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.in, d.D(), err, tt.want)
			continue
		}
		if d.String() != tt.str {
			t.Errorf("Duration(%v).String() = %q; want %q", tt.want, d.String(), tt.str)
		}
		// What MarshalText writes reads back the same.
		b, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("round trip of %q via %q = %v, %v", tt.in, b, back, err)
		}
	}
	for _, bad := range []string{"", "d", "x", "5x", "1.5d", "-1d", "30 d", "1w", "999999999d", "9999999999h"} {
		var d Duration
		err := d.UnmarshalText([]byte(bad))
		if err == nil {
			t.Errorf("UnmarshalText(%q) = %v; want an error", bad, d.D())
		} else if !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("UnmarshalText(%q) error %q does not quote the value", bad, err)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.1.2.3/16", "192.0.2.7", "::ffff:192.0.2.8", "2001:db8::1/64", "::ffff:192.0.2.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.1.0.0/16", "192.0.2.7/32", "192.0.2.8/32", "2001:db8::/64", "192.0.2.0/24"}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("prefix %d = %s; want %s", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0", "example.cz", "", "10.0.0.0/-1"} {
		if _, err := ParsePrefixes([]string{"10.0.0.0/8", bad}); err == nil || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("ParsePrefixes(%q) error = %v; want one quoting the value", bad, err)
		}
	}
}

// A refused value or an unknown key is reported with the line that sets
// it, however the key and its table are written.
func TestLoadNamesLine(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"hostname = \"x.test\"\n\n[ \"limits\" ]  # comment\n\"max_connections_per_ip\" = 0\n", "line 4: invalid value 0 for limits.max_connections_per_ip"},
		{"[contain]\naction = \"drop\"\n", "line 2: invalid value \"drop\" for contain.action"},
		{"[guard]\nexempt_networks = [\"10.0.0.0/33\"]\n", "line 2: invalid value for guard.exempt_networks"},
		{"[sending.domain]\nmessages_per_hour = -1\n", "line 2: invalid value -1 for sending.domain.messages_per_hour"},
		{"[limits]\n# max_recipients = 0\nmax_recipients = 0\n", "line 3: invalid value 0 for limits.max_recipients"},
		{"[limits]\nfoo = 1\n", "line 2: unknown key limits.foo"},
	} {
		path := filepath.Join(t.TempDir(), "submitd.toml")
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if want := "config " + path + ": " + tc.want; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %q…", tc.text, err, want)
		}
	}
}

// TestScanSection: [scan] takes sizes with a unit or as bytes.
func TestScanSection(t *testing.T) {
	for text, want := range map[string]Size{`"4MiB"`: 4 << 20, `"512KiB"`: 512 << 10, `"10MB"`: 10e6, `2000000`: 2e6} {
		p := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(p, []byte("[scan]\nrspamd_url = \"http://127.0.0.1:11333\"\non_error = \"tempfail\"\nmax_size = "+text+"\n"), 0o644)
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if c.Scan.MaxSize != want || c.Scan.OnError != "tempfail" || c.Scan.RspamdURL != "http://127.0.0.1:11333" {
			t.Errorf("%s: %+v, want max_size %d", text, c.Scan, want)
		}
	}
}

// [queue] delay_warning sets the delay notice's time, as its older name
// warn_after does; the two set to different values are refused.
func TestDelayWarning(t *testing.T) {
	for _, tc := range []struct {
		text string
		want time.Duration
		err  string
	}{
		{"[queue]\ndelay_warning = \"2h\"\n", 2 * time.Hour, ""},
		{"[queue]\nwarn_after = \"3h\"\n", 3 * time.Hour, ""},
		{"[queue]\n", 4 * time.Hour, ""},
		{"[queue]\ndelay_warning = \"0s\"\n", 0, ""},
		{"[queue]\nwarn_after = \"1h\"\ndelay_warning = \"1h\"\n", time.Hour, ""},
		{"[queue]\nwarn_after = \"1h\"\ndelay_warning = \"2h\"\n", 0, "line 3: queue.delay_warning 2h0m0s differs from queue.warn_after 1h0m0s"},
	} {
		path := filepath.Join(t.TempDir(), "submitd.toml")
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want %q", tc.text, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		if c.Queue.WarnAfter.D() != tc.want || c.Queue.DelayWarning.D() != tc.want {
			t.Errorf("%q: warn_after %v, delay_warning %v, want %v", tc.text, c.Queue.WarnAfter, c.Queue.DelayWarning, tc.want)
		}
	}
}
