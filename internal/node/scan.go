package node

import (
	"submitd/internal/config"
	"submitd/internal/scan"
)

// newScanner makes the content scanner of [scan] (SPEC R22), nil when
// rspamd_url is "". Its outcomes are counted in the node's metrics.
func (n *Node) newScanner(c config.Scan) (*scan.Client, error) {
	if c.RspamdURL == "" {
		return nil, nil
	}
	sc := scan.Config{
		URL: c.RspamdURL, Timeout: c.Timeout.D(), MaxSize: int64(c.MaxSize), MaxConcurrent: c.MaxConcurrent,
		Tempfail: c.OnError == "tempfail", SettingsID: c.SettingsID, Password: c.Password,
	}
	var client *scan.Client
	sc.Observer = n.Metrics.Scan(func() bool { return client != nil && client.BreakerOpen() })
	client, err := scan.New(sc)
	if err != nil {
		return nil, err
	}
	return client, nil
}
