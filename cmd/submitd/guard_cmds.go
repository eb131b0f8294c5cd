package main

import (
	"context"
	"fmt"
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

// guardStore opens the guard's store that [guard] store names.
func (e *env) guardStore() (*config.Config, guard.Store, func(), error) {
	cfg, db, err := e.openDB()
	if err != nil {
		return nil, nil, nil, err
	}
	st, done, err := node.OpenGuardStore(context.Background(), cfg, db)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	return cfg, st, func() { done(); db.Close() }, nil
}

// runUnblock lifts blocks (SPEC R11a) through the control path: the
// running server's socket, which lifts them in its memory at once, or the
// stores when no server runs.
func runUnblock(e *env, args []string) error {
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 1, -1); err != nil {
		return err
	}
	for _, a := range pos {
		if _, err := guard.ParseTarget(a); err != nil {
			return usageError(err.Error())
		}
	}
	c, err := e.control()
	if err != nil {
		return err
	}
	defer c.done()
	for _, a := range pos {
		var r struct {
			Keys []string `json:"keys"`
		}
		err := c.call("POST", "/api/v1/unblock", map[string]string{"target": a}, &r)
		if notFound(err) {
			fmt.Fprintf(e.stdout, "%s: not blocked, no failures counted\n", a)
			continue
		}
		if err != nil {
			return err
		}
		for _, k := range r.Keys {
			fmt.Fprintf(e.stdout, "unblocked %s\n", k)
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
