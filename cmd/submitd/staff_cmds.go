package main

import (
	"fmt"
	"strconv"
	"time"

	"submitd/internal/admin"
)

func init() {
	register(&command{
		name:    "staff",
		summary: "manage support and operator users of the admin web and API, and their API tokens",
		usage: `staff add NAME -role support|admin   (password: prompted on a terminal, else the first line of stdin)
			staff passwd NAME
			staff remove NAME
			staff list
			staff token NAME               (prints a new API bearer token, once)
			staff token -revoke ID
			staff tokens [NAME]            (id, user, created)`,
		run: runStaff,
	})
}

func runStaff(e *env, args []string) error {
	role := e.fs.String("role", "", "with add: support or admin")
	revoke := e.fs.Int64("revoke", 0, "with token: revoke the token with this id")
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	if *role != "" && verb != "add" {
		return usageError("-role goes with add only")
	}
	if *revoke != 0 && verb != "token" {
		return usageError("-revoke goes with token only")
	}
	switch verb {
	case "add", "passwd":
		if err := want(args, 1, 1); err != nil {
			return err
		}
		if err := admin.CheckStaffName(args[0]); err != nil {
			return usageError(err.Error())
		}
		if verb == "add" {
			if _, err := admin.ParseRole(*role); err != nil {
				return usageError(err.Error())
			}
		}
		pw, err := e.readPassword()
		if err != nil {
			return err
		}
		if verb == "add" {
			// The first user of a setup may come before any domain.
			e.createDB = true
			return e.change("POST", "/api/v1/staff", map[string]string{"name": args[0], "role": *role, "password": pw})
		}
		return e.change("POST", "/api/v1/staff/"+p(args[0])+"/password", map[string]string{"password": pw})
	case "remove":
		if err := want(args, 1, 1); err != nil {
			return err
		}
		return e.change("DELETE", "/api/v1/staff/"+p(args[0]), nil)
	case "token":
		if *revoke != 0 {
			if err := want(args, 0, 0); err != nil {
				return err
			}
			return e.change("DELETE", "/api/v1/tokens/"+strconv.FormatInt(*revoke, 10), nil)
		}
		if err := want(args, 1, 1); err != nil {
			return err
		}
		c, err := e.control()
		if err != nil {
			return err
		}
		defer c.done()
		var r struct {
			ID    int64  `json:"id"`
			Token string `json:"token"`
		}
		if err := c.call("POST", "/api/v1/staff/"+p(args[0])+"/tokens", nil, &r); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, r.Token)
		fmt.Fprintf(e.stderr, "token %d of %s; it is shown only now (revoke: submitd staff token -revoke %d)\n", r.ID, args[0], r.ID)
		return nil
	case "list", "tokens":
		max := 0
		if verb == "tokens" {
			max = 1
		}
		if err := want(args, 0, max); err != nil {
			return err
		}
		c, err := e.control()
		if err != nil {
			return err
		}
		defer c.done()
		if verb == "list" {
			var r struct {
				Items []admin.Staff `json:"items"`
			}
			if err := c.call("GET", "/api/v1/staff?limit=500", nil, &r); err != nil {
				return err
			}
			for _, s := range r.Items {
				fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", s.Name, s.Role, s.Created.UTC().Format(time.RFC3339))
			}
			return nil
		}
		path := "/api/v1/tokens?limit=500"
		if len(args) == 1 {
			path += "&staff=" + p(args[0])
		}
		var r struct {
			Items []admin.Token `json:"items"`
		}
		if err := c.call("GET", path, nil, &r); err != nil {
			return err
		}
		for _, t := range r.Items {
			fmt.Fprintf(e.stdout, "%d\t%s\t%s\n", t.ID, t.Staff, t.Created.UTC().Format(time.RFC3339))
		}
		return nil
	}
	return usageError(fmt.Sprintf("unknown verb %q", verb))
}
