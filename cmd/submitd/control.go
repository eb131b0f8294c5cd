package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"submitd/internal/admin"
	"submitd/internal/guard"
	"submitd/internal/node"
	"submitd/internal/queue"
	"submitd/internal/spool"
)

// controller carries the CLI's changes: over the running server's unix
// socket, or, when no server runs, through the same API run in-process on
// the stores. Either way a change gets the same checks, replies and audit
// entry, and a running server applies it at once.
type controller struct {
	// client reaches the running server; nil when none runs.
	client *http.Client
	// handler is the in-process API when no server runs.
	handler http.Handler
	// actor names the CLI user in the audit log for the in-process API.
	actor string
	// done releases what the in-process API opened.
	done func()
}

// apiError is an error the API answered, with its status.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// control connects to the running server, or opens the stores when none
// runs (creating the database only when e.createDB).
func (e *env) control() (*controller, error) {
	cfg, err := e.config()
	if err != nil {
		return nil, err
	}
	if c, err := dialServer(node.SocketPath(cfg), time.Minute); err == nil {
		return c, nil
	}
	cfg, db, err := e.openDB()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	fail := func(err error) (*controller, error) {
		db.Close()
		return nil, err
	}
	// The stores are the ones [store] names; the guard's state is the one
	// [guard] store names (the node's SQLite database, or Redis).
	stores, err := node.OpenStores(ctx, cfg, db)
	if err != nil {
		return fail(err)
	}
	fail = func(err error) (*controller, error) {
		stores.Close()
		db.Close()
		return nil, err
	}
	gstore, closeStore, err := node.OpenGuardStore(ctx, cfg, db)
	if err != nil {
		return fail(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	g, err := guard.New(ctx, node.GuardConfig(cfg), gstore, quiet)
	if err != nil {
		closeStore()
		return fail(err)
	}
	var q admin.Queue
	if sp, err := spool.Attach(node.SpoolDir(cfg), quiet); err == nil {
		q = &queue.Admin{Spool: sp, Hostname: cfg.Hostname, MaxAge: cfg.Queue.MaxAge.D()}
	}
	srv, _, _, err := node.NewAdmin(ctx, cfg, db, stores, g, q, quiet)
	if err != nil {
		closeStore()
		return fail(err)
	}
	return &controller{handler: srv.Handler(), actor: admin.CLIActor(), done: func() { closeStore(); stores.Close(); db.Close() }}, nil
}

// dialServer returns a controller for the server running on the control
// socket at sock, whose answers may take up to timeout, or the error of
// connecting when no server answers there.
func dialServer(sock string, timeout time.Duration) (*controller, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	return &controller{client: &http.Client{Transport: tr, Timeout: timeout}, done: tr.CloseIdleConnections}, nil
}

// call sends one API request and decodes the answer into out; an error
// answer becomes an *apiError with the server's message.
func (c *controller) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx := context.Background()
	if c.handler != nil {
		ctx = admin.AsCLI(ctx, c.actor)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://submitd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	var status int
	var data []byte
	if c.handler != nil {
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		c.handler.ServeHTTP(rec, req)
		status, data = rec.status, rec.body.Bytes()
	} else {
		resp, err := c.client.Do(req)
		if err != nil {
			return fmt.Errorf("the running server: %w", err)
		}
		defer resp.Body.Close()
		if data, err = io.ReadAll(resp.Body); err != nil {
			return fmt.Errorf("the running server: %w", err)
		}
		status = resp.StatusCode
	}
	if status != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("the server answered %d", status)
		}
		return &apiError{status: status, msg: e.Error}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// change sends a change and prints the server's "result".
func (e *env) change(method, path string, body any) error {
	return e.changeWithin(0, method, path, body)
}

// changeWithin is change with the running server given up to limit to
// answer instead of the usual minute (0 keeps the minute): a command whose
// work grows with the data, such as adopting a large spool, must not be
// reported failed while the server is still doing it.
func (e *env) changeWithin(limit time.Duration, method, path string, body any) error {
	c, err := e.control()
	if err != nil {
		return err
	}
	defer c.done()
	if limit > 0 && c.client != nil {
		c.client.Timeout = limit
	}
	var r struct {
		Result string `json:"result"`
	}
	if err := c.call(method, path, body, &r); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, r.Result)
	return nil
}

// notFound reports whether err is the API's 404.
func notFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusNotFound
}

// p escapes one path segment.
func p(s string) string { return url.PathEscape(s) }

// recorder is the ResponseWriter of the in-process API.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
