package node

import (
	"context"

	"submitd/internal/config"
	"submitd/internal/scan"
)

// newScanner makes the content scanner of [scan] (SPEC R22), nil when
// rspamd_url is "". Its outcomes are counted in the node's metrics, which
// are registered once, so that a scanner made again from a changed config
// reports to the same series.
func (n *Node) newScanner(c config.Scan) (*scan.Client, error) {
	if n.scanObserver == nil {
		n.scanObserver = n.Metrics.Scan(func() bool {
			sc := n.scanner.Load()
			return sc != nil && sc.BreakerOpen()
		})
	}
	if c.RspamdURL == "" {
		n.scanner.Store(nil)
		return nil, nil
	}
	client, err := scan.New(scan.Config{
		URL: c.RspamdURL, Timeout: c.Timeout.D(), MaxSize: int64(c.MaxSize), MaxConcurrent: c.MaxConcurrent,
		Tempfail: c.OnError == "tempfail", SettingsID: c.SettingsID, Password: c.Password,
		Observer: n.scanObserver,
	})
	if err != nil {
		return nil, err
	}
	n.scanner.Store(client)
	return client, nil
}

// ApplyScan makes [scan] c the content scanning of the messages that start
// arriving from now on (SPEC R22); a reload of the config calls it with the
// new section. A message under way keeps the scanner it started with.
func (n *Node) ApplyScan(c config.Scan) error {
	sc, err := n.newScanner(c)
	if err != nil {
		return err
	}
	n.Scanner = sc
	if sc == nil {
		// An untyped nil: a nil *scan.Client in the interface would scan.
		n.Server.SetScanner(nil)
		return nil
	}
	n.Server.SetScanner(sc)
	return nil
}

// reloadScan is the reload step of [scan]: a changed section makes a new
// scanner for the messages that start arriving after the reload; an
// unchanged one keeps the scanner and its breaker as they are.
func (n *Node) reloadScan(_ context.Context, cfg *config.Config) (func(), error) {
	if cfg.Scan == n.CurrentConfig().Scan {
		return nil, nil
	}
	c := cfg.Scan
	if c.RspamdURL != "" {
		// Checked here, so that a bad section changes nothing.
		if _, err := scan.New(scan.Config{URL: c.RspamdURL, Timeout: c.Timeout.D(), MaxSize: int64(c.MaxSize), MaxConcurrent: c.MaxConcurrent}); err != nil {
			return nil, err
		}
	}
	return func() {
		if err := n.ApplyScan(c); err != nil {
			n.Log.Error("scan: reload", "err", err)
		}
	}, nil
}
