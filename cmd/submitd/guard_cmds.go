package main

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"submitd/internal/config"
	"submitd/internal/guard"
	"submitd/internal/node"
)

func init() {
	register(&command{
		name:    "unblock",
		summary: "lift brute-force blocks and clear failure counts, on the running server too",
		usage:   "unblock IP|CIDR...     (an IPv6 address lifts the prefix it is counted in)",
		run:     runUnblock,
	})
	register(&command{
		name:    "blocked",
		summary: "list blocked client addresses: key, failures, blocked since, until, session ids",
		usage:   "blocked [-all]          (-all: also addresses with failures that are not blocked)",
		run:     runBlocked,
	})
}

// guardStore opens the guard's tables in the configured database.
func (e *env) guardStore() (*config.Config, *guard.SQLite, func(), error) {
	return openStore(e, guard.NewSQLite)
}

// runUnblock lifts blocks (SPEC R11a). It writes to the database the server
// uses; the server reads the change within its poll interval, so no restart
// or signal is needed.
func runUnblock(e *env, args []string) error {
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 1, -1); err != nil {
		return err
	}
	targets := make([]netip.Prefix, len(pos))
	for i, a := range pos {
		if targets[i], err = guard.ParseTarget(a); err != nil {
			return usageError(err.Error())
		}
	}
	cfg, st, closeDB, err := e.guardStore()
	if err != nil {
		return err
	}
	defer closeDB()
	gc := node.GuardConfig(cfg)
	for i, t := range targets {
		p := gc.Target(t)
		keys, err := st.Unblock(context.Background(), "cli", p, time.Now())
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			fmt.Fprintf(e.stdout, "%s: not blocked, no failures counted\n", pos[i])
			continue
		}
		for _, k := range keys {
			fmt.Fprintf(e.stdout, "unblocked %s\n", guard.FormatKey(k))
		}
	}
	return nil
}

// runBlocked lists blocks, one per line: key, failures in the window,
// blocked since, blocked until (RFC 3339, UTC), and the session ids of the
// failures, comma-separated, for "submitd session" (SPEC R11a, R13).
func runBlocked(e *env, args []string) error {
	all := e.fs.Bool("all", false, "also list addresses that have failures but are not blocked")
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, 0); err != nil {
		return err
	}
	cfg, st, closeDB, err := e.guardStore()
	if err != nil {
		return err
	}
	defer closeDB()
	now := time.Now()
	window := cfg.Guard.Window.D()
	state, err := st.Load(context.Background(), now.Add(-window))
	if err != nil {
		return err
	}
	ts := func(t time.Time, ok bool) string {
		if !ok {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, en := range guard.Entries(state, now, window) {
		if !en.Blocked && !*all {
			continue
		}
		ids := strings.Join(en.SIDs, ",")
		if ids == "" {
			ids = "-"
		}
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%s\t%s\n", guard.FormatKey(en.Key), strconv.Itoa(en.Failures),
			ts(en.Since, en.Blocked), ts(en.Until, en.Blocked), ids)
	}
	return nil
}
