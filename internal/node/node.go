// Package node assembles a whole submitd server from its configuration:
// data_dir, certificate, stores, guard, spool, queue, delivery, the SMTP
// server and its listeners. "submitd serve" runs one; tests and benchmarks
// start one in-process on 127.0.0.1:0 ports and read the bound addresses.
package node

import (
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"submitd/internal/admin"
	"submitd/internal/auth"
	"submitd/internal/certs"
	"submitd/internal/config"
	"submitd/internal/contain"
	"submitd/internal/delivery"
	"submitd/internal/directory"
	"submitd/internal/dkim"
	"submitd/internal/guard"
	"submitd/internal/handover"
	"submitd/internal/loginwatch"
	"submitd/internal/metrics"
	"submitd/internal/queue"
	"submitd/internal/redisconn"
	"submitd/internal/scan"
	"submitd/internal/sending"
	"submitd/internal/sessionlog"
	"submitd/internal/smtpd"
	"submitd/internal/spool"
	"submitd/internal/sqlitedb"
	"submitd/internal/systemd"
	"submitd/internal/tlspolicy"
	"submitd/internal/trace"
)

// ShutdownTimeout is how long Run lets open sessions and deliveries finish
// once it is told to stop.
const ShutdownTimeout = 10 * time.Second

// Node is one assembled server. New builds it and binds its listeners; Run
// serves until its context ends, then stops everything and closes the stores.
type Node struct {
	// Config is the configuration the node was built from; Reload puts
	// later ones in force (CurrentConfig).
	Config *config.Config
	// ConfigPath is the file Reload reads; "" reloads the built-in
	// defaults. Set it before Run.
	ConfigPath string
	// Log is the process log.
	Log *slog.Logger
	// LogLevel, when set, is the level of Log, which Reload sets from
	// [log] level; without it that setting needs a restart.
	LogLevel *slog.LevelVar
	// DB is the SQLite database in data_dir that the stores share.
	DB *sql.DB
	// Stores are the shared stores [store] selects.
	Stores *Stores
	// Directory holds domains, accounts and aliases.
	Directory directory.Store
	// SessionLog writes session records (SPEC R13).
	SessionLog *sessionlog.Writer
	// Trace writes the delivery history (SPEC R13a).
	Trace *trace.Recorder
	// Refusals gives refused connections ids that can be looked up.
	Refusals *trace.Refusals
	// Spool holds accepted messages (SPEC R15).
	Spool *spool.Spool
	// Queue delivers what is spooled (SPEC R17).
	Queue *queue.Queue
	// TLSResults count the TLS outcomes of outbound sessions for the
	// daily TLS reports (RFC 8460, SPEC R23).
	TLSResults *tlspolicy.Results
	// STSCache keeps the MTA-STS policies fetched for their max_age (RFC
	// 8461 §5.1), over reloads and, saved in the store, over restarts.
	STSCache *tlspolicy.Cache
	// Guard counts AUTH failures and blocks clients (SPEC R11).
	Guard *guard.Guard
	// Logins counts AUTH failures per login across IPs (SPEC R21); nil
	// when [login_guard] enabled = false.
	Logins *loginwatch.Watch
	// auth decides AUTH attempts: credential cache and hashing pool
	// (Authenticator); a reload of [auth] replaces it.
	auth atomic.Pointer[auth.Authenticator]
	// authDir is the directory auth looks accounts up in.
	authDir auth.Directory
	// Watcher follows the directory's changes (SQLite's change log, or
	// PostgreSQL's notices), so that changes made by the CLI, web or API,
	// on this node or another, reach the authenticator's caches.
	Watcher directory.Feed
	// Accounts caches the accounts AUTH looks up ([store] cache_ttl); nil
	// when cache_ttl is 0.
	Accounts *directory.Cache
	// Sending applies the sending limits (SPEC R19). Its OnLimit tells of
	// every limit an account hits; register there before Run.
	Sending *sending.Limiter
	// Server is the SMTP server all listeners feed.
	Server *smtpd.Server
	// Listeners are the bound listeners, in the order smtp, submission,
	// submissions; a listener with an empty address is left out.
	Listeners []Listener
	// Metrics counts what the node does, for Prometheus (issue 10).
	Metrics *metrics.Metrics
	// MetricsHandler serves Metrics in the Prometheus text format to
	// anyone: whoever mounts it at /metrics decides who may read it.
	MetricsHandler http.Handler
	// Admin is the support and operator server (internal/admin); set its
	// Metrics field before Run to serve /metrics.
	Admin *admin.Server
	// AdminStore holds the staff users and the audit log.
	AdminStore AdminStore
	// LoginGuard limits failed staff logins, apart from SMTP AUTH.
	LoginGuard *guard.Guard
	// AdminListener is the bound [admin] listen address, nil when "".
	AdminListener net.Listener
	// AdminSocket is the bound unix socket data_dir/admin.sock for the CLI.
	AdminSocket net.Listener
	// Detector watches the accounts' compromise signals (SPEC R20); its
	// LimitHit is the sending limits' hook.
	Detector *contain.Detector
	// Contain holds the accounts whose signals trip and releases them.
	Contain *contain.Containment
	// Webhook posts the trips to [contain] webhook; without one it is
	// told of none.
	Webhook *contain.Webhook
	// Notifier tells the service manager (systemd) of readiness, reloads
	// and shutdown; its methods do nothing without one.
	Notifier *systemd.Notifier

	// opts are what the process passed to NewWith.
	opts Options
	// passed are the passed sockets no listener has taken yet.
	passed []passed
	// adminTCP is the bound [admin] listen socket below its connection
	// limit, nil when "".
	adminTCP net.Listener
	// handoff carries the prepared new process from Restart to Run.
	handoff chan *handover.Child
	// restarting is set while a Restart is under way or done.
	restarting atomic.Bool

	// Certs are the certificates the SMTP listeners and an [admin] tls
	// listener share; Certs.Reload checks their files at once.
	Certs *certs.Set
	// ACMEListener is the bound [acme] listen address, nil without ACME.
	ACMEListener net.Listener

	// tls picks the certificate from Certs at each handshake.
	tls *tls.Config
	// scanner is the content scanner in use (SPEC R22), nil without
	// [scan] rspamd_url; scanObserver counts its scans.
	scanner      atomic.Pointer[scan.Client]
	scanObserver scan.Observer

	// reload makes reloads take turns; cur is the configuration in force,
	// and reloaders the extra steps of a reload (AddReloader).
	reload    sync.Mutex
	cur       atomic.Pointer[config.Config]
	reloaders []reloader
	// reloaded counts the reloads for the metrics.
	reloaded func(ok bool)

	// closers undo what New set up, run in reverse order by Close.
	closers []func()
	// closeOnce makes Close safe to call more than once.
	closeOnce sync.Once
	// savingState saves the counts kept in memory (runSaving).
	savingState
}

// Listener is one bound listener and how the server treats it.
type Listener struct {
	// Listener is the bound socket.
	net.Listener
	// Config is what the SMTP server is told about the listener.
	Config smtpd.ListenerConfig
}

// SpoolDir is where a server keeps its spool under data_dir.
func SpoolDir(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "spool") }

// GuardConfig turns [guard] into the guard's configuration; the values were
// checked by config.Validate.
func GuardConfig(cfg *config.Config) guard.Config {
	exempt, _ := config.ParsePrefixes(cfg.Guard.ExemptNetworks)
	return guard.Config{
		MaxFailures: cfg.Guard.MaxFailures,
		Window:      cfg.Guard.Window.D(),
		BlockFor:    cfg.Guard.BlockFor.D(),
		IPv4Prefix:  cfg.Guard.IPv4Prefix,
		IPv6Prefix:  cfg.Guard.IPv6Prefix,
		Exempt:      exempt,
		MaxKeys:     cfg.Guard.MaxKeys,
	}
}

// OpenGuardStore opens the guard's store that [guard] store names: the
// tables in db, or the Redis of redis_url that every node shares (issue 11).
// It does not wait for Redis, which the guard does without while it is
// away. done closes what it opened.
func OpenGuardStore(ctx context.Context, cfg *config.Config, db *sql.DB) (st guard.Store, done func(), err error) {
	if cfg.Guard.Store != "redis" {
		s, err := guard.NewSQLite(ctx, db)
		return s, func() {}, err
	}
	rc, err := redisconn.Open(cfg.Guard.RedisURL)
	if err != nil {
		return nil, nil, err
	}
	s, err := guard.NewRedis(rc, "guard", GuardConfig(cfg))
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	return s, func() { rc.Close() }, nil
}

// New builds a node from cfg: it creates data_dir, opens the stores, loads
// the spool into the queue and binds the listeners, but serves nothing until
// Run. On error everything opened so far is closed again.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Node, error) {
	return NewWith(ctx, cfg, log, Options{})
}

// NewWith is New with what the process passes: listening sockets, the
// process it takes over from, the service manager.
func NewWith(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) (*Node, error) {
	n := &Node{Config: cfg, Log: log, Notifier: opts.Notifier, opts: opts, handoff: make(chan *handover.Child, 1)}
	n.cur.Store(cfg)
	if err := n.open(ctx); err != nil {
		n.Close()
		return nil, err
	}
	// Start-up leaves garbage out of proportion to what a running server
	// holds: the dummy hash for unknown logins alone takes 19 MiB with
	// argon2id. Left to the collector, it sets the first heap goal, and an
	// idle server then collects nothing for a long time while every new
	// session's garbage adds to its resident memory. One collection here
	// puts the goal back at the size of what is live.
	debug.FreeOSMemory()
	return n, nil
}

// open does the work of New.
func (n *Node) open(ctx context.Context) error {
	cfg, log := n.Config, n.Log
	// Everything that can be wrong with the configuration is found before
	// anything is created in data_dir.
	replies, err := smtpd.NewReplies(cfg.Replies, cfg.Auth.UniformFailures)
	if err != nil {
		return err
	}
	if n.Certs, err = certs.New(CertsConfig(cfg, log)); err != nil {
		return err
	}
	if n.Certs.Generated && cfg.ACME.Enabled {
		log.Info("generated a self-signed TLS certificate, served until ACME obtains one", "dir", filepath.Join(cfg.DataDir, "tls"))
	} else if n.Certs.Generated {
		log.Warn("generated a self-signed TLS certificate; set tls.cert and tls.key, or [acme], for production", "dir", filepath.Join(cfg.DataDir, "tls"))
	}
	tlsConf := n.Certs.TLSConfig()
	n.AddReloader([]string{"tls.cert", "tls.key", "tls.certificate"}, n.reloadCerts)

	n.Metrics = metrics.New()
	n.reloaded = n.Metrics.ConfigReloads()
	n.MetricsHandler = n.Metrics.Handler()
	n.Metrics.TLS(n.Certs)

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if n.DB, err = sqlitedb.OpenDir(cfg.DataDir); err != nil {
		return err
	}
	n.onClose(func() { n.DB.Close() })
	if n.Stores, err = OpenStores(ctx, cfg, n.DB); err != nil {
		return err
	}
	n.onClose(n.Stores.Close)
	n.Directory = n.Stores.Directory
	// SPEC §1: names an older version stored twice, differing only in
	// Unicode normalization, are reported at every start until support
	// resolves them; only the one in NFC can log in.
	twins, err := n.Directory.Twins(ctx)
	if err != nil {
		return err
	}
	for _, t := range twins {
		log.Warn("directory name stored twice in different Unicode forms; only the NFC one is used; see \"submitd account twins\"", "twin", t)
	}
	n.SessionLog = sessionlog.NewWriter(n.Stores.Sessions, cfg.SessionLog.Retention.D(), log)
	n.onClose(n.SessionLog.Close)
	n.Metrics.SessionLog(n.SessionLog.Stats)
	// Connections refused at the greeting are recorded by episode, through
	// the session log (SPEC R13a).
	n.Refusals = trace.NewRefusals(n.SessionLog)
	n.onClose(n.Refusals.Close)
	n.Trace = trace.NewRecorder(n.Stores.Trace, cfg.SessionLog.Retention.D(), log)
	n.onClose(n.Trace.Close)
	n.Metrics.Trace(n.Trace.Stats, n.Refusals.Unrecorded)

	// AUTH checks: a credential cache and a bounded pool of hashing
	// workers. The cache follows the directory's change log, so a password
	// change, a new hash or a disable made with the CLI drops the account's
	// cached answers within a poll interval. They are made before the
	// spool's lock is taken: the dummy hash for unknown logins is most of
	// the start-up's time, and a process taking over from a running server
	// makes it while the old one still serves. The guard they ask comes
	// later.
	//
	// The accounts AUTH looks up are cached for [store] cache_ttl, so a
	// busy node does not ask a shared database at every login; the same
	// feed drops a changed account on every node at once.
	if n.Watcher, err = n.Stores.Changes(ctx, log); err != nil {
		return err
	}
	var accounts auth.Directory = n.Directory
	if ttl := cfg.Store.CacheTTL.D(); ttl > 0 {
		n.Accounts = directory.NewCache(n.Directory, ttl, 0, nil)
		n.Watcher.Subscribe(n.Accounts.Changed)
		accounts = n.Accounts
	}
	n.authDir = accounts
	a, err := n.newAuthenticator(cfg)
	if err != nil {
		return err
	}
	n.auth.Store(a)
	n.Watcher.Subscribe(func(ch directory.Change) { n.Authenticator().DirectoryChanged(ch) })

	// A process that takes over from a running server has come as far as
	// it can beside it: the spool's lock, and what only its holder may
	// touch, come next.
	if err := n.prepared(); err != nil {
		return err
	}
	if n.Spool, err = spool.Open(SpoolDir(cfg), log); err != nil {
		return err
	}
	// The queue takes the spool's lock; only then is it safe to clear what
	// interrupted writes left behind.
	// The delivery history reads the Subjects of large messages here.
	n.Trace.Spool = n.Spool
	n.newDetector()
	if err := n.openTLSState(ctx); err != nil {
		return err
	}
	if n.Queue, err = newQueue(cfg, n.Stores.DKIM, n.Spool, n.Metrics, n.Detector.Delivered, n.Trace, n.setDeliveryTLS, log); err != nil {
		return err
	}
	n.Metrics.Queue(n.Queue)
	n.onClose(func() { n.Queue.Close() })
	n.Spool.ClearUnfinished()
	queued, err := n.Spool.Load()
	if err != nil {
		return err
	}
	log.Info("spool loaded", "dir", n.Spool.Dir(), "messages", len(queued))
	if staged, src, _ := n.Spool.Staged(); len(staged) > 0 {
		log.Warn("an adoption of another node's spool was interrupted; run \"submitd queue adopt\" with its directory again to finish it",
			"dir", src, "staged", len(staged))
	}
	n.Queue.Load(queued)
	// The queue hears of each message as soon as it is safely on disk;
	// the history first, so that it has the message before any attempt.
	n.Spool.OnCommit = func(env *spool.Envelope) {
		n.Trace.Accepted(env)
		n.Queue.Add(env)
	}

	// SPEC R11: the guard's state is in memory for the refusal path and in
	// the database for restarts; Run follows the database's change log so
	// "submitd unblock" reaches this process without a restart.
	gstore, closeStore, err := OpenGuardStore(ctx, cfg, n.DB)
	if err != nil {
		return err
	}
	n.onClose(closeStore)
	if n.Guard, err = guard.New(ctx, GuardConfig(cfg), gstore, log); err != nil {
		return err
	}
	n.Metrics.Guard(n.Guard.Stats)
	if gs := n.Guard.Stats(); gs.BlockedKeys > 0 || gs.TrackedKeys > 0 {
		log.Info("guard state loaded", "blocked", gs.BlockedKeys, "counting", gs.TrackedKeys)
	}

	if err := n.openLogins(ctx); err != nil {
		return err
	}

	if err := n.newSending(ctx); err != nil {
		return err
	}

	n.Server = newServer(cfg, n, tlsConf, log)
	n.Server.Settings = ServerSettings(cfg, replies, n.Authenticator())
	if err := n.ApplyScan(cfg.Scan); err != nil {
		return err
	}
	n.AddReloader([]string{"scan."}, n.reloadScan)
	n.tls = tlsConf
	if err := n.newAdmin(ctx); err != nil {
		return err
	}
	if n.Logins != nil {
		n.Server.Logins = n.Logins
		n.Admin.SetLogins(n.Logins)
	}
	if err := n.newContainment(ctx); err != nil {
		return err
	}
	if err := n.openSignals(ctx); err != nil {
		return err
	}
	checkFileLimit(cfg, log)
	return n.listen()
}

// SendingLimits turns [sending] and [sending.domain] into the limiter's
// limits.
func SendingLimits(cfg *config.Config) (acct, dom sending.Limits) {
	f := func(l config.SendingLimits) sending.Limits {
		return sending.Limits{
			sending.MessagesPerHour:     l.MessagesPerHour,
			sending.RecipientsPerHour:   l.RecipientsPerHour,
			sending.RecipientsPerDay:    l.RecipientsPerDay,
			sending.NewRecipientsPerDay: l.NewRecipientsPerDay,
		}
	}
	return f(cfg.Sending.SendingLimits), f(cfg.Sending.Domain)
}

// newSending builds the sending limiter: overrides from the directory,
// which its change feed keeps current, and the first-time-recipient
// history in the node's database, pruned at start. With [guard] store =
// "redis" the windows are counted in that Redis, across every node that
// uses it; otherwise in this process's memory, per node, saved to the
// node's database every StateSaveEvery and loaded at start.
func (n *Node) newSending(ctx context.Context) error {
	h, err := sending.NewSQLiteHistory(ctx, n.DB)
	if err != nil {
		return err
	}
	h.Log = n.Log
	// The history is written behind; what waits is written before the
	// database closes.
	n.onClose(func() {
		if err := h.Close(); err != nil {
			n.Log.Error("sending limits: recipient history not written", "err", err)
		}
	})
	acct, dom := SendingLimits(n.Config)
	// The directory keeps the per-account and per-domain overrides.
	var over sending.Overrides
	if st, ok := n.Directory.(directory.SendingStore); ok {
		over = st
	}
	var counter sending.Counter
	if n.Config.Guard.Store == "redis" {
		rc, err := redisconn.Open(n.Config.Guard.RedisURL)
		if err != nil {
			return err
		}
		n.onClose(func() { rc.Close() })
		counter = sending.NewRedis(rc)
	} else {
		ws, err := sending.NewSQLiteWindows(ctx, n.DB)
		if err != nil {
			return err
		}
		mem := sending.NewMemory()
		if err := mem.Restore(ctx, ws, time.Now()); err != nil {
			return err
		}
		counter = mem
		n.keepSaving("sending windows", func(ctx context.Context) error { return mem.Flush(ctx, time.Now()) })
	}
	n.Sending = sending.New(sending.Config{Account: acct, Domain: dom, Overrides: over, Counter: counter, History: h, Log: n.Log})
	n.Watcher.Subscribe(n.Sending.DirectoryChanged)
	n.Sending.Prune(time.Now())
	return nil
}

// adminMaxConns bounds the connections the admin TCP listener serves at
// once.
const adminMaxConns = 64

// acmeMaxConns bounds the connections the ACME challenge listener serves
// at once.
const acmeMaxConns = 32

// maxSocketPath is the longest unix socket path Linux takes (sun_path is
// 108 bytes with the terminating NUL).
const maxSocketPath = 107

// SocketPath is where a server listens for the CLI: data_dir/admin.sock.
func SocketPath(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "admin.sock") }

// newAdmin builds the node's admin server.
func (n *Node) newAdmin(ctx context.Context) error {
	cfg := n.Config
	q := liveQueue{Admin: &queue.Admin{Spool: n.Spool, Hostname: cfg.Hostname, MaxAge: cfg.Queue.MaxAge.D()}, q: n.Queue}
	var err error
	if n.Admin, n.AdminStore, n.LoginGuard, err = NewAdmin(ctx, cfg, n.DB, n.Stores, n.Guard, q, n.Log); err != nil {
		return err
	}
	n.Admin.Metrics = n.MetricsHandler
	n.Admin.Warnings = n.Certs.Warnings
	n.Admin.SendingUsage = n.Sending.Usage
	n.Admin.Reload = n.Reload
	n.Admin.Restart = n.Restart
	return nil
}

// liveQueue is the running queue as the admin API sees it: listings read
// the spool, and retries and deletes go to the queue itself.
type liveQueue struct {
	*queue.Admin
	// q is the running queue.
	q *queue.Queue
}

// Retry implements admin.Queue.
func (l liveQueue) Retry(id string) (string, error) { return l.q.Retry(id) }

// Delete implements admin.Queue.
func (l liveQueue) Delete(id string, bounce bool) (string, error) { return l.q.Delete(id, bounce) }

// NewAdmin builds an admin server over the shared stores st from cfg, with
// a login guard of its own tables and limits ([admin] login_*) in the
// node's database db. The node
// serves one; the CLI runs one in-process when no server runs, so that a
// change takes the same path, checks and audit entry either way. q may be
// nil when there is no spool.
func NewAdmin(ctx context.Context, cfg *config.Config, db *sql.DB, st *Stores, g admin.Guard, q admin.Queue,
	log *slog.Logger) (*admin.Server, AdminStore, *guard.Guard, error) {
	lstore, err := guard.NewSQLiteNamed(ctx, db, "admin_login")
	if err != nil {
		return nil, nil, nil, err
	}
	lg, err := guard.New(ctx, AdminLoginConfig(cfg), lstore, log)
	if err != nil {
		return nil, nil, nil, err
	}
	c := admin.Config{
		Directory:    st.Directory,
		Sessions:     st.Sessions,
		Trace:        st.Trace,
		Guard:        g,
		DKIM:         st.DKIM,
		Staff:        st.Admin,
		Audit:        st.Admin,
		LoginGuard:   lg,
		SecureCookie: cfg.Admin.TLS,
		Log:          log,
	}
	if q != nil {
		c.Queue = q
	}
	srv := admin.New(c)
	srv.SetSettings(AdminSettings(cfg))
	return srv, st.Admin, lg, nil
}

// listenAdmin binds [admin] listen and the CLI's unix socket.
func (n *Node) listenAdmin() error {
	cfg := n.Config
	tcp, err := n.passedOrListen("admin", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	if tcp != nil {
		// Staff, scripts and a scraper need a few connections; more only
		// wait, so a client that reaches the port cannot hold many.
		n.adminTCP = tcp
		n.AdminListener = netutil.LimitListener(tcp, adminMaxConns)
		n.onClose(func() { tcp.Close() })
	}
	// The spool lock (taken by the queue above) makes this the only
	// server on data_dir, so a socket left by a crash can go.
	path := SocketPath(cfg)
	if len(path) > maxSocketPath {
		// The CLI then works on the stores directly, as without a server.
		n.Log.Warn("data_dir path too long for the CLI's unix socket; CLI changes reach this server only through the stores",
			"socket", path, "max", maxSocketPath)
		return nil
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	// data_dir is 0750, so nobody outside its group reaches the socket
	// before the chmod; after it only the server's user does.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	n.AdminSocket = ln
	n.onClose(func() { ln.Close() })
	return nil
}

// AdminAddr is the bound [admin] listen address, or "" when it is off.
func (n *Node) AdminAddr() string {
	if n.AdminListener == nil {
		return ""
	}
	return n.AdminListener.Addr().String()
}

// serveAdmin serves the admin listeners until stop, then shuts them down.
func (n *Node) serveAdmin(errc chan<- error) (stop func(context.Context)) {
	var servers []*http.Server
	serve := func(ln net.Listener, socket bool, name string) {
		hs := n.Admin.HTTPServer(socket)
		servers = append(servers, hs)
		go func() {
			if err := hs.Serve(ln); err != nil && err != http.ErrServerClosed {
				errc <- fmt.Errorf("admin %s: %w", name, err)
			}
		}()
	}
	if n.AdminListener != nil {
		ln := n.AdminListener
		if n.Config.Admin.TLS {
			ln = tls.NewListener(ln, n.tls.Clone())
		}
		n.Log.Info("admin listening", "addr", n.AdminAddr(), "tls", n.Config.Admin.TLS)
		serve(ln, false, "listener")
	}
	if n.AdminSocket != nil {
		serve(n.AdminSocket, true, "socket")
	}
	return func(ctx context.Context) {
		for _, hs := range servers {
			hs.Shutdown(ctx)
		}
	}
}

// newQueue builds the delivery queue the server runs over sp (SPEC R17,
// R18): the sender [delivery] asks for, and DKIM signing with the shared
// keys ("submitd dkim generate"); outcomes hears the results by account,
// setTLS hands it the TLS results and the MTA-STS policy cache.
func newQueue(cfg *config.Config, keys dkim.Keys, sp *spool.Spool, obs queue.Observer,
	outcomes func(string, []delivery.Result), tracer queue.Tracer, setTLS func(*delivery.Settings), log *slog.Logger) (*queue.Queue, error) {
	ds := DeliverySettings(cfg)
	setTLS(&ds)
	sender, err := delivery.New(ds, log)
	if err != nil {
		return nil, err
	}
	signer := dkim.NewSigner(keys, log)
	st := QueueSettings(cfg, sender)
	return queue.New(queue.Config{
		Spool: sp, Sender: sender, Signer: signer, Hostname: cfg.Hostname,
		RetryMin: st.RetryMin, RetryMax: st.RetryMax, MaxAge: st.MaxAge, WarnAfter: st.WarnAfter,
		Workers: st.Workers, PerDomain: st.PerDomain, Log: log, Observer: obs, Outcomes: outcomes, Tracer: tracer,
	})
}

// loginsPruneEvery is how often the login history forgets successes older
// than login_guard.trusted_for.
const loginsPruneEvery = time.Hour

// LoginWatchConfig turns [login_guard] into the watch's configuration; the
// values were checked by config.Validate.
func LoginWatchConfig(cfg *config.Config) loginwatch.Config {
	lg := cfg.LoginGuard
	return loginwatch.Config{
		MaxFailures: lg.MaxFailures,
		Window:      lg.Window.D(),
		AttackFor:   lg.UnderAttackFor.D(),
		TrustFor:    lg.TrustedFor.D(),
		MaxNetworks: lg.MaxNetworksPerLogin,
		MaxLogins:   lg.MaxLogins,
		IPv4Prefix:  lg.IPv4Prefix,
		IPv6Prefix:  lg.IPv6Prefix,
	}
}

// openLogins sets up the per-login failure count (SPEC R21): counts in
// memory, saved every StateSaveEvery and loaded at start, with the
// successes, in the guard's store: the node's database, or with [guard]
// store = "redis" the Redis every node shares.
func (n *Node) openLogins(ctx context.Context) error {
	if !n.Config.LoginGuard.Enabled {
		return nil
	}
	var st interface {
		loginwatch.Store
		loginwatch.StateStore
	}
	if n.Config.Guard.Store == "redis" {
		rc, err := redisconn.Open(n.Config.Guard.RedisURL)
		if err != nil {
			return err
		}
		n.onClose(func() { rc.Close() })
		st = loginwatch.NewRedis(rc)
	} else {
		s, err := loginwatch.NewSQLite(ctx, n.DB)
		if err != nil {
			return err
		}
		st = s
	}
	lc := LoginWatchConfig(n.Config)
	lc.Log = n.Log
	n.Logins = loginwatch.New(lc, st)
	if err := n.Logins.Restore(ctx, st); err != nil {
		// As with the guard, Redis may be away at start: the count
		// starts afresh rather than the node not starting.
		n.Log.Error("login failures not loaded; counting starts afresh", "err", err)
	}
	n.keepSaving("login failures", n.Logins.Flush)
	n.Metrics.Logins(n.Logins.Stats)
	return nil
}

// newAuthenticator builds the AUTH checker from [auth] over the node's
// directory and guard.
func (n *Node) newAuthenticator(cfg *config.Config) (*auth.Authenticator, error) {
	ttl := cfg.Auth.CacheTTL.D()
	if ttl == 0 {
		ttl = -1 // "0s" turns the cache off; auth.Config's zero is the default
	}
	return auth.New(auth.Config{
		Directory: n.authDir,
		Scheme:    cfg.Auth.PasswordScheme,
		CacheTTL:  ttl,
		Workers:   cfg.Auth.HashWorkers,
		Queue:     cfg.Auth.HashQueue,
		Wait:      cfg.Auth.HashWait.D(),
		// The guard is made after the authenticator (a process taking over
		// makes the authenticator before the spool's lock is free).
		Clean: func(p netip.Prefix) bool { return n.Guard.Clean(p) },
		Log:   n.Log,
	})
}

// Authenticator returns the AUTH checker in force.
func (n *Node) Authenticator() *auth.Authenticator { return n.auth.Load() }

// newServer makes the SMTP server over the node's stores; its Settings
// are set by the caller (ServerSettings).
func newServer(cfg *config.Config, n *Node, tlsConf *tls.Config, log *slog.Logger) *smtpd.Server {
	return &smtpd.Server{
		Hostname:   cfg.Hostname,
		Directory:  n.Directory,
		Guard:      smtpd.GuardOf(n.Guard),
		Limiter:    smtpd.LimiterOf(n.Sending),
		Spool:      smtpd.SpoolDir(n.Spool),
		SessionLog: n.SessionLog,
		Refusals:   n.Refusals,
		AuthKey:    n.Guard.Key,
		TLS:        tlsConf,
		Log:        log,
		Metrics:    n.Metrics,
	}
}

// listen binds the configured listeners.
func (n *Node) listen() error {
	cfg := n.Config
	listeners := []struct {
		addr string
		lc   smtpd.ListenerConfig
		opt  config.ListenerOptions
	}{
		{cfg.Listen.SMTP, smtpd.ListenerConfig{Name: "smtp"}, cfg.Listener.SMTP},
		{cfg.Listen.Submission, smtpd.ListenerConfig{Name: "submission"}, cfg.Listener.Submission},
		{cfg.Listen.Submissions, smtpd.ListenerConfig{Name: "submissions", ImplicitTLS: true}, cfg.Listener.Submissions},
	}
	n.onClose(n.closeListeners)
	n.onClose(n.closeUnusedSockets)
	if err := n.openPassed(); err != nil {
		return err
	}
	if err := n.listenAdmin(); err != nil {
		return err
	}
	if cfg.ACME.Enabled {
		ln, err := net.Listen("tcp", cfg.ACME.Listen)
		if err != nil {
			return fmt.Errorf("acme.listen: %w", err)
		}
		// The CA validates with a few connections at once; anyone else
		// reaching the port gets no more.
		n.ACMEListener = netutil.LimitListener(ln, acmeMaxConns)
		n.onClose(func() { ln.Close() })
	}
	for _, l := range listeners {
		ln, err := n.passedOrListen(l.lc.Name, l.addr)
		if err != nil {
			return fmt.Errorf("listen.%s: %w", l.lc.Name, err)
		}
		if ln == nil {
			continue
		}
		lc := l.lc
		lc.AllowPlaintextAuth = l.opt.AllowPlaintextAuth
		lc.ProxyProtocol = l.opt.ProxyProtocol
		n.Listeners = append(n.Listeners, Listener{Listener: ln, Config: lc})
		n.Metrics.Listeners(lc.Name)
	}
	n.closeUnusedSockets()
	return nil
}

// closeListeners closes every listener; closing one twice is harmless.
func (n *Node) closeListeners() {
	for _, l := range n.Listeners {
		l.Close()
	}
	if n.ACMEListener != nil {
		n.ACMEListener.Close()
	}
}

// Addr is the bound address of the named listener ("smtp", "submission",
// "submissions"), or "" when it is not configured.
func (n *Node) Addr(name string) string {
	for _, l := range n.Listeners {
		if l.Config.Name == name {
			return l.Addr().String()
		}
	}
	return ""
}

// Run serves until ctx ends or a listener fails, then stops accepting, lets
// open sessions and deliveries finish for up to ShutdownTimeout, and closes
// the node. It returns the listener's error when one failed.
func (n *Node) Run(ctx context.Context) error {
	// A node that hands over lets the new process take what it closed.
	var child *handover.Child
	defer func() {
		if child != nil {
			n.finishHandover(child)
		}
	}()
	defer n.Close()
	log, cfg := n.Log, n.Config

	qctx, qstop := context.WithCancel(context.Background())
	defer qstop()
	qdone := make(chan struct{})
	go func() {
		defer close(qdone)
		n.Queue.Run(qctx)
	}()
	gctx, gstop := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() {
		defer close(gdone)
		n.Guard.Run(gctx)
	}()
	defer func() { gstop(); <-gdone }()
	wctx, wstop := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		n.Watcher.Run(wctx)
	}()
	defer func() { wstop(); <-wdone }()
	lctx, lstop := context.WithCancel(context.Background())
	ldone := make(chan struct{})
	go func() {
		defer close(ldone)
		n.LoginGuard.Run(lctx)
	}()
	defer func() { lstop(); <-ldone }()
	if n.Logins != nil {
		pctx, pstop := context.WithCancel(context.Background())
		pdone := make(chan struct{})
		go func() {
			defer close(pdone)
			n.Logins.Run(pctx, loginsPruneEvery)
		}()
		defer func() { pstop(); <-pdone }()
	}
	cctx, cstop := context.WithCancel(context.Background())
	cdone := n.runContainment(cctx)
	defer func() { cstop(); <-cdone }()
	tctx, tstop := context.WithCancel(context.Background())
	tdone := make(chan struct{})
	go func() {
		defer close(tdone)
		n.Certs.Run(tctx)
	}()
	defer func() { tstop(); <-tdone }()
	rctx, rstop := context.WithCancel(context.Background())
	rdone := n.runTLSReports(rctx)
	defer func() { rstop(); <-rdone }()
	// Declared last, this runs first on the way out: the final save comes
	// after the sessions and deliveries ended, before the stores close.
	savectx, savestop := context.WithCancel(context.Background())
	savedone := n.runSaving(savectx)
	defer func() { savestop(); <-savedone }()

	var wg sync.WaitGroup
	errc := make(chan error, len(n.Listeners)+3)
	stopAdmin := n.serveAdmin(errc)
	if ln := n.ACMEListener; ln != nil {
		log.Info("answering ACME challenges", "addr", ln.Addr().String(), "challenge", cfg.ACME.Challenge)
		wg.Go(func() {
			if err := n.Certs.ServeACME(ln); err != nil {
				errc <- fmt.Errorf("acme listener: %w", err)
			}
		})
	}
	for _, l := range n.Listeners {
		lc := l.Config
		if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && !ap.Addr().IsLoopback() && cfg.Hostname == "localhost" {
			// The name goes into the greeting, Received:, Message-IDs and the
			// outbound EHLO; receivers distrust "localhost".
			log.Warn("hostname is \"localhost\" on a public listener; set hostname to this server's DNS name", "listener", lc.Name)
		}
		log.Info("listening", "listener", lc.Name, "addr", l.Addr().String(),
			"implicit_tls", lc.ImplicitTLS, "plaintext_auth", lc.AllowPlaintextAuth, "proxy_protocol", lc.ProxyProtocol)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Server.Serve(l.Listener, lc); err != nil {
				errc <- fmt.Errorf("listener %s: %w", lc.Name, err)
			}
		}()
	}
	log.Info("submitd started", "hostname", cfg.Hostname, "data_dir", cfg.DataDir, "pid", os.Getpid())
	n.NotifyReady("serving")
	if p := n.opts.Parent; p != nil {
		p.Ready()
	}

	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		n.notify(func(sn *systemd.Notifier) error { return sn.Stopping("shutting down") })
	case failed = <-errc:
		log.Error("listener failed, shutting down", "err", failed)
		n.notify(func(sn *systemd.Notifier) error { return sn.Stopping("listener failed") })
	case child = <-n.handoff:
		// systemd follows the new process from now on; this one's exit
		// is not the service's.
		log.Info("restart: handing over to the new process", "pid", child.Pid())
		n.notify(func(sn *systemd.Notifier) error { return sn.MainPID(child.Pid()) })
	}
	// The new process holds its own copies of the listening sockets:
	// closing these stops this process accepting, and connections wait in
	// the backlog for the new one.
	n.closeListeners()
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	// The admin server, the SMTP sessions and, for a handover, the
	// deliveries under way wind down side by side: the new process waits
	// for the slowest of them.
	var stopping sync.WaitGroup
	stopping.Add(1)
	go func() {
		defer stopping.Done()
		stopAdmin(sctx)
	}()
	if child != nil {
		stopping.Add(1)
		go func() {
			defer stopping.Done()
			if !n.Queue.Drain(sctx) {
				log.Warn("restart: deliveries still under way at the shutdown timeout are interrupted")
			}
		}()
	}
	n.Server.Shutdown(sctx)
	wg.Wait()
	stopping.Wait()
	// Deliveries under way are interrupted; their recipients stay due and
	// are tried again at the next start. A handover has let them finish.
	qstop()
	select {
	case <-qdone:
	case <-sctx.Done():
		log.Warn("queue did not stop in time")
	}
	log.Info("stopped")
	return failed
}

// Close releases what New opened: listeners, queue, session log writer and
// database. Run calls it on its way out; a node that is never run must be
// closed by its maker.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		for i := len(n.closers) - 1; i >= 0; i-- {
			n.closers[i]()
		}
	})
}

// onClose adds f to what Close undoes.
func (n *Node) onClose(f func()) { n.closers = append(n.closers, f) }
