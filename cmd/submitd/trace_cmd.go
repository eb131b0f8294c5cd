package main

import (
	"fmt"
	"net/url"
	"time"

	"submitd/internal/ids"
	"submitd/internal/trace"
)

func init() {
	register(&command{
		name:    "trace",
		summary: "show where mail went: the messages to or from an address, or one message's whole path by its queue id (SPEC R13a)",
		usage:   "trace [-from TIME] [-until TIME] ADDRESS|MESSAGE-ID|SESSION_ID|IP|QUEUE_ID",
		run:     runTrace,
	})
}

// traceRow is one recipient of a message, as GET /api/v1/trace lists it.
type traceRow struct {
	QueueID   string    `json:"queue_id"`
	Received  time.Time `json:"received"`
	Account   string    `json:"account"`
	SessionID string    `json:"session_id"`
	From      string    `json:"from"`
	Subject   string    `json:"subject"`
	Rcpt      string    `json:"rcpt"`
	State     string    `json:"state"`
	Reply     string    `json:"reply"`
	Host      string    `json:"host"`
}

// traceMessage is one message's path, as GET /api/v1/trace/ID answers it.
type traceMessage struct {
	trace.Message
	Session *struct {
		ID      string `json:"id"`
		Outcome string `json:"outcome"`
	} `json:"session"`
	Fixes []string `json:"fixes"`
}

func runTrace(e *env, args []string) error {
	from := e.fs.String("from", "", "only messages accepted from this time (2006-01-02, 2006-01-02T15:04 or RFC 3339, UTC)")
	until := e.fs.String("until", "", "only messages accepted until this time")
	pos, err := e.parse(args)
	if err != nil {
		return err
	}
	if err := want(pos, 1, 1); err != nil {
		return err
	}
	c, err := e.control()
	if err != nil {
		return err
	}
	defer c.done()
	w := e.stdout
	if ids.IsQueue(pos[0]) {
		var m traceMessage
		if err := c.call("GET", "/api/v1/trace/"+p(pos[0]), nil, &m); err == nil {
			fmt.Fprintf(w, "message   %s\naccepted  %s\nfrom      %s\naccount   %s\nclient    %s\n", m.QueueID, fmtTime(m.Received),
				printable(sender(m.From)), printable(m.Account), m.ClientIP)
			if m.Session != nil {
				fmt.Fprintf(w, "session   %s  %s\n", m.Session.ID, printable(m.Session.Outcome))
			} else if m.SessionID != "" {
				fmt.Fprintf(w, "session   %s  (record gone)\n", m.SessionID)
			}
			fmt.Fprintf(w, "msgid     %s\nsubject   %s\n", printable(m.MessageID), printable(m.Subject))
			for _, r := range m.Rcpts {
				fmt.Fprintf(w, "rcpt      %s  %s  %s", printable(r.Addr), r.State, printable(r.Reply))
				if !r.Next.IsZero() {
					fmt.Fprintf(w, "  next try %s", fmtTime(r.Next))
				}
				fmt.Fprintln(w)
			}
			fmt.Fprintln(w, "path:")
			for _, ev := range m.Events {
				line := fmt.Sprintf("  %s  %-9s %s", fmtTime(ev.Time), ev.Kind, printable(ev.Rcpt))
				if ev.Host != "" {
					line += "  via " + printable(ev.Host)
				}
				if ev.TLS != "" {
					line += " (" + printable(ev.TLS) + ")"
				}
				if ev.Reply != "" {
					line += "  -> " + printable(ev.Reply)
				}
				if ev.Detail != "" {
					line += "  " + printable(ev.Detail)
				}
				fmt.Fprintln(w, line)
			}
			for _, f := range m.Fixes {
				// A held message is released with its account: a retry
				// leaves it held (SPEC R20).
				fix := "submitd queue " + f + " " + m.QueueID
				if f == "release" {
					fix = "submitd held release " + printable(m.Account)
				}
				fmt.Fprintf(w, "fix       %s\n", fix)
			}
			return nil
		} else if !notFound(err) {
			return err
		}
	}
	q := url.Values{"q": {pos[0]}}
	if *from != "" {
		q.Set("from", *from)
	}
	if *until != "" {
		q.Set("until", *until)
	}
	var r struct {
		Rows []traceRow `json:"rows"`
	}
	if err := c.call("GET", "/api/v1/trace?"+q.Encode(), nil, &r); err != nil {
		return err
	}
	if len(r.Rows) == 0 {
		return fmt.Errorf("no message found for %q (the history is kept for sessionlog.retention)", pos[0])
	}
	for _, row := range r.Rows {
		fmt.Fprintf(w, "%s  %s  %-9s %s  from %s (%s, session %s)  %s\n", fmtTime(row.Received), row.QueueID, row.State,
			printable(row.Rcpt), printable(sender(row.From)), printable(row.Account), row.SessionID, printable(row.Reply))
	}
	return nil
}
