package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"

	"submitd/internal/config"
	"submitd/internal/metrics"
)

// metricsMaxConns bounds the connections the metrics listener serves at
// once; a scraper needs one, and more only wait.
const metricsMaxConns = 16

// listenMetrics binds [admin] listen for /metrics, unless it is "". This
// listener serves nothing but the metrics; it is what the node offers until
// the admin server runs there and mounts MetricsHandler itself.
func (n *Node) listenMetrics() error {
	addr := n.Config.Admin.Listen
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	n.metricsLn = netutil.LimitListener(ln, metricsMaxConns)
	n.onClose(func() { n.metricsLn.Close() })
	return nil
}

// MetricsAddr is the bound address of the metrics listener, or "" when
// [admin] listen is "".
func (n *Node) MetricsAddr() string {
	if n.metricsLn == nil {
		return ""
	}
	return n.metricsLn.Addr().String()
}

// serveMetrics serves /metrics on the metrics listener, to the clients of
// [admin] metrics_networks, until the returned function stops it.
func (n *Node) serveMetrics() (stop func()) {
	if n.metricsLn == nil {
		return func() {}
	}
	nets, _ := config.ParsePrefixes(n.Config.Admin.MetricsNetworks)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Gate(n.MetricsHandler, nets, nil))
	// A client gets a few seconds for its request and its answer; the
	// limits keep a slow or hostile one from holding a connection.
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(n.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.Log.Error("metrics listener failed", "err", err)
		}
	}()
	n.Log.Info("serving metrics", "addr", n.metricsLn.Addr().String(), "path", "/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}
}
