package node

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/config"
	"submitd/internal/password"
	"submitd/internal/testutil"
)

// pgConfig is testConfig with the shared stores in PostgreSQL at dsn.
func pgConfig(t *testing.T, smarthost, dsn string) *config.Config {
	t.Helper()
	cfg := testConfig(t, smarthost)
	cfg.Store.Driver = "postgres"
	cfg.Store.DSN = dsn
	cfg.Store.ConnectTimeout = config.Duration(2 * time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// authOn opens a submission connection to n and authenticates; the error
// is the server's reply when AUTH fails.
func authOn(t *testing.T, n *Node, login, pw string) (*smtp.Client, error) {
	t.Helper()
	c, err := smtp.DialStartTLS(n.Addr("submission"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", login, pw)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// send sends one message on an authenticated connection and returns the
// reply to its data.
func send(t *testing.T, c *smtp.Client) string {
	t.Helper()
	if err := c.Mail("jan@firma.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("petr@example.test", nil); err != nil {
		t.Fatal(err)
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(wc, "From: jan@firma.test\r\nTo: petr@example.test\r\nSubject: hello\r\n\r\nHello.\r\n")
	resp, err := wc.CloseWithResponse()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	return resp.StatusText
}

var sidReply = regexp.MustCompile(`^[0-9A-Za-z]{22} `)

// TestPostgresUnreachable (SPEC §8): with PostgreSQL stopped, AUTH of an
// account the node has not cached gets the temporary 454 4.7.0 with the
// session id, never "authentication rejected" or "failed"; a session
// authenticated before the stop still has its message accepted; when
// PostgreSQL is back, AUTH works again without a restart of the node.
func TestPostgresUnreachable(t *testing.T) {
	pg := testutil.StartPostgres(t)
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	n := startNode(t, pgConfig(t, rcv.Addr, pg.CreateDB(t)))
	hash, err := password.Hash("argon2id", "eva-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Directory.AddAccount(context.Background(), "eva@firma.test", hash); err != nil {
		t.Fatal(err)
	}
	jan, err := authOn(t, n, "jan@firma.test", "secret-pw")
	if err != nil {
		t.Fatal(err)
	}
	defer jan.Close()

	pg.Stop()
	for range 3 {
		_, err := authOn(t, n, "eva@firma.test", "eva-pw")
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 454 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 0}) || !sidReply.MatchString(se.Message) {
			t.Fatalf("AUTH with PostgreSQL down: %v; want 454 4.7.0 SID …", err)
		}
		if strings.Contains(se.Message, "rejected") || strings.Contains(se.Message, "failed") {
			t.Fatalf("AUTH with PostgreSQL down answered %q", se.Message)
		}
	}
	if resp := send(t, jan); !strings.Contains(resp, "queued as") {
		t.Fatalf("message of a session authenticated before the stop: %q", resp)
	}
	jan.Quit()

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "AUTH to work again after PostgreSQL is back", func() bool {
		c, err := authOn(t, n, "eva@firma.test", "eva-pw")
		if err != nil {
			return false
		}
		c.Quit()
		return true
	})
	// The refusals were temporary: none counted as a guessed password.
	if gs := n.Guard.Stats(); gs.TrackedKeys != 0 || gs.BlockedKeys != 0 {
		t.Errorf("guard after temporary failures: %+v", gs)
	}
}

// TestPostgresTwoNodes: two nodes share one PostgreSQL. An account disabled
// through node B gets "access disabled" on node A at once, although A cached
// it a moment before with a TTL of an hour; the session A served is found
// through B's store.
func TestPostgresTwoNodes(t *testing.T) {
	rcv := testutil.NewReceiver(t, testutil.ReceiverOptions{})
	dsn := testutil.PostgresDSN(t)
	cfgA := pgConfig(t, rcv.Addr, dsn)
	cfgA.Store.CacheTTL = config.Duration(time.Hour)
	a := startNode(t, cfgA)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Node B's directory holds what A added; it is not added again.
	b, err := New(ctx, pgConfig(t, rcv.Addr, dsn), a.Log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c, err := authOn(t, a, "jan@firma.test", "secret-pw")
	if err != nil {
		t.Fatal(err)
	}
	c.Quit()
	if err := b.Directory.SetSMTPAccess(ctx, "jan@firma.test", false); err != nil {
		t.Fatal(err)
	}
	var sid string
	testutil.WaitFor(t, 5*time.Second, "node A to refuse the account disabled through node B", func() bool {
		_, err := authOn(t, a, "jan@firma.test", "secret-pw")
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 535 && strings.HasSuffix(se.Message, "authentication rejected access disabled") {
			sid = se.Message[:22]
			return true
		}
		return false
	})
	testutil.WaitFor(t, 5*time.Second, "node B to find the session node A served", func() bool {
		r, err := b.Stores.Sessions.Get(ctx, sid)
		return err == nil && len(r.Events) > 0
	})
}
