package main

import (
	"fmt"
	"net/url"
	"strconv"

	"submitd/internal/sending"
)

func init() {
	register(&command{
		name:    "sending",
		summary: "show and override the sending limits of an account or a hosted domain",
		usage: `sending show NAME                       (limits in effect, where each comes from, and current usage)
			sending set NAME key=value...           (keys: messages_per_hour, recipients_per_hour, recipients_per_day, new_recipients_per_day; 0 = no limit)
			sending clear NAME [key...]             (back to the configured limits; no key clears every override)`,
		run: runSending,
	})
}

// runSending shows and changes sending-limit overrides (SPEC R19) through
// the control path, so a running server applies them at once.
func runSending(e *env, args []string) error {
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	if err := want(args, 1, -1); err != nil {
		return err
	}
	name, rest := args[0], args[1:]
	path := "/api/v1/sending/" + p(name)
	switch verb {
	case "show":
		if err := want(rest, 0, 0); err != nil {
			return err
		}
		return e.showSending(path)
	case "set":
		if err := want(rest, 1, -1); err != nil {
			return err
		}
		set := map[string]int64{}
		for _, a := range rest {
			l, v, err := sending.ParseSetting(a)
			if err != nil {
				return usageError(err.Error())
			}
			set[l.Key()] = v
		}
		return e.change("PUT", path, set)
	case "clear":
		q := url.Values{}
		for _, k := range rest {
			if _, err := sending.ParseKey(k); err != nil {
				return usageError(err.Error())
			}
			q.Add("key", k)
		}
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		return e.change("DELETE", path, nil)
	}
	return usageError(fmt.Sprintf("unknown verb %q", verb))
}

// showSending prints one line per limit: key, limit, source and, from a
// running server, the count in its window.
func (e *env) showSending(path string) error {
	c, err := e.control()
	if err != nil {
		return err
	}
	defer c.done()
	var v struct {
		Name   string `json:"name"`
		Kind   string `json:"kind"`
		Limits map[string]struct {
			Limit  int64  `json:"limit"`
			Source string `json:"source"`
			Used   *int64 `json:"used"`
		} `json:"limits"`
	}
	if err := c.call("GET", path, nil, &v); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s %s\n", v.Kind, v.Name)
	for _, k := range sending.Keys() {
		l := v.Limits[k]
		lim := strconv.FormatInt(l.Limit, 10)
		if l.Limit == 0 {
			lim = "none"
		}
		used := "-"
		if l.Used != nil {
			used = strconv.FormatInt(*l.Used, 10)
		}
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\tused %s\n", k, lim, l.Source, used)
	}
	if c.handler != nil {
		fmt.Fprintln(e.stdout, "(no server runs here: usage is counted by the running server)")
	}
	return nil
}
