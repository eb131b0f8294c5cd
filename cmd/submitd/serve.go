package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"submitd/internal/certs"
	"submitd/internal/config"
	"submitd/internal/directory"
	"submitd/internal/guard"
	"submitd/internal/password"
	"submitd/internal/policy"
	"submitd/internal/sessionlog"
	"submitd/internal/smtpd"
	"submitd/internal/spool"
	"submitd/internal/sqlitedb"
)

func init() {
	register(&command{
		name:    "serve",
		summary: "run the SMTP server",
		usage:   "serve",
		run:     runServe,
	})
}

// newLogger builds the process logger from [log].
func newLogger(cfg *config.Config, w *os.File) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runServe(e *env, args []string) error {
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, 0); err != nil {
		return err
	}
	cfg, err := e.config()
	if err != nil {
		return err
	}
	log := newLogger(cfg, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Everything that can be wrong with the configuration is found before
	// anything is created in data_dir.
	replies, err := smtpd.NewReplies(cfg.Replies, cfg.Auth.UniformFailures)
	if err != nil {
		return err
	}
	tlsConf, generated, err := certs.Load(cfg.TLS.Cert, cfg.TLS.Key, cfg.DataDir, cfg.Hostname)
	if err != nil {
		return err
	}
	if generated {
		log.Warn("generated a self-signed TLS certificate; set tls.cert and tls.key for production", "dir", filepath.Join(cfg.DataDir, "tls"))
	}

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	db, err := sqlitedb.OpenDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	dir, err := directory.NewSQLite(ctx, db)
	if err != nil {
		return err
	}
	// SPEC §1: names an older version stored twice, differing only in
	// Unicode normalization, are reported at every start until support
	// resolves them; only the one in NFC can log in.
	twins, err := dir.Twins(ctx)
	if err != nil {
		return err
	}
	for _, t := range twins {
		log.Warn("directory name stored twice in different Unicode forms; only the NFC one is used; see \"submitd account twins\"", "twin", t)
	}
	slstore, err := sessionlog.NewSQLite(ctx, db)
	if err != nil {
		return err
	}
	slw := sessionlog.NewWriter(slstore, cfg.SessionLog.Retention.D(), log)
	defer slw.Close()

	sp, err := spool.Open(filepath.Join(cfg.DataDir, "spool"), log)
	if err != nil {
		return err
	}
	// The queue takes the spool's lock; only then is it safe to clear what
	// interrupted writes left behind.
	q, err := newQueue(ctx, cfg, db, sp, log)
	if err != nil {
		return err
	}
	defer q.Close()
	sp.ClearUnfinished()
	queued, err := sp.Load()
	if err != nil {
		return err
	}
	log.Info("spool loaded", "dir", sp.Dir(), "messages", len(queued))
	q.Load(queued)
	// The queue hears of each message as soon as it is safely on disk.
	sp.OnCommit = q.Add
	qctx, qstop := context.WithCancel(context.Background())
	defer qstop()
	qdone := make(chan struct{})
	go func() {
		defer close(qdone)
		q.Run(qctx)
	}()

	webmail, _ := config.ParsePrefixes(cfg.Policy.WebmailNetworks)
	proxies, _ := config.ParsePrefixes(cfg.Guard.TrustedProxies)

	// SPEC R11: the guard's state is in memory for the refusal path and in
	// the database for restarts; Run follows the database's change log so
	// "submitd unblock" reaches this process without a restart.
	gstore, err := guard.NewSQLite(ctx, db)
	if err != nil {
		return err
	}
	grd, err := guard.New(ctx, guardConfig(cfg), gstore, log)
	if err != nil {
		return err
	}
	if gs := grd.Stats(); gs.BlockedKeys > 0 || gs.TrackedKeys > 0 {
		log.Info("guard state loaded", "blocked", gs.BlockedKeys, "counting", gs.TrackedKeys)
	}
	gctx, gstop := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() {
		defer close(gdone)
		grd.Run(gctx)
	}()
	defer func() { gstop(); <-gdone }()

	srv := &smtpd.Server{
		Hostname:   cfg.Hostname,
		Directory:  dir,
		Policy:     &policy.Policy{Webmail: webmail},
		Guard:      smtpd.GuardOf(grd),
		Spool:      smtpd.SpoolDir(sp),
		SessionLog: slw,
		Replies:    replies,
		Verify:     password.Verify,
		TLS:        tlsConf,
		Limits: smtpd.Limits{
			MaxMessageSize: cfg.Limits.MaxMessageSize,
			MaxRecipients:  cfg.Limits.MaxRecipients,
			MaxLineLength:  cfg.Limits.MaxLineLength,
			// The header section is held in memory while it is checked
			// (SPEC R7); 256 KiB is far above what mail clients send and
			// bounds memory at max_connections.
			MaxHeaderSize:  min(int(cfg.Limits.MaxMessageSize), 256<<10),
			CommandTimeout: cfg.Limits.CommandTimeout.D(),
			SessionTimeout: cfg.Limits.SessionTimeout.D(),
			MaxConnsPerIP:  cfg.Limits.MaxConnectionsPerIP,
			IPv6Prefix:     cfg.Guard.IPv6Prefix,
			MaxConns:       cfg.Limits.MaxConnections,
		},
		MinAuthDuration: cfg.Auth.MinDuration.D(),
		TrustedProxies:  proxies,
		Log:             log,
	}

	listeners := []struct {
		addr string
		lc   smtpd.ListenerConfig
		opt  config.ListenerOptions
	}{
		{cfg.Listen.SMTP, smtpd.ListenerConfig{Name: "smtp"}, cfg.Listener.SMTP},
		{cfg.Listen.Submission, smtpd.ListenerConfig{Name: "submission"}, cfg.Listener.Submission},
		{cfg.Listen.Submissions, smtpd.ListenerConfig{Name: "submissions", ImplicitTLS: true}, cfg.Listener.Submissions},
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var wg sync.WaitGroup
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("listen.%s: %w", l.lc.Name, err)
		}
		lns = append(lns, ln)
		lc := l.lc
		lc.AllowPlaintextAuth = l.opt.AllowPlaintextAuth
		lc.ProxyProtocol = l.opt.ProxyProtocol
		if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsLoopback() && cfg.Hostname == "localhost" {
			// The name goes into the greeting, Received:, Message-IDs and the
			// outbound EHLO; receivers distrust "localhost".
			log.Warn("hostname is \"localhost\" on a public listener; set hostname to this server's DNS name", "listener", lc.Name)
		}
		log.Info("listening", "listener", lc.Name, "addr", ln.Addr().String(),
			"implicit_tls", lc.ImplicitTLS, "plaintext_auth", lc.AllowPlaintextAuth, "proxy_protocol", lc.ProxyProtocol)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln, lc); err != nil {
				errc <- fmt.Errorf("listener %s: %w", lc.Name, err)
			}
		}()
	}
	log.Info("submitd started", "hostname", cfg.Hostname, "data_dir", cfg.DataDir)

	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case failed = <-errc:
		log.Error("listener failed, shutting down", "err", failed)
		stop()
	}
	for _, ln := range lns {
		ln.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	wg.Wait()
	// Deliveries under way are interrupted; their recipients stay due and
	// are tried again at the next start.
	qstop()
	select {
	case <-qdone:
	case <-sctx.Done():
		log.Warn("queue did not stop in time")
	}
	log.Info("stopped")
	return failed
}
