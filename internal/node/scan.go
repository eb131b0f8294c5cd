package node

import (
	"context"

	"submitd/internal/config"
	"submitd/internal/scan"
)

// newScanner makes the content scanner of [scan] c (SPEC R22), nil when
// rspamd_url is "", without putting it in force. Its outcomes are counted
// in the node's metrics, which are registered once, so that a scanner
// made again from a changed config reports to the same series.
func (n *Node) newScanner(c config.Scan) (*scan.Client, error) {
	if n.scanObserver == nil {
		n.scanObserver = n.Metrics.Scan(func() bool {
			sc := n.scanner.Load()
			return sc != nil && sc.BreakerOpen()
		})
	}
	if c.RspamdURL == "" {
		return nil, nil
	}
	return scan.New(scan.Config{
		URL: c.RspamdURL, Timeout: c.Timeout.D(), MaxSize: int64(c.MaxSize), MaxConcurrent: c.MaxConcurrent,
		Tempfail: c.OnError == "tempfail", SettingsID: c.SettingsID, Password: c.Password,
		Observer: n.scanObserver,
	})
}

// useScanner makes sc (nil: none) the scanner of the messages that start
// arriving from now on; a message under way keeps the one it started with.
func (n *Node) useScanner(sc *scan.Client) {
	n.scanner.Store(sc)
	if sc == nil {
		// An untyped nil: a nil *scan.Client in the interface would scan.
		n.Server.SetScanner(nil)
		return
	}
	n.Server.SetScanner(sc)
}

// ApplyScan makes [scan] c the content scanning of the messages that start
// arriving from now on (SPEC R22).
func (n *Node) ApplyScan(c config.Scan) error {
	sc, err := n.newScanner(c)
	if err != nil {
		return err
	}
	n.useScanner(sc)
	return nil
}

// reloadScan is the reload step of [scan]: a changed section makes a new
// scanner, built here so that a bad section changes nothing, for the
// messages that start arriving after the reload; an unchanged one keeps
// the scanner and its breaker as they are.
func (n *Node) reloadScan(_ context.Context, cfg *config.Config) (func(), error) {
	if cfg.Scan == n.CurrentConfig().Scan {
		return nil, nil
	}
	sc, err := n.newScanner(cfg.Scan)
	if err != nil {
		return nil, err
	}
	return func() { n.useScanner(sc) }, nil
}
