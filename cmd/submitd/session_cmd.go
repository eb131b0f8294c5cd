package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"submitd/internal/ids"
	"submitd/internal/queue"
	"submitd/internal/spool"
	"submitd/internal/trace"
)

func init() {
	register(&command{
		name:    "session",
		summary: "show what happened in an SMTP session, by the id from a reply or log line",
		usage:   "session SESSION_ID",
		run:     runSession,
	})
}

func runSession(e *env, args []string) error {
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 1, 1); err != nil {
		return err
	}
	if !ids.IsSession(pos[0]) {
		return fmt.Errorf("%q is not a session id (22 letters and digits)", pos[0])
	}
	// With the postgres driver this finds a session whichever node
	// served it.
	cfg, st, done, err := e.stores()
	if err != nil {
		return err
	}
	defer done()
	r, err := trace.Session(context.Background(), st.Sessions, pos[0])
	if err != nil {
		return err
	}
	ts := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000Z") }
	w := e.stdout
	fmt.Fprintf(w, "session   %s\n", r.ID)
	fmt.Fprintf(w, "start     %s\n", ts(r.Start))
	fmt.Fprintf(w, "end       %s (%s)\n", ts(r.End), r.End.Sub(r.Start).Round(time.Millisecond))
	fmt.Fprintf(w, "listener  %s\n", r.Listener)
	fmt.Fprintf(w, "client    %s port %d\n", r.ClientIP, r.ClientPort)
	tlsv := r.TLS
	if tlsv == "" {
		tlsv = "none"
	}
	fmt.Fprintf(w, "tls       %s\n", tlsv)
	fmt.Fprintf(w, "helo      %s\n", printable(r.HELO))
	acct := r.Account
	if acct == "" {
		acct = "(not authenticated)"
	}
	fmt.Fprintf(w, "account   %s\n", acct)
	// Each accepted message with what has become of it, so support sees
	// the whole story in one place (SPEC R13).
	var qa *queue.Admin
	if sp, err := spool.Attach(filepath.Join(cfg.DataDir, "spool"), slog.New(slog.DiscardHandler)); err == nil {
		qa = &queue.Admin{Spool: sp}
	}
	for _, q := range r.QueueIDs() {
		state := "not in the queue any more: delivered, or bounced or deleted (see the log)"
		if qa != nil {
			if it, _, err := qa.Show(q); err == nil {
				state = rcptStates(it.State)
			}
		}
		fmt.Fprintf(w, "queued    %s  %s\n", q, state)
	}
	fmt.Fprintln(w, "events:")
	for _, ev := range r.Events {
		line := fmt.Sprintf("  %s  %-8s", ts(ev.Time), ev.Kind)
		if ev.Detail != "" {
			line += " " + printable(ev.Detail)
		}
		if ev.Reply != "" {
			line += "  -> " + printable(ev.Reply)
		}
		fmt.Fprintln(w, line)
	}
	return nil
}
