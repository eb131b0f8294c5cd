// Package config holds submitd's configuration: the Config struct, its
// defaults, loading from TOML and validation. The field comments here and the
// comments in submitd.example.toml are the reference for operators.
package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"submitd/internal/redisconn"
)

// EnvVar names the environment variable that points at the config file when
// no -config flag is given.
const EnvVar = "SUBMITD_CONFIG"

// DefaultFile is read when neither -config nor SUBMITD_CONFIG is set and it
// exists in the working directory.
const DefaultFile = "submitd.toml"

// Config is the whole configuration of a submitd node.
type Config struct {
	// Hostname is the name in the greeting and in Received headers.
	Hostname string `toml:"hostname"`
	// DataDir holds the SQLite file, the spool and the self-signed certificate.
	DataDir string `toml:"data_dir"`
	// Listen has the listening addresses; an empty address disables a listener.
	Listen Listen `toml:"listen"`
	// Listener has per-listener options, keyed like Listen.
	Listener Listeners `toml:"listener"`
	// TLS names the certificates; empty means a generated self-signed one.
	TLS TLS `toml:"tls"`
	// ACME obtains and renews certificates from an ACME CA (RFC 8555).
	ACME ACME `toml:"acme"`
	// Auth configures authentication.
	Auth Auth `toml:"auth"`
	// Policy configures the sender policy (SPEC R5–R9).
	Policy Policy `toml:"policy"`
	// Limits are the per-session limits (SPEC R14).
	Limits Limits `toml:"limits"`
	// Replies overrides reply texts by key; see internal/smtpd/replies.go.
	Replies map[string]string `toml:"replies"`
	// SessionLog configures the session records (SPEC R13).
	SessionLog SessionLog `toml:"sessionlog"`
	// Guard configures the brute-force guard (SPEC R11).
	Guard Guard `toml:"guard"`
	// LoginGuard configures the per-login count of failures across IPs
	// (SPEC R21).
	LoginGuard LoginGuard `toml:"login_guard"`
	// Queue configures retries and expiry (SPEC R18).
	Queue Queue `toml:"queue"`
	// Delivery configures outbound SMTP (SPEC R17).
	Delivery Delivery `toml:"delivery"`
	// Log configures the structured log.
	Log Log `toml:"log"`
	// Admin configures the support and operator server (SPEC §8).
	Admin Admin `toml:"admin"`
	// Store selects where the shared stores live (SPEC §8).
	Store Store `toml:"store"`
	// Sending holds the sending limits (SPEC R19).
	Sending Sending `toml:"sending"`
	// Contain configures the holding of compromised accounts (SPEC R20).
	Contain Contain `toml:"contain"`
	// Scan configures content scanning with rspamd (SPEC R22).
	Scan Scan `toml:"scan"`
}

// Store selects the engine of the stores the nodes of a cluster share: the
// directory, session records, staff users and tokens, the audit log and the
// DKIM keys. The guard's state and the spool stay on each node.
type Store struct {
	// Driver is "sqlite" (the embedded database in data_dir) or "postgres".
	Driver string `toml:"driver"`
	// DSN is the PostgreSQL connection string or URL; only with "postgres".
	DSN string `toml:"dsn"`
	// MaxConns bounds the pool's connections to PostgreSQL.
	MaxConns int `toml:"max_conns"`
	// MinConns is how many pool connections stay open when idle.
	MinConns int `toml:"min_conns"`
	// MaxConnIdleTime closes a pool connection unused this long.
	MaxConnIdleTime Duration `toml:"max_conn_idle_time"`
	// ConnectTimeout bounds opening one connection to PostgreSQL, and so
	// how long an AUTH waits before a database that does not answer gets
	// the temporary reply.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// CacheTTL is how long a node uses an account it looked up; changes
	// made through the CLI, web or API drop it sooner, on every node. "0s"
	// looks every account up for every AUTH.
	CacheTTL Duration `toml:"cache_ttl"`
}

// SendingLimits are the four sending limits of SPEC R19, each in a rolling
// window; 0 is no limit.
type SendingLimits struct {
	// MessagesPerHour is the most messages in any hour, checked at MAIL.
	MessagesPerHour int64 `toml:"messages_per_hour"`
	// RecipientsPerHour is the most recipients in any hour, checked at RCPT.
	RecipientsPerHour int64 `toml:"recipients_per_hour"`
	// RecipientsPerDay is the most recipients in any 24 hours.
	RecipientsPerDay int64 `toml:"recipients_per_day"`
	// NewRecipientsPerDay is the most first-time recipients (not sent to
	// in the last 30 days) in any 24 hours.
	NewRecipientsPerDay int64 `toml:"new_recipients_per_day"`
}

// Sending configures the sending limits: those of every account, and in
// Domain those of every hosted domain, its aliases and all its accounts
// together. Support overrides them per account and per domain.
type Sending struct {
	// SendingLimits are the limits of each account.
	SendingLimits
	// Domain are the limits of each hosted domain.
	Domain SendingLimits `toml:"domain"`
}

// Admin configures the admin HTTP server: the JSON API, browser login and
// /metrics. It also always listens on data_dir/admin.sock for the CLI.
type Admin struct {
	// Listen is the TCP address; "" serves the unix socket only.
	Listen string `toml:"listen"`
	// TLS serves HTTPS on Listen with the [tls] certificate.
	TLS bool `toml:"tls"`
	// SessionIdle ends a browser session unused this long.
	SessionIdle Duration `toml:"session_idle"`
	// LoginMaxFailures blocks a client IP from staff login when it reaches
	// this many failed logins in LoginWindow, for LoginBlockFor.
	LoginMaxFailures int `toml:"login_max_failures"`
	// LoginWindow is the rolling window failed logins are counted in.
	LoginWindow Duration `toml:"login_window"`
	// LoginBlockFor is how long a login block lasts.
	LoginBlockFor Duration `toml:"login_block_for"`
	// MetricsNetworks may read /metrics without a bearer token.
	MetricsNetworks []string `toml:"metrics_networks"`
}

// Listen holds the three listening addresses (SPEC R14).
type Listen struct {
	// SMTP is the port-25 style listener with STARTTLS.
	SMTP string `toml:"smtp"`
	// Submission is the port-587 style listener with STARTTLS.
	Submission string `toml:"submission"`
	// Submissions is the port-465 style listener with implicit TLS.
	Submissions string `toml:"submissions"`
}

// Listeners holds the per-listener options.
type Listeners struct {
	// SMTP holds options of the smtp listener.
	SMTP ListenerOptions `toml:"smtp"`
	// Submission holds options of the submission listener.
	Submission ListenerOptions `toml:"submission"`
	// Submissions holds options of the submissions listener.
	Submissions ListenerOptions `toml:"submissions"`
}

// ListenerOptions are the options one listener may set.
type ListenerOptions struct {
	// AllowPlaintextAuth offers AUTH outside TLS (SPEC R3); off by default.
	AllowPlaintextAuth bool `toml:"allow_plaintext_auth"`
	// ProxyProtocol expects a PROXY v1/v2 header from a trusted proxy (SPEC R11b).
	ProxyProtocol bool `toml:"proxy_protocol"`
}

// TLS names PEM files: the default certificate, for clients that send no
// name (SNI) or one no other certificate holds, and more certificates,
// each served for the names it holds.
type TLS struct {
	// Cert is the certificate chain PEM path.
	Cert string `toml:"cert"`
	// Key is the private key PEM path.
	Key string `toml:"key"`
	// ReloadInterval is how often the files are checked for changes; a
	// changed pair is used for new handshakes.
	ReloadInterval Duration `toml:"reload_interval"`
	// Certificate lists more certificates, chosen by the name the client
	// asks for (SNI).
	Certificate []CertFiles `toml:"certificate"`
}

// CertFiles names one certificate's PEM files.
type CertFiles struct {
	// Cert is the certificate chain PEM path.
	Cert string `toml:"cert"`
	// Key is the private key PEM path; it may be the same file as Cert.
	Key string `toml:"key"`
}

// ACME configures certificates obtained from an ACME CA (RFC 8555), such
// as Let's Encrypt, and renewed while the server runs.
type ACME struct {
	// Enabled turns ACME on.
	Enabled bool `toml:"enabled"`
	// Directory is the CA's directory URL.
	Directory string `toml:"directory"`
	// Email is the contact address given to the CA; "" gives none.
	Email string `toml:"email"`
	// Hostnames are the names to obtain a certificate for; empty means
	// [hostname].
	Hostnames []string `toml:"hostnames"`
	// Challenge is "tls-alpn-01" (RFC 8737) or "http-01" (RFC 8555 §8.3).
	Challenge string `toml:"challenge"`
	// Listen is where the challenge is answered: the CA connects to port
	// 443 for tls-alpn-01 and port 80 for http-01.
	Listen string `toml:"listen"`
	// CacheDir keeps the account key and the certificates; "" means
	// data_dir/acme.
	CacheDir string `toml:"cache_dir"`
	// CARoots is a PEM file of roots trusted for the CA's own HTTPS, in
	// addition to the system's (private CAs, tests).
	CARoots string `toml:"ca_roots"`
}

// Names returns the hostnames to obtain certificates for: [acme]
// hostnames, or hostname when there are none.
func (a ACME) Names(hostname string) []string {
	if len(a.Hostnames) == 0 {
		return []string{hostname}
	}
	return a.Hostnames
}

// Auth configures authentication (SPEC R1–R4).
type Auth struct {
	// UniformFailures answers every failed AUTH with "authentication failed".
	UniformFailures bool `toml:"uniform_failures"`
	// PasswordScheme is the scheme of new hashes: "argon2id" or "bcrypt".
	PasswordScheme string `toml:"password_scheme"`
	// MinDuration is the least time a failed AUTH attempt takes, to blunt
	// timing attacks; a success is told apart by its reply anyway.
	MinDuration Duration `toml:"min_duration"`
	// CacheTTL is how long a password check's answer is remembered; "0s"
	// turns the credential cache off.
	CacheTTL Duration `toml:"cache_ttl"`
	// HashWorkers is how many password hashes run at once; 0 means one per CPU.
	HashWorkers int `toml:"hash_workers"`
	// HashQueue is how many AUTH attempts may wait for a hash worker.
	HashQueue int `toml:"hash_queue"`
	// HashWait is the longest an attempt waits for a worker before it gets
	// a temporary failure.
	HashWait Duration `toml:"hash_wait"`
}

// Policy configures the sender policy.
type Policy struct {
	// WebmailNetworks may use accounts' extra sender identities (SPEC R9).
	WebmailNetworks []string `toml:"webmail_networks"`
}

// Limits are per-session limits (SPEC R14).
type Limits struct {
	// MaxMessageSize is the largest message in bytes, advertised in EHLO SIZE.
	MaxMessageSize int64 `toml:"max_message_size"`
	// MaxRecipients is the most RCPT TO per message.
	MaxRecipients int `toml:"max_recipients"`
	// MaxLineLength is the longest command or message line, CRLF included.
	MaxLineLength int `toml:"max_line_length"`
	// CommandTimeout is how long the server waits for each command or data block.
	CommandTimeout Duration `toml:"command_timeout"`
	// SessionTimeout is the longest a connection may stay open.
	SessionTimeout Duration `toml:"session_timeout"`
	// MaxConnectionsPerIP is the most simultaneous connections from one client IP.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// MaxConnections is the most simultaneous connections in all.
	MaxConnections int `toml:"max_connections"`
}

// SessionLog configures session records.
type SessionLog struct {
	// Retention is how long records are kept.
	Retention Duration `toml:"retention"`
}

// Guard configures the brute-force guard (SPEC R11, R11a, R11b).
type Guard struct {
	// MaxFailures blocks a key when it reaches this many failures in Window.
	MaxFailures int `toml:"max_failures"`
	// Window is the rolling window failures are counted in.
	Window Duration `toml:"window"`
	// BlockFor is how long a block lasts.
	BlockFor Duration `toml:"block_for"`
	// IPv4Prefix is the prefix length IPv4 clients are counted by.
	IPv4Prefix int `toml:"ipv4_prefix"`
	// IPv6Prefix is the prefix length IPv6 clients are counted by.
	IPv6Prefix int `toml:"ipv6_prefix"`
	// ExemptNetworks are never blocked.
	ExemptNetworks []string `toml:"exempt_networks"`
	// TrustedProxies may send PROXY headers.
	TrustedProxies []string `toml:"trusted_proxies"`
	// MaxKeys caps the client keys with failures held in memory; past it the
	// keys with fewer failures are forgotten first (blocks never are).
	MaxKeys int `toml:"max_keys"`
	// Store is where the guard keeps its state: "sqlite", the node's own
	// database, or "redis", shared by every node using the same Redis.
	Store string `toml:"store"`
	// RedisURL is the Redis of store = "redis" (see redisconn.Open for the
	// forms: one server, Sentinel, Cluster).
	RedisURL string `toml:"redis_url"`
}

// LoginGuard configures the count of failed AUTHs per login across all
// client IPs (SPEC R21). Past max_failures in window the login is under
// attack for under_attack_for: only networks where it authenticated in
// the last trusted_for may still try it.
type LoginGuard struct {
	// Enabled turns the count on.
	Enabled bool `toml:"enabled"`
	// MaxFailures wrong passwords in Window from networks without an
	// earlier success put a login under attack.
	MaxFailures int `toml:"max_failures"`
	// Window is the rolling window failures are counted in.
	Window Duration `toml:"window"`
	// UnderAttackFor is how long the state lasts after the last failure
	// that kept the count at MaxFailures.
	UnderAttackFor Duration `toml:"under_attack_for"`
	// TrustedFor is how long a success keeps its network trusted.
	TrustedFor Duration `toml:"trusted_for"`
	// IPv4Prefix and IPv6Prefix are the network sizes a success trusts.
	IPv4Prefix int `toml:"ipv4_prefix"`
	IPv6Prefix int `toml:"ipv6_prefix"`
	// MaxNetworksPerLogin bounds the networks remembered per login; the
	// oldest success is forgotten first.
	MaxNetworksPerLogin int `toml:"max_networks_per_login"`
	// MaxLogins bounds the logins with failures held in memory; past it
	// the one with the fewest failures is forgotten (logins under attack
	// never are).
	MaxLogins int `toml:"max_logins"`
}

// Queue configures retries (SPEC R18).
type Queue struct {
	// RetryMin is the first retry delay; it doubles each attempt.
	RetryMin Duration `toml:"retry_min"`
	// RetryMax caps the retry delay.
	RetryMax Duration `toml:"retry_max"`
	// MaxAge is how long a message is retried before it expires.
	MaxAge Duration `toml:"max_age"`
	// WarnAfter sends one delay warning after this long; 0 disables it.
	// The file may name it delay_warning (DelayWarning) or, as before,
	// warn_after.
	WarnAfter Duration `toml:"warn_after"`
	// DelayWarning is WarnAfter under the name the delay notice of RFC
	// 3461 goes by; Load makes the two equal.
	DelayWarning Duration `toml:"delay_warning"`
	// Workers is the most deliveries under way at once.
	Workers int `toml:"workers"`
	// PerDomain is the most deliveries under way at once to one domain,
	// in MX mode; a smarthost is bounded by
	// Delivery.MaxConnectionsPerDestination instead.
	PerDomain int `toml:"per_domain"`
}

// Delivery configures outbound SMTP (SPEC R17).
type Delivery struct {
	// Resolver is "host:port" of a DNS server; empty: the system's.
	Resolver string `toml:"resolver"`
	// Port is the remote SMTP port in MX mode.
	Port int `toml:"port"`
	// TLS is "opportunistic" or "verify" in MX mode.
	TLS string `toml:"tls"`
	// Smarthost is "host:port" to send everything to instead of MX lookup.
	Smarthost string `toml:"smarthost"`
	// SmarthostTLS is "starttls" (required), "implicit" or "none".
	SmarthostTLS string `toml:"smarthost_tls"`
	// SmarthostUser is the optional AUTH login at the smarthost.
	SmarthostUser string `toml:"smarthost_user"`
	// SmarthostPassword is the password for SmarthostUser.
	SmarthostPassword string `toml:"smarthost_password"`
	// ConnectTimeout bounds dialing a remote server.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// Timeout bounds a delivery attempt to one host up to the end of the
	// message data; each step also has its RFC 5321 §4.5.3.2 limit, and the
	// reply after the data is awaited for up to 10 minutes.
	Timeout Duration `toml:"timeout"`
	// MaxMessagesPerConnection is how many messages one outbound
	// connection carries before it is closed.
	MaxMessagesPerConnection int `toml:"max_messages_per_connection"`
	// ConnectionIdleTimeout is how long an outbound connection waits for
	// its next message before it is closed.
	ConnectionIdleTimeout Duration `toml:"connection_idle_timeout"`
	// MaxConnectionsPerDestination is the most outbound connections open
	// at once to one destination (MX address, or the smarthost).
	MaxConnectionsPerDestination int `toml:"max_connections_per_destination"`
	// SPFInclude is the domain whose SPF record lists the provider's
	// outbound addresses, e.g. "_spf.provider.example": a customer's SPF
	// record authorizes submitd's mail with include:SPF_INCLUDE. The
	// domain health check (support web, API) looks for it and gives the
	// record to publish; empty: it checks against outbound_ips alone.
	SPFInclude string `toml:"spf_include"`
	// OutboundIPs are the addresses or CIDRs submitd's mail leaves from,
	// as the recipients' servers see them; the domain health check tests
	// that a customer's SPF record authorizes each (RFC 7208).
	OutboundIPs []string `toml:"outbound_ips"`
	// DNSSECResolver is "host:port" of a validating resolver whose AD bit
	// makes the TLSA records of MX hosts count (DANE, RFC 7672, SPEC
	// R23); empty: no DANE.
	DNSSECResolver string `toml:"dnssec_resolver"`
	// CARoots is a PEM file of CA certificates trusted besides the
	// system's, for MTA-STS policy hosts and MX hosts checked under a
	// policy, tls = "verify" and the smarthost; empty: none.
	CARoots string `toml:"ca_roots"`
	// SourceIPv4 and SourceIPv6 are the local addresses outbound
	// connections are made from (the ones the provider's SPF record
	// names); empty: the system's choice.
	SourceIPv4 string `toml:"source_ipv4"`
	SourceIPv6 string `toml:"source_ipv6"`
}

// LoadCARoots returns the system's roots plus the certificates of the PEM
// file at path ([delivery] ca_roots); nil for an empty path, meaning the
// system's roots alone.
func LoadCARoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("no PEM certificate in the file")
	}
	return pool, nil
}

// Log configures logging.
type Log struct {
	// Level is "debug", "info", "warn" or "error".
	Level string `toml:"level"`
	// Format is "text" or "json".
	Format string `toml:"format"`
}

// Default returns the built-in configuration: a working local server that
// needs no privileges.
func Default() *Config {
	return &Config{
		Hostname: "localhost",
		DataDir:  "./data",
		Listen: Listen{
			SMTP:        "127.0.0.1:2525",
			Submission:  "127.0.0.1:2587",
			Submissions: "127.0.0.1:2465",
		},
		Auth: Auth{
			PasswordScheme: "argon2id",
			MinDuration:    Duration(200 * time.Millisecond),
			CacheTTL:       Duration(15 * time.Minute),
			HashQueue:      100,
			HashWait:       Duration(2 * time.Second),
		},
		Limits: Limits{
			MaxMessageSize:      50 << 20,
			MaxRecipients:       100,
			MaxLineLength:       1000,
			CommandTimeout:      Duration(5 * time.Minute),
			SessionTimeout:      Duration(30 * time.Minute),
			MaxConnectionsPerIP: 20,
			MaxConnections:      2000,
		},
		SessionLog: SessionLog{Retention: Duration(30 * 24 * time.Hour)},
		Guard: Guard{
			MaxFailures: 10,
			Window:      Duration(time.Hour),
			BlockFor:    Duration(time.Hour),
			IPv4Prefix:  32,
			IPv6Prefix:  64,
			MaxKeys:     1 << 20,
			Store:       "sqlite",
		},
		LoginGuard: LoginGuard{
			Enabled:             true,
			MaxFailures:         20,
			Window:              Duration(time.Hour),
			UnderAttackFor:      Duration(time.Hour),
			TrustedFor:          Duration(30 * 24 * time.Hour),
			IPv4Prefix:          24,
			IPv6Prefix:          48,
			MaxNetworksPerLogin: 20,
			MaxLogins:           20000,
		},
		Contain: defaultContain(),
		Scan:    defaultScan(),
		Queue: Queue{
			RetryMin:  Duration(5 * time.Minute),
			RetryMax:  Duration(time.Hour),
			MaxAge:    Duration(5 * 24 * time.Hour),
			WarnAfter: Duration(4 * time.Hour), DelayWarning: Duration(4 * time.Hour),
			Workers:   50,
			PerDomain: 5,
		},
		Delivery: Delivery{
			Port:           25,
			TLS:            "opportunistic",
			SmarthostTLS:   "starttls",
			ConnectTimeout: Duration(30 * time.Second),
			Timeout:        Duration(10 * time.Minute),
			// Postfix's defaults are alike: 20 connections per
			// destination, and cached sessions reused while a backlog
			// lasts.
			MaxMessagesPerConnection:     100,
			ConnectionIdleTimeout:        Duration(5 * time.Second),
			MaxConnectionsPerDestination: 20,
		},
		TLS: TLS{ReloadInterval: Duration(time.Minute)},
		ACME: ACME{
			Directory: "https://acme-v02.api.letsencrypt.org/directory",
			Challenge: "tls-alpn-01",
			Listen:    ":443",
		},
		Log: Log{Level: "info", Format: "text"},
		Admin: Admin{
			Listen:           "127.0.0.1:8025",
			SessionIdle:      Duration(30 * time.Minute),
			LoginMaxFailures: 10,
			LoginWindow:      Duration(time.Hour),
			LoginBlockFor:    Duration(time.Hour),
			MetricsNetworks:  []string{"127.0.0.0/8", "::1/128"},
		},
		Store: Store{
			Driver:          "sqlite",
			MaxConns:        10,
			MinConns:        1,
			MaxConnIdleTime: Duration(5 * time.Minute),
			ConnectTimeout:  Duration(5 * time.Second),
			CacheTTL:        Duration(5 * time.Second),
		},
		// Generous for a small business, far below what a stolen
		// password is used to send.
		Sending: Sending{
			SendingLimits: SendingLimits{MessagesPerHour: 200, RecipientsPerHour: 500, RecipientsPerDay: 2000, NewRecipientsPerDay: 300},
			Domain:        SendingLimits{MessagesPerHour: 1000, RecipientsPerHour: 2500, RecipientsPerDay: 10000, NewRecipientsPerDay: 1500},
		},
	}
}

// Path returns the config file to read: flag if set, else $SUBMITD_CONFIG,
// else ./submitd.toml if it exists, else "" (built-in defaults).
func Path(flag string) string {
	if flag != "" {
		return flag
	}
	if p := os.Getenv(EnvVar); p != "" {
		return p
	}
	if _, err := os.Stat(DefaultFile); err == nil {
		return DefaultFile
	}
	return ""
}

// Load reads the file at path over the defaults and validates the result. An
// empty path yields the defaults. An error names the file and the line
// that is wrong: the one the TOML parser stopped at, or the one that sets
// an unknown key or a value Validate refuses ("config F: line N: …"),
// unless that value is a default.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		return c, c.Validate()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			// One line that names the key, so a script or a log shows it.
			if perr.LastKey != "" {
				return nil, fmt.Errorf("config %s: line %d: %s: %s", path, perr.Position.Line, perr.LastKey, perr.Message)
			}
			return nil, fmt.Errorf("config %s: line %d: %s", path, perr.Position.Line, perr.Message)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		if line := keyLine(data, keys[0]); line > 0 {
			return nil, fmt.Errorf("config %s: line %d: unknown key %s", path, line, strings.Join(keys, ", "))
		}
		return nil, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	// [queue] delay_warning and its older name warn_after set one value.
	if md.IsDefined("queue", "delay_warning") {
		if md.IsDefined("queue", "warn_after") && c.Queue.WarnAfter != c.Queue.DelayWarning {
			err := fmt.Errorf("queue.delay_warning %s differs from queue.warn_after %s, its older name: set one of them", c.Queue.DelayWarning, c.Queue.WarnAfter)
			if line := keyLine(data, "queue.delay_warning"); line > 0 {
				return nil, fmt.Errorf("config %s: line %d: %w", path, line, err)
			}
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		c.Queue.WarnAfter = c.Queue.DelayWarning
	}
	c.Queue.DelayWarning = c.Queue.WarnAfter
	if err := c.Validate(); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			if line := keyLine(data, ke.Key); line > 0 {
				return nil, fmt.Errorf("config %s: line %d: %w", path, line, err)
			}
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// KeyError is a value Validate refuses, with the key it was given under,
// so that Load can name the line of the file that sets it.
type KeyError struct {
	// Key is the setting's key, "limits.max_connections_per_ip".
	Key string
	// Err says what is wrong.
	Err error
}

func (e *KeyError) Error() string { return e.Err.Error() }

func (e *KeyError) Unwrap() error { return e.Err }

// keyLine returns the line of data that sets key (1 for the first line),
// or 0 when no line does, as when the value is a default or is set in an
// inline table. It follows [table] headers and reads "name = value" lines,
// bare, quoted or dotted names alike; the file parsed, so nothing else
// needs to be understood.
func keyLine(data []byte, key string) int {
	table := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			h := strings.Trim(strings.TrimSpace(strings.SplitN(line, "]", 2)[0]), "[ ")
			table = unquoteKey(h)
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		full := unquoteKey(name)
		if table != "" {
			full = table + "." + full
		}
		if full == key {
			return i + 1
		}
	}
	return 0
}

// unquoteKey turns a TOML key as written (a.b, "a".'b', a . b) into its
// dotted form without quotes or spaces.
func unquoteKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// Validate checks every value and names the key and value of the first one
// that is wrong.
func (c *Config) Validate() error {
	bad := func(key string, val any, why string) error {
		return &KeyError{Key: key, Err: fmt.Errorf("invalid value %v for %s: %s", quoteIfString(val), key, why)}
	}
	if err := checkHostname(c.Hostname); err != nil {
		return bad("hostname", c.Hostname, err.Error())
	}
	if c.DataDir == "" {
		return bad("data_dir", c.DataDir, "must not be empty")
	}
	listens := []struct{ key, addr string }{
		{"listen.smtp", c.Listen.SMTP},
		{"listen.submission", c.Listen.Submission},
		{"listen.submissions", c.Listen.Submissions},
		{"admin.listen", c.Admin.Listen},
	}
	if c.ACME.Enabled {
		listens = append(listens, struct{ key, addr string }{"acme.listen", c.ACME.Listen})
	}
	for i, l := range listens {
		if l.addr == "" {
			continue
		}
		if err := checkHostPort(l.addr); err != nil {
			return bad(l.key, l.addr, err.Error())
		}
		// The second of two listeners on one address could never bind;
		// say so here, naming both keys, rather than after data_dir is
		// set up and the first listener is open.
		for _, o := range listens[:i] {
			if o.addr != "" && sameListenAddr(o.addr, l.addr) {
				return bad(l.key, l.addr, fmt.Sprintf("collides with %s = %q (one address and port for two listeners)", o.key, o.addr))
			}
		}
	}
	if err := c.validateTLS(bad); err != nil {
		return err
	}
	switch c.Auth.PasswordScheme {
	case "argon2id", "bcrypt":
	default:
		return bad("auth.password_scheme", c.Auth.PasswordScheme, `must be "argon2id" or "bcrypt"`)
	}
	if c.Auth.MinDuration < 0 {
		return bad("auth.min_duration", c.Auth.MinDuration, "must not be negative")
	}
	if c.Auth.CacheTTL < 0 {
		return bad("auth.cache_ttl", c.Auth.CacheTTL, "must not be negative")
	}
	if c.Auth.HashWorkers < 0 || c.Auth.HashWorkers > 1024 {
		return bad("auth.hash_workers", c.Auth.HashWorkers, "must be 0 (one per CPU) to 1024")
	}
	if c.Auth.HashQueue < 1 || c.Auth.HashQueue > 100000 {
		return bad("auth.hash_queue", c.Auth.HashQueue, "must be 1 to 100000")
	}
	if c.Auth.HashWait <= 0 {
		return bad("auth.hash_wait", c.Auth.HashWait, "must be positive")
	}
	for key, nets := range map[string][]string{
		"policy.webmail_networks": c.Policy.WebmailNetworks,
		"guard.exempt_networks":   c.Guard.ExemptNetworks,
		"guard.trusted_proxies":   c.Guard.TrustedProxies,
		"admin.metrics_networks":  c.Admin.MetricsNetworks,
	} {
		if _, err := ParsePrefixes(nets); err != nil {
			return &KeyError{Key: key, Err: fmt.Errorf("invalid value for %s: %w", key, err)}
		}
	}
	l := c.Limits
	switch {
	case l.MaxMessageSize < 1024:
		return bad("limits.max_message_size", l.MaxMessageSize, "must be at least 1024")
	case l.MaxMessageSize > 1<<30:
		return bad("limits.max_message_size", l.MaxMessageSize, "must be at most 1073741824 (1 GiB)")
	case l.MaxRecipients < 1:
		return bad("limits.max_recipients", l.MaxRecipients, "must be at least 1")
	case l.MaxLineLength < 1000:
		return bad("limits.max_line_length", l.MaxLineLength, "must be at least 1000 (RFC 5321 §4.5.3.1.6)")
	case l.CommandTimeout <= 0:
		return bad("limits.command_timeout", l.CommandTimeout, "must be positive")
	case l.SessionTimeout <= 0:
		return bad("limits.session_timeout", l.SessionTimeout, "must be positive")
	case l.MaxConnectionsPerIP < 1:
		return bad("limits.max_connections_per_ip", l.MaxConnectionsPerIP, "must be at least 1")
	case l.MaxConnections < 1:
		return bad("limits.max_connections", l.MaxConnections, "must be at least 1")
	}
	if c.SessionLog.Retention <= 0 {
		return bad("sessionlog.retention", c.SessionLog.Retention, "must be positive")
	}
	g := c.Guard
	switch {
	case g.MaxFailures < 1:
		return bad("guard.max_failures", g.MaxFailures, "must be at least 1")
	case g.Window <= 0:
		return bad("guard.window", g.Window, "must be positive")
	case g.BlockFor <= 0:
		return bad("guard.block_for", g.BlockFor, "must be positive")
	case g.IPv4Prefix < 8 || g.IPv4Prefix > 32:
		return bad("guard.ipv4_prefix", g.IPv4Prefix, "must be between 8 and 32")
	case g.IPv6Prefix < 16 || g.IPv6Prefix > 128:
		return bad("guard.ipv6_prefix", g.IPv6Prefix, "must be between 16 and 128")
	case g.MaxKeys < 1000:
		return bad("guard.max_keys", g.MaxKeys, "must be at least 1000")
	case g.Store != "sqlite" && g.Store != "redis":
		return bad("guard.store", g.Store, `must be "sqlite" or "redis"`)
	case g.Store == "redis" && g.RedisURL == "":
		return bad("guard.redis_url", g.RedisURL, `must be set when guard.store is "redis"`)
	}
	if g.RedisURL != "" {
		// The URL may hold a password: the message names the key and
		// redisconn's reason, which shows the URL without it.
		rc, err := redisconn.Open(g.RedisURL)
		if err != nil {
			return &KeyError{Key: "guard.redis_url", Err: fmt.Errorf("invalid value for guard.redis_url: %w", err)}
		}
		rc.Close()
	}
	lg := c.LoginGuard
	switch {
	case lg.MaxFailures < 2 || lg.MaxFailures > 10000:
		return bad("login_guard.max_failures", lg.MaxFailures, "must be 2 to 10000")
	case lg.Window <= 0:
		return bad("login_guard.window", lg.Window, "must be positive")
	case lg.UnderAttackFor <= 0:
		return bad("login_guard.under_attack_for", lg.UnderAttackFor, "must be positive")
	case lg.TrustedFor <= 0:
		return bad("login_guard.trusted_for", lg.TrustedFor, "must be positive")
	case lg.IPv4Prefix < 8 || lg.IPv4Prefix > 32:
		return bad("login_guard.ipv4_prefix", lg.IPv4Prefix, "must be between 8 and 32")
	case lg.IPv6Prefix < 16 || lg.IPv6Prefix > 128:
		return bad("login_guard.ipv6_prefix", lg.IPv6Prefix, "must be between 16 and 128")
	case lg.MaxNetworksPerLogin < 1 || lg.MaxNetworksPerLogin > 1000:
		return bad("login_guard.max_networks_per_login", lg.MaxNetworksPerLogin, "must be 1 to 1000")
	case lg.MaxLogins < 100:
		return bad("login_guard.max_logins", lg.MaxLogins, "must be at least 100")
	}
	q := c.Queue
	switch {
	case q.RetryMin <= 0:
		return bad("queue.retry_min", q.RetryMin, "must be positive")
	case q.RetryMax < q.RetryMin:
		return bad("queue.retry_max", q.RetryMax, "must be at least queue.retry_min")
	case q.MaxAge <= 0:
		return bad("queue.max_age", q.MaxAge, "must be positive")
	case q.WarnAfter < 0:
		return bad("queue.warn_after", q.WarnAfter, "must not be negative (0 disables warnings)")
	case q.Workers < 1:
		return bad("queue.workers", q.Workers, "must be at least 1")
	case q.PerDomain < 1:
		return bad("queue.per_domain", q.PerDomain, "must be at least 1")
	}
	d := c.Delivery
	if d.Resolver != "" {
		if err := checkHostPort(d.Resolver); err != nil {
			return bad("delivery.resolver", d.Resolver, err.Error())
		}
	}
	if d.Port < 1 || d.Port > 65535 {
		return bad("delivery.port", d.Port, "must be a TCP port")
	}
	switch d.TLS {
	case "opportunistic", "verify":
	default:
		return bad("delivery.tls", d.TLS, `must be "opportunistic" or "verify"`)
	}
	if d.Smarthost != "" {
		if err := checkHostPort(d.Smarthost); err != nil {
			return bad("delivery.smarthost", d.Smarthost, err.Error())
		}
	}
	if d.SPFInclude != "" && !validDomainName(d.SPFInclude) {
		return bad("delivery.spf_include", d.SPFInclude, "must be a domain name")
	}
	if _, err := ParsePrefixes(d.OutboundIPs); err != nil {
		return fmt.Errorf("invalid value for delivery.outbound_ips: %w", err)
	}
	switch d.SmarthostTLS {
	case "starttls", "implicit", "none":
	default:
		return bad("delivery.smarthost_tls", d.SmarthostTLS, `must be "starttls", "implicit" or "none"`)
	}
	if d.ConnectTimeout <= 0 {
		return bad("delivery.connect_timeout", d.ConnectTimeout, "must be positive")
	}
	if d.Timeout <= 0 {
		return bad("delivery.timeout", d.Timeout, "must be positive")
	}
	if d.MaxMessagesPerConnection < 1 {
		return bad("delivery.max_messages_per_connection", d.MaxMessagesPerConnection, "must be at least 1 (1: a new connection per message)")
	}
	// RFC 5321 §4.5.3.2.7: servers wait 5 minutes for a command; a
	// connection kept idle longer would be closed by the other side anyway.
	if d.ConnectionIdleTimeout <= 0 || d.ConnectionIdleTimeout.D() > 5*time.Minute {
		return bad("delivery.connection_idle_timeout", d.ConnectionIdleTimeout, "must be positive and at most 5m")
	}
	if d.MaxConnectionsPerDestination < 1 {
		return bad("delivery.max_connections_per_destination", d.MaxConnectionsPerDestination, "must be at least 1")
	}
	if d.DNSSECResolver != "" {
		if err := checkHostPort(d.DNSSECResolver); err != nil {
			return bad("delivery.dnssec_resolver", d.DNSSECResolver, err.Error())
		}
	}
	if _, err := LoadCARoots(d.CARoots); err != nil {
		return bad("delivery.ca_roots", d.CARoots, err.Error())
	}
	if a, err := netip.ParseAddr(d.SourceIPv4); d.SourceIPv4 != "" && (err != nil || !a.Is4()) {
		return bad("delivery.source_ipv4", d.SourceIPv4, "must be an IPv4 address")
	}
	if a, err := netip.ParseAddr(d.SourceIPv6); d.SourceIPv6 != "" && (err != nil || !a.Is6() || a.Is4In6()) {
		return bad("delivery.source_ipv6", d.SourceIPv6, "must be an IPv6 address")
	}
	a := c.Admin
	switch {
	case a.SessionIdle <= 0:
		return bad("admin.session_idle", a.SessionIdle, "must be positive")
	case a.LoginMaxFailures < 1:
		return bad("admin.login_max_failures", a.LoginMaxFailures, "must be at least 1")
	case a.LoginWindow <= 0:
		return bad("admin.login_window", a.LoginWindow, "must be positive")
	case a.LoginBlockFor <= 0:
		return bad("admin.login_block_for", a.LoginBlockFor, "must be positive")
	}
	if err := c.Store.validate(bad); err != nil {
		return err
	}
	if err := c.Sending.check("sending", bad); err != nil {
		return err
	}
	if err := c.Sending.Domain.check("sending.domain", bad); err != nil {
		return err
	}
	if err := c.Contain.validate(); err != nil {
		return err
	}
	if err := c.Scan.validate(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", c.Log.Level, `must be "debug", "info", "warn" or "error"`)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return bad("log.format", c.Log.Format, `must be "text" or "json"`)
	}
	return nil
}

// validateTLS checks [tls] and [acme]; bad formats the error.
func (c *Config) validateTLS(bad func(key string, val any, why string) error) error {
	t := c.TLS
	if (t.Cert == "") != (t.Key == "") {
		return bad("tls.cert", t.Cert, "tls.cert and tls.key must be set together")
	}
	if t.ReloadInterval.D() < time.Second {
		return bad("tls.reload_interval", t.ReloadInterval, "must be at least 1s")
	}
	for i, cf := range t.Certificate {
		if cf.Cert == "" || cf.Key == "" {
			return bad(fmt.Sprintf("tls.certificate[%d].cert", i), cf.Cert, "cert and key must both be set")
		}
	}
	a := c.ACME
	switch a.Challenge {
	case "tls-alpn-01", "http-01":
	default:
		return bad("acme.challenge", a.Challenge, `must be "tls-alpn-01" or "http-01"`)
	}
	if !a.Enabled {
		return nil
	}
	if !strings.HasPrefix(a.Directory, "https://") {
		return bad("acme.directory", a.Directory, "must be an https:// URL")
	}
	if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t\r\n,")) {
		return bad("acme.email", a.Email, "must be one email address")
	}
	for _, h := range a.Names(c.Hostname) {
		// RFC 8737 §3 and RFC 8555 §8.3 validate one name at a time; a
		// wildcard needs dns-01, which a mail server cannot answer.
		if err := checkHostname(h); err != nil || net.ParseIP(h) != nil || !strings.Contains(h, ".") {
			why := "must be a public DNS name (no wildcard, no IP address)"
			if err != nil {
				why = err.Error()
			}
			return bad("acme.hostnames", h, why)
		}
	}
	if a.Listen == "" {
		return bad("acme.listen", a.Listen, "must be set when acme.enabled is true: the CA connects there")
	}
	return nil
}

// validate checks [store]; bad formats the error.
func (st Store) validate(bad func(key string, val any, why string) error) error {
	switch st.Driver {
	case "sqlite":
		if st.DSN != "" {
			return bad("store.dsn", "(set)", `is used only with store.driver = "postgres"`)
		}
	case "postgres":
		if st.DSN == "" {
			return bad("store.dsn", st.DSN, `must be set with store.driver = "postgres"`)
		}
	default:
		return bad("store.driver", st.Driver, `must be "sqlite" or "postgres"`)
	}
	switch {
	case st.MaxConns < 1 || st.MaxConns > 1000:
		return bad("store.max_conns", st.MaxConns, "must be 1 to 1000")
	case st.MinConns < 0 || st.MinConns > st.MaxConns:
		return bad("store.min_conns", st.MinConns, "must be 0 to store.max_conns")
	case st.MaxConnIdleTime <= 0:
		return bad("store.max_conn_idle_time", st.MaxConnIdleTime, "must be positive")
	case st.ConnectTimeout <= 0 || st.ConnectTimeout.D() > time.Minute:
		return bad("store.connect_timeout", st.ConnectTimeout, "must be positive and at most 1m")
	case st.CacheTTL < 0 || st.CacheTTL.D() > time.Hour:
		return bad("store.cache_ttl", st.CacheTTL, "must be 0s (no cache) to 1h")
	}
	return nil
}

// MaxSendingLimit is the largest sending limit: a typo's extra zeros
// must not turn a limit off in effect, and the recipient history an
// account may build grows with its first-time budget.
// It is sending.MaxValue, which the limiter and the overrides keep to; the
// engine does not read the config, so the number is written twice, and a
// test of internal/node holds the two equal.
const MaxSendingLimit = 10_000_000

// check validates the four limits under table.
func (l SendingLimits) check(table string, bad func(string, any, string) error) error {
	for _, f := range []struct {
		key string
		v   int64
	}{
		{"messages_per_hour", l.MessagesPerHour},
		{"recipients_per_hour", l.RecipientsPerHour},
		{"recipients_per_day", l.RecipientsPerDay},
		{"new_recipients_per_day", l.NewRecipientsPerDay},
	} {
		if f.v < 0 || f.v > MaxSendingLimit {
			return bad(table+"."+f.key, f.v, fmt.Sprintf("must be 0 (no limit) to %d", MaxSendingLimit))
		}
	}
	return nil
}

// checkHostname accepts a host name as EHLO, Received: and Message-ID: need
// it: ASCII letters, digits and inner hyphens in dot-separated labels of at
// most 63 characters, 253 in all (RFC 1123 §2.1, RFC 5321 §4.1.2), no
// trailing dot. A single label ("localhost", the default) is allowed.
func checkHostname(h string) error {
	if h == "" {
		return errors.New("must be a host name")
	}
	if len(h) > 253 {
		return errors.New("must be at most 253 characters")
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return errors.New("has an empty label (a leading, trailing or double dot)")
		case len(l) > 63:
			return errors.New("has a label longer than 63 characters")
		case l[0] == '-' || l[len(l)-1] == '-':
			return errors.New("has a label that starts or ends with a hyphen")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if c >= 0x80 {
				return errors.New("must be ASCII; write an internationalized name in its A-label form (xn--…)")
			}
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return errors.New("may hold only letters, digits, hyphens and dots (RFC 1123 §2.1)")
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("is an IP address, not a host name")
	}
	return nil
}

// sameListenAddr reports whether two valid listen addresses cannot both be
// bound: the same port on the same host, or on a wildcard host that covers
// the other ("" and "::" take IPv4 and IPv6, "0.0.0.0" IPv4). Port 0 picks
// a free port each time and never collides.
func sameListenAddr(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	na, _ := net.LookupPort("tcp", pa)
	nb, _ := net.LookupPort("tcp", pb)
	if na != nb || na == 0 {
		return false
	}
	ha, hb = strings.ToLower(ha), strings.ToLower(hb)
	is6 := func(h string) bool { return strings.Contains(h, ":") }
	switch {
	case ha == hb, ha == "" || ha == "::", hb == "" || hb == "::":
		return true
	case ha == "0.0.0.0":
		return !is6(hb)
	case hb == "0.0.0.0":
		return !is6(ha)
	}
	return false
}

// checkHostPort accepts "host:port" with a numeric port of at most 65535 or
// a service name from the services database, so a typo fails here and not
// when the listener or dialer first uses it.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("must be host:port")
	}
	if strings.ContainsAny(host, " \t\r\n") {
		return errors.New("must be host:port without spaces")
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return fmt.Errorf("port %q is not a TCP port (0-65535)", port)
	}
	return nil
}

func quoteIfString(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case Duration:
		return strconv.Quote(v.String())
	}
	return fmt.Sprint(v)
}

// ParsePrefixes parses CIDRs; a bare address means a single host.
func ParsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePrefix parses one CIDR or bare address, masked to its prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR network", s)
		}
		// Clients are compared in plain IPv4 form, so an IPv4-mapped
		// network (::ffff:192.0.2.0/120) must be too, or it matches nobody.
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR network", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// maxDays is the largest whole number of days a Duration holds.
const maxDays = int(math.MaxInt64 / int64(24*time.Hour))

// Duration is a time.Duration that reads from TOML as a string like "90s",
// "1h30m" or "30d" (days are accepted on top of Go's units).
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d, using days when it is a whole number of them.
func (d Duration) String() string {
	t := time.Duration(d)
	if t > 0 && t%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(t/(24*time.Hour)), 10) + "d"
	}
	return t.String()
}

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		// The bound keeps days*24h inside time.Duration (about 292 years).
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > maxDays {
			return fmt.Errorf("%q is not a duration (like 90s, 15m, 1h, 30d)", s)
		}
		*d = Duration(time.Duration(days) * 24 * time.Hour)
		return nil
	}
	t, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (like 90s, 15m, 1h, 30d)", s)
	}
	*d = Duration(t)
	return nil
}

// MarshalText formats d for TOML.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// validDomainName reports whether s is a DNS name of letters, digits,
// hyphens and underscores (SPF's _spf labels) in dot-separated labels.
func validDomainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
