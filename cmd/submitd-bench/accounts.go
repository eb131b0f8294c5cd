package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"sync"

	"submitd/internal/password"
)

// accountsMain is "submitd-bench accounts": it prints the benchmark
// accounts as lines for "submitd account import", each with its own hash
// (its own salt), so that nothing the server caches by hash makes a first
// login of one account look like a repeat of another's.
func accountsMain(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("submitd-bench accounts", flag.ContinueOnError)
	n := fs.Int("n", 200, "number of accounts")
	user := fs.String("user", "bench%d@bench.test", "login format; %d is replaced by 0…n-1")
	pass := fs.String("password", "bench-password", "every account's password")
	scheme := fs.String("scheme", password.Argon2id, "hash scheme: argon2id or bcrypt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	a := accounts{format: *user, n: *n, password: *pass}
	lines := make([]string, *n)
	errs := make([]error, *n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range *n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h, err := password.Hash(*scheme, *pass)
			lines[i], errs[i] = a.login(i)+"\t"+h, err
		}()
	}
	wg.Wait()
	for i, l := range lines {
		if errs[i] != nil {
			return errs[i]
		}
		fmt.Fprintln(out, l)
	}
	return nil
}
