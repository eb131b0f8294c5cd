package node

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"time"

	"submitd/internal/config"
	"submitd/internal/delivery"
	"submitd/internal/spool"
	"submitd/internal/tlspolicy"
)

// tlsReportEvery is how often the node looks for finished days of TLS
// results to report; a day is reported within this time after it ends.
const tlsReportEvery = time.Hour

// tlsReporter mails the TLS reports (RFC 8460) of finished days through
// the queue, from tlsrpt@HOSTNAME, the hostname naming the submitter, and
// posts them to https: addresses.
func (n *Node) tlsReporter() *tlspolicy.Reporter {
	cfg := n.CurrentConfig()
	// Validate read [delivery] ca_roots; nil leaves the system's roots.
	roots, _ := config.LoadCARoots(cfg.Delivery.CARoots)
	return &tlspolicy.Reporter{
		Results: n.TLSResults, DNS: &delivery.Resolver{Addr: cfg.Delivery.Resolver},
		Organization: cfg.Hostname, Submitter: cfg.Hostname, From: "tlsrpt@" + cfg.Hostname,
		Submit: func(_ string, to []string, msg []byte) error { return n.spoolFromNull(to, msg) },
		HTTP: &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		}},
	}
}

// spoolFromNull queues msg for to from the null sender, which is never
// reported back (RFC 3464 §2, SPEC R18), through the node's own spool and
// queue; the queue signs it with the DKIM key of the From: domain, if it
// has one. The TLS reports and the containment's notices to support go
// this way.
func (n *Node) spoolFromNull(to []string, msg []byte) error {
	w, err := n.Spool.Create(&spool.Envelope{To: to, Received: time.Now()})
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// runTLSReports sends the reports of finished days every tlsReportEvery
// until ctx ends. The results of the day under way are saved with the
// node's state (openTLSState), so a stop sends nothing: the next start
// reports them.
func (n *Node) runTLSReports(ctx context.Context) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(tlsReportEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := n.tlsReporter().Send(ctx); err != nil && !errors.Is(err, context.Canceled) {
				n.Log.Error("TLS reports not all sent", "err", err)
			}
		}
	}()
	return done
}

// openTLSState sets up the TLS results and the MTA-STS policy cache, loads
// what the store [store] names keeps of them, the node's SQLite database
// or the PostgreSQL the nodes share, and saves them there from now on: a
// restart neither lets a cached policy lapse before its max_age (RFC 8461
// §5.1) nor loses the counts of the day under way (RFC 8460).
func (n *Node) openTLSState(ctx context.Context) error {
	var st tlspolicy.Store
	var err error
	if n.Stores.Pool != nil {
		st, err = tlspolicy.NewPostgresStore(ctx, n.Stores.Pool)
	} else {
		st, err = tlspolicy.NewSQLiteStore(ctx, n.DB)
	}
	if err != nil {
		return err
	}
	n.TLSResults = tlspolicy.NewResults()
	if err := n.TLSResults.Restore(ctx, st); err != nil {
		return err
	}
	n.STSCache = tlspolicy.NewCache(0)
	if err := n.STSCache.Restore(ctx, st, time.Now()); err != nil {
		return err
	}
	n.Log.Info("TLS policy state loaded", "mta_sts_policies", n.STSCache.Len())
	n.keepSaving("TLS results", n.TLSResults.Flush)
	n.keepSaving("MTA-STS policies", func(ctx context.Context) error { return n.STSCache.Flush(ctx, time.Now()) })
	return nil
}

// setDeliveryTLS gives a sender's settings the node's TLS results and
// MTA-STS policy cache, which outlive the sender.
func (n *Node) setDeliveryTLS(ds *delivery.Settings) {
	ds.TLSResults, ds.STSCache = n.TLSResults, n.STSCache
}
