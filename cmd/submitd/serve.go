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
		summary: "run the SMTP server (SIGHUP reloads the config file)",
		usage:   "serve",
		run:     runServe,
	})
}

// newLogger builds the process logger from [log]; its level is level,
// set here from [log] level, so that a reload can change it.
func newLogger(cfg *config.Config, w *os.File, level *slog.LevelVar) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.Log.Level))
	level.Set(lvl)
	opts := &slog.HandlerOptions{Level: level}
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
	level := new(slog.LevelVar)
	log := newLogger(cfg, os.Stderr, level)
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
	n.ConfigPath = config.Path(*e.configPath)
	n.LogLevel = level
	// SIGHUP reloads the config file, as "submitd reload" does; a file
	// that does not load is logged and changes nothing. SIGUSR2 hands the
	// listening sockets to a new process of the binary, as "submitd
	// restart" does.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	go func() {
		for {
			select {
			case <-hup:
				n.Reload(ctx)
			case <-usr2:
				pid, err := n.Restart(ctx)
				if err != nil {
					log.Error("SIGUSR2: restart failed; this process goes on serving", "err", err)
					continue
				}
				log.Info("SIGUSR2: the new process takes over", "pid", pid)
			case <-ctx.Done():
				return
			}
		}
	}()
	return n.Run(ctx)
}
