package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"submitd/internal/config"
	"submitd/internal/node"
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
	n, err := node.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	n.ConfigPath = config.Path(*e.configPath)
	n.LogLevel = level
	// SIGHUP reloads the config file, as "submitd reload" does; a file
	// that does not load is logged and changes nothing.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				n.Reload(ctx)
			case <-ctx.Done():
				return
			}
		}
	}()
	return n.Run(ctx)
}
