package main

import (
	"fmt"
	"strconv"
	"time"

	"submitd/internal/address"
	"submitd/internal/loginwatch"
)

func init() {
	register(&command{
		name:    "logins",
		summary: "logins guessed from many IPs (under attack), their trusted networks, and clearing the state",
		usage: `logins under-attack [-all]   (login, failures, IPs, since, until, refused; -all: also logins with failures not under attack)
			logins networks ADDRESS      (networks that may still try the login during an attack)
			logins clear ADDRESS         (every network may try the login again; audited)`,
		run: runLogins,
	})
}

// runLogins reads and clears the per-login failure counts (SPEC R21) of the
// running server, through its socket: the counts live in its memory.
func runLogins(e *env, args []string) error {
	all := e.fs.Bool("all", false, "with under-attack: also logins with failures that are not under attack")
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	if *all && verb != "under-attack" {
		return usageError("-all goes with under-attack only")
	}
	switch verb {
	case "under-attack":
		if err := want(args, 0, 0); err != nil {
			return err
		}
		var r struct {
			Items []loginwatch.Login `json:"items"`
		}
		q := "?limit=500"
		if *all {
			q += "&all=true"
		}
		if err := e.get("/api/v1/logins/under-attack"+q, &r); err != nil {
			return err
		}
		for _, l := range r.Items {
			fmt.Fprintf(e.stdout, "%s\t%d\t%d\t%s\t%s\t%d\n", printable(l.Login), l.Failures, l.IPs, stamp(l.Since), stamp(l.Until), l.Refused)
		}
		return nil
	case "networks", "clear":
		if err := want(args, 1, 1); err != nil {
			return err
		}
		a, err := address.Parse(args[0])
		if err != nil {
			return usageError(err.Error())
		}
		if verb == "clear" {
			return e.change("DELETE", "/api/v1/logins/under-attack/"+p(a.String()), nil)
		}
		var r struct {
			Networks []loginwatch.Network `json:"networks"`
		}
		if err := e.get("/api/v1/logins/"+p(a.String())+"/networks", &r); err != nil {
			return err
		}
		for _, n := range r.Networks {
			fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", n.Prefix, stamp(n.First), stamp(n.Last))
		}
		return nil
	}
	return usageError("unknown verb " + strconv.Quote(verb))
}

// get reads path from the API into out.
func (e *env) get(path string, out any) error {
	c, err := e.control()
	if err != nil {
		return err
	}
	defer c.done()
	return c.call("GET", path, nil, out)
}

// stamp formats a time in RFC 3339, UTC, or "-" for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
