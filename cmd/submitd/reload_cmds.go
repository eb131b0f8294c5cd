package main

import (
	"fmt"
	"net/http"
	"time"

	"submitd/internal/config"
	"submitd/internal/node"
)

func init() {
	register(&command{
		name:    "reload",
		summary: "make the running server read its config file again",
		usage:   "reload",
		run:     runReload,
	})
	register(&command{
		name:    "check-config",
		summary: "check a config file without a running server",
		usage:   "check-config",
		run:     runCheckConfig,
	})
}

// reloadWait is how long "submitd reload" waits for the server's answer: a
// reload that changes [auth] makes one password hash.
const reloadWait = time.Minute

// runReload asks the running server to reload through its control socket
// (POST /api/v1/reload, audited as the CLI's user). The file is checked
// here first, with the server's own checks: a file that does not load is
// reported with its line and nothing is sent, since its data_dir cannot be
// trusted to find the server.
func runReload(e *env, args []string) error {
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, 0); err != nil {
		return err
	}
	cfg, err := e.config()
	if err != nil {
		return fmt.Errorf("nothing changed: %w", err)
	}
	sock := node.SocketPath(cfg)
	ctl, err := dialServer(sock, reloadWait)
	if err != nil {
		return fmt.Errorf("no running server answers on %s: %w", sock, err)
	}
	defer ctl.done()
	var r struct {
		Result string `json:"result"`
	}
	if err := ctl.call(http.MethodPost, "/api/v1/reload", nil, &r); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, r.Result)
	return nil
}

// runCheckConfig loads and validates the config file as "submitd serve"
// and a reload do, and says whether it is good: exit 0, or 1 with the
// reason (the file's line when the TOML does not parse).
func runCheckConfig(e *env, args []string) error {
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, 0); err != nil {
		return err
	}
	path := config.Path(*e.configPath)
	if _, err := config.Load(path); err != nil {
		return err
	}
	if path == "" {
		fmt.Fprintln(e.stdout, "no config file; the built-in defaults are valid")
		return nil
	}
	fmt.Fprintf(e.stdout, "config %s: valid\n", path)
	return nil
}
