package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"submitd/internal/node"
	"submitd/internal/queue"
	"submitd/internal/spool"
)

func init() {
	register(&command{
		name:    "queue",
		summary: "list, inspect, retry and delete queued messages (retry and delete go through the running server)",
		usage: `queue list                 (one line per message: id, age, sender, recipients:state, next attempt)
			queue show ID
			queue retry ID|all         (try every undelivered recipient now)
			queue delete [-bounce] ID  (no report to the sender unless -bounce)
			queue adopt DIR            (move a stopped node's spool, its disk mounted here, into this node's queue)
			queue backoffs             (destinations whose receiver asked to slow down: host, paused until, connections, until, level, reply)`,
		run: runQueue,
	})
}

func runQueue(e *env, args []string) error {
	bounce := e.fs.Bool("bounce", false, "with delete: report the undelivered recipients to the sender")
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	var n int
	switch verb {
	case "list", "backoffs":
		n = 0
	case "show", "retry", "delete", "adopt":
		n = 1
	default:
		return usageError(fmt.Sprintf("unknown verb %q", verb))
	}
	if err := want(args, n, n); err != nil {
		return err
	}
	if *bounce && verb != "delete" {
		return usageError("-bounce goes with delete only")
	}
	if verb == "backoffs" {
		return queueBackoffs(e)
	}
	cfg, err := e.config()
	if err != nil {
		return err
	}
	sp, err := spool.Attach(node.SpoolDir(cfg), slog.New(slog.DiscardHandler))
	if err != nil {
		return fmt.Errorf("no spool (has the server run with data_dir %s?): %w", cfg.DataDir, err)
	}
	// Changes go through the running server's socket, or the same API
	// on the spool when no server runs.
	switch verb {
	case "retry":
		return e.change("POST", "/api/v1/queue/"+p(args[0])+"/retry", nil)
	case "delete":
		return e.change("POST", "/api/v1/queue/"+p(args[0])+"/delete", map[string]bool{"bounce": *bounce})
	case "adopt":
		// The server resolves no relative path of ours.
		dir, err := filepath.Abs(args[0])
		if err != nil {
			return err
		}
		// Adoption syncs every message it moves; a large spool takes a while.
		return e.changeWithin(6*time.Hour, "POST", "/api/v1/queue/adopt", map[string]string{"dir": dir})
	}
	a := &queue.Admin{Spool: sp, Hostname: cfg.Hostname, MaxAge: cfg.Queue.MaxAge.D()}
	switch verb {
	case "list":
		return queueList(e, a)
	case "show":
		return queueShow(e, a, args[0])
	}
	return nil
}

// sender formats an envelope sender, <> for the null sender.
func sender(from string) string { return "<" + from + ">" }

// showTime is the time layout of "queue show", for reading.
const showTime = "2006-01-02 15:04:05Z"

func fmtTime(t time.Time) string { return t.UTC().Format(showTime) }

// age formats how long ago t was, to the second.
func age(t time.Time) string { return time.Since(t).Round(time.Second).String() }

// next formats when a message is due: "now", a time in layout (UTC), "-"
// when nothing is left to try, or "held" while its account is held (SPEC
// R20).
func next(st *queue.State, layout string) string {
	t, ok := st.NextDue()
	switch {
	case st.Held != nil:
		return "held"
	case !ok:
		return "-"
	case !t.After(time.Now()):
		return "now"
	}
	return t.UTC().Format(layout)
}

// queueList prints one tab-separated line per message: id, age, sender,
// recipients with their state, next attempt (RFC 3339, UTC, like "submitd
// blocked"). No field holds a blank, so awk's default splitting works too.
func queueList(e *env, a *queue.Admin) error {
	items, err := a.List()
	if err != nil {
		return err
	}
	for _, it := range items {
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%s\t%s\n", it.Env.ID, age(it.Env.Received), sender(it.Env.From),
			rcptStates(it.State), next(it.State, time.RFC3339))
	}
	if len(items) == 0 {
		fmt.Fprintln(e.stderr, "the queue is empty")
	}
	return nil
}

// queueBackoffs prints one tab-separated line per destination in
// back-off, from the running server (only its queue delivers): the MX
// host, the end of its pause, the lowered connection limit and until
// when, how many replies in a row asked for it, and the last such reply.
func queueBackoffs(e *env) error {
	var r struct {
		Items []struct {
			Host           string    `json:"host"`
			Reason         string    `json:"reason"`
			PausedUntil    time.Time `json:"paused_until"`
			MaxConnections int       `json:"max_connections"`
			LimitedUntil   time.Time `json:"limited_until"`
			Level          int       `json:"level"`
		} `json:"items"`
	}
	if err := e.get("/api/v1/queue/backoffs?limit=500", &r); err != nil {
		return err
	}
	for _, b := range r.Items {
		fmt.Fprintf(e.stdout, "%s\t%s\t%d\t%s\t%d\t%s\n", b.Host, stamp(b.PausedUntil), b.MaxConnections,
			stamp(b.LimitedUntil), b.Level, b.Reason)
	}
	if len(r.Items) == 0 {
		fmt.Fprintln(e.stderr, "no destination in back-off")
	}
	return nil
}

// rcptStates formats each recipient with its state, as "addr:state", with
// the attempt count of deferred ones.
func rcptStates(st *queue.State) string {
	rcpts := make([]string, len(st.Rcpts))
	for i, r := range st.Rcpts {
		rcpts[i] = fmt.Sprintf("%s:%s", r.Addr, r.Status)
		if r.Status == queue.Deferred {
			rcpts[i] += fmt.Sprintf("(%d)", r.Attempts)
		}
	}
	return strings.Join(rcpts, ",")
}

// queueShow prints one message's envelope, state, attempt history and
// header section.
func queueShow(e *env, a *queue.Admin, id string) error {
	it, headers, err := a.Show(id)
	if err != nil {
		return err
	}
	w := e.stdout
	env, st := it.Env, it.State
	kind := "submitted"
	if env.Kind == queue.KindDSN {
		kind = "delivery report (DSN)"
	}
	fmt.Fprintf(w, "id         %s\n", env.ID)
	fmt.Fprintf(w, "kind       %s\n", kind)
	fmt.Fprintf(w, "session    %s\n", dash(env.SessionID))
	fmt.Fprintf(w, "account    %s\n", dash(env.Account))
	fmt.Fprintf(w, "client     %s\n", dash(env.ClientIP))
	fmt.Fprintf(w, "received   %s (%s ago)\n", fmtTime(env.Received), age(env.Received))
	fmt.Fprintf(w, "from       %s\n", sender(env.From))
	fmt.Fprintf(w, "size       %d bytes\n", env.Size)
	switch {
	case !st.Signed:
		fmt.Fprintf(w, "dkim       not signed yet\n")
	case st.DKIM == "":
		fmt.Fprintf(w, "dkim       no key for the From: domain\n")
	default:
		fmt.Fprintf(w, "dkim       signed\n")
	}
	fmt.Fprintf(w, "warned     %v\n", st.Warned)
	if h := st.Held; h != nil {
		fmt.Fprintf(w, "held       since %s with %s (%s); \"submitd held show %s\"\n", fmtTime(h.Since), h.Account, printable(h.Reason), h.Account)
	}
	fmt.Fprintf(w, "next       %s\n", next(st, showTime))
	fmt.Fprintln(w, "recipients:")
	for _, r := range st.Rcpts {
		line := fmt.Sprintf("  %s  %s  attempts %d", r.Addr, r.Status, r.Attempts)
		if r.Status == queue.Deferred || r.Status == queue.Pending {
			n := "now"
			if r.Next.After(time.Now()) {
				n = fmtTime(r.Next)
			}
			line += "  next " + n
		}
		if r.Reason != "" {
			line += "  (" + r.Reason + ")"
		}
		if r.Bounced {
			line += "  reported to sender"
		}
		fmt.Fprintln(w, line)
		for _, h := range r.History {
			host := h.Host
			if host == "" {
				host = "-"
			}
			fmt.Fprintf(w, "    %s  %-9s %s  %s\n", fmtTime(h.Time), h.Status, printable(host), printable(h.Reply))
		}
	}
	fmt.Fprintln(w, "headers:")
	for _, l := range strings.Split(strings.TrimRight(string(headers), "\r\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", printable(strings.TrimRight(l, "\r")))
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
