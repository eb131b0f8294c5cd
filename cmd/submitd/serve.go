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
	n, err := node.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}
