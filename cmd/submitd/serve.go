package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"submitd/internal/config"
	"submitd/internal/handover"
	"submitd/internal/node"
	"submitd/internal/systemd"
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
	// The listening sockets come from systemd's socket activation, or from
	// the process this one takes over from (submitd restart, SIGUSR2).
	socks, err := systemd.Listeners()
	if err != nil {
		return err
	}
	parent, err := handover.FromParent()
	if err != nil {
		return err
	}
	n, err := node.NewWith(ctx, cfg, log, node.Options{Sockets: socks, Parent: parent, Notifier: systemd.NewNotifier()})
	if err != nil {
		return err
	}
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	go func() {
		for range usr2 {
			pid, err := n.Restart(ctx)
			if err != nil {
				log.Error("SIGUSR2: restart failed; this process goes on serving", "err", err)
				continue
			}
			log.Info("SIGUSR2: the new process takes over", "pid", pid)
		}
	}()
	return n.Run(ctx)
}
