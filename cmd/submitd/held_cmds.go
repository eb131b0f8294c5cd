package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

func init() {
	register(&command{
		name:    "held",
		summary: "review, release and purge accounts held as compromised, and set warn-only overrides (through the running server)",
		usage: `held list                        (one line per account: address, held since, held messages, reason)
			held show ACCOUNT                (the signal and its figures, recent sessions, a sample of held mail)
			held release ACCOUNT             (SMTP access back on, the held mail delivered)
			held purge ACCOUNT               (the held mail deleted, no reports; the account stays held)
			held override ACCOUNT|DOMAIN hold|warn|default
			held overrides`,
		run: runHeld,
	})
}

// heldDetail is GET /api/v1/held/{address} as the CLI reads it; the fields
// are those of docs/api.md.
type heldDetail struct {
	// Account, Reason, Since and HeldMessages say what is held since when.
	Account      string    `json:"account"`
	Reason       string    `json:"reason"`
	Since        time.Time `json:"since"`
	HeldMessages int       `json:"held_messages"`
	// Trip is the signal that tripped, with its figures.
	Trip *struct {
		Signal         string             `json:"signal"`
		Summary        string             `json:"summary"`
		Figures        map[string]float64 `json:"figures"`
		Time           time.Time          `json:"time"`
		ClosedSessions int                `json:"closed_sessions"`
	} `json:"trip"`
	// RecentSessions are the account's latest sessions.
	RecentSessions []struct {
		ID       string    `json:"id"`
		Start    time.Time `json:"start"`
		ClientIP string    `json:"client_ip"`
		HELO     string    `json:"helo"`
		Outcome  string    `json:"outcome"`
	} `json:"recent_sessions"`
	// Sample is a few held messages with their start.
	Sample []struct {
		ID         string    `json:"id"`
		Received   time.Time `json:"received"`
		From       string    `json:"from"`
		ClientIP   string    `json:"client_ip"`
		SessionID  string    `json:"session_id"`
		Header     string    `json:"header"`
		Body       string    `json:"body"`
		Recipients []struct {
			Addr string `json:"addr"`
		} `json:"recipients"`
	} `json:"sample"`
}

func runHeld(e *env, args []string) error {
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	n := map[string]int{"list": 0, "overrides": 0, "show": 1, "release": 1, "purge": 1, "override": 2}
	want1, ok := n[verb]
	if !ok {
		return usageError(fmt.Sprintf("unknown verb %q", verb))
	}
	if err := want(args, want1, want1); err != nil {
		return err
	}
	switch verb {
	case "release", "purge":
		return e.change("POST", "/api/v1/held/"+p(args[0])+"/"+verb, nil)
	case "override":
		action := args[1]
		switch action {
		case "hold", "warn":
		case "default":
			action = ""
		default:
			return usageError(fmt.Sprintf("action %q: hold, warn or default", args[1]))
		}
		return e.change("POST", "/api/v1/held/overrides", map[string]string{"target": args[0], "action": action})
	}
	c, err := e.control()
	if err != nil {
		return err
	}
	defer c.done()
	switch verb {
	case "list":
		var r struct {
			Items []struct {
				Account      string    `json:"account"`
				Reason       string    `json:"reason"`
				Since        time.Time `json:"since"`
				HeldMessages int       `json:"held_messages"`
			} `json:"items"`
		}
		if err := c.call("GET", "/api/v1/held?limit=500", nil, &r); err != nil {
			return err
		}
		for _, h := range r.Items {
			fmt.Fprintf(e.stdout, "%s\t%s\t%d\t%s\n", h.Account, fmtTime(h.Since), h.HeldMessages, printable(h.Reason))
		}
	case "overrides":
		var r map[string]string
		if err := c.call("GET", "/api/v1/held/overrides", nil, &r); err != nil {
			return err
		}
		keys := make([]string, 0, len(r))
		for k := range r {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(e.stdout, "%s\t%s\n", k, r[k])
		}
	case "show":
		var h heldDetail
		if err := c.call("GET", "/api/v1/held/"+p(args[0]), nil, &h); err != nil {
			return err
		}
		heldShow(e, &h)
	}
	return nil
}

// heldShow prints a held account for support to judge it.
func heldShow(e *env, h *heldDetail) {
	w := e.stdout
	fmt.Fprintf(w, "Account:        %s\nHeld since:     %s\nReason:         %s\nHeld messages:  %d\n",
		h.Account, fmtTime(h.Since), printable(h.Reason), h.HeldMessages)
	if t := h.Trip; t != nil {
		fmt.Fprintf(w, "Signal:         %s at %s\nWhat tripped:   %s\nClosed sessions: %d\nFigures:\n", t.Signal, fmtTime(t.Time), printable(t.Summary), t.ClosedSessions)
		keys := make([]string, 0, len(t.Figures))
		for k := range t.Figures {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %-16s %g\n", k, t.Figures[k])
		}
	}
	fmt.Fprintf(w, "\nRecent sessions:\n")
	for _, s := range h.RecentSessions {
		fmt.Fprintf(w, "  %s  %s  %-39s %s  %s\n", s.ID, fmtTime(s.Start), s.ClientIP, printable(s.HELO), printable(s.Outcome))
	}
	fmt.Fprintf(w, "\nSample of held messages (%d of %d):\n", len(h.Sample), h.HeldMessages)
	for _, m := range h.Sample {
		var to []string
		for _, r := range m.Recipients {
			to = append(to, r.Addr)
		}
		fmt.Fprintf(w, "\n  %s  received %s from %s in session %s\n  MAIL FROM:%s\n  RCPT TO: %s\n", m.ID, fmtTime(m.Received),
			m.ClientIP, m.SessionID, printable(sender(m.From)), printable(strings.Join(to, ", ")))
		for _, l := range strings.Split(strings.TrimRight(m.Header+m.Body, "\r\n"), "\n") {
			fmt.Fprintf(w, "  | %s\n", printable(strings.TrimRight(l, "\r")))
		}
	}
}
