package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"submitd/internal/address"
	"submitd/internal/directory"
	"submitd/internal/dkim"
)

func init() {
	register(&command{
		name:    "dkim",
		summary: "make DKIM keys for hosted and alias domains and show their DNS records",
		usage: `dkim generate [-selector S] [-algo rsa|ed25519] [-force] DOMAIN   (prints the TXT record to publish)
			dkim show DOMAIN                                                   (prints it again)
			dkim list                                                          (domain, selector, algorithm, created)`,
		run: runDKIM,
	})
}

// defaultSelector names a new key after the month it was made
// ("submitd202607"), so a rotated key gets a new DNS name and the old record
// can stay published until mail signed with it has arrived.
func defaultSelector(now time.Time) string { return "submitd" + now.UTC().Format("200601") }

func runDKIM(e *env, args []string) error {
	selector := e.fs.String("selector", "", `with generate: selector (default "submitd" and the year and month, e.g. `+defaultSelector(time.Now())+")")
	algo := e.fs.String("algo", dkim.RSA, `with generate: key algorithm, "rsa" (2048 bits, verified by every receiver) or "ed25519" (RFC 8463; some large receivers do not verify it yet)`)
	force := e.fs.Bool("force", false, "with generate: replace the domain's existing key")
	verb, args, err := e.verb(args)
	if err != nil {
		return err
	}
	switch verb {
	case "generate", "show":
		if err := want(args, 1, 1); err != nil {
			return err
		}
	case "list":
		if err := want(args, 0, 0); err != nil {
			return err
		}
	default:
		return usageError(fmt.Sprintf("unknown verb %q", verb))
	}
	ctx := context.Background()
	_, stores, done, err := e.stores()
	if err != nil {
		return err
	}
	defer done()
	st := stores.DKIM
	switch verb {
	case "list":
		keys, err := st.List(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%s\n", k.Domain, k.Selector, k.Algorithm, k.Created.Format(time.RFC3339))
		}
		return nil
	case "show":
		d, err := address.Domain(args[0])
		if err != nil {
			return err
		}
		k, err := st.Get(ctx, d)
		if errors.Is(err, dkim.ErrNoKey) {
			return fmt.Errorf("domain %s has no DKIM key; make one with \"submitd dkim generate %s\"", d, d)
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, k.DNSRecord())
		return nil
	}

	// generate
	d, err := address.Domain(args[0])
	if err != nil {
		return err
	}
	dir := stores.Directory
	// Only the provider's own domains sign (SPEC R17): a key for any other
	// domain would never be used, since R5–R7 keep foreign From: domains out.
	if _, err := dir.DomainOf(ctx, d); errors.Is(err, directory.ErrNotFound) {
		return fmt.Errorf("domain %s is neither hosted nor an alias; add it first (\"submitd domain add\" or \"submitd alias add\")", d)
	} else if err != nil {
		return err
	}
	if !*force {
		if _, err := st.Get(ctx, d); err == nil {
			return fmt.Errorf("domain %s already has a DKIM key; \"submitd dkim show %s\" prints its record, -force replaces it", d, d)
		} else if !errors.Is(err, dkim.ErrNoKey) {
			return err
		}
	}
	sel := *selector
	if sel == "" {
		sel = defaultSelector(time.Now())
	}
	k, err := dkim.Generate(d, sel, *algo)
	if err != nil {
		return usageError(err.Error())
	}
	if err := st.Put(ctx, k, *force); err != nil {
		if errors.Is(err, dkim.ErrKeyExists) {
			return fmt.Errorf("domain %s already has a DKIM key; -force replaces it", d)
		}
		return err
	}
	fmt.Fprintf(e.stderr, "generated %s key for %s with selector %s; publish this DNS record:\n", k.Algorithm, d, k.Selector)
	fmt.Fprintln(e.stdout, k.DNSRecord())
	return nil
}
