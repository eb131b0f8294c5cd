package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"submitd/internal/queue"
	"submitd/internal/spool"
)

// TestQueueListFields checks "queue list" as a script reads it: five
// tab-separated fields without blanks, so that both cut -f and awk's default
// splitting find the columns, and the next attempt in RFC 3339 UTC like the
// times of "submitd blocked" (it was "2006-01-02 15:04:05Z", whose space
// made awk see six fields).
func TestQueueListFields(t *testing.T) {
	c := newCLI(t, "bcrypt")
	env := &spool.Envelope{From: "jan@firma.cz", To: []string{"eva@example.org", "petr@example.net"},
		Account: "jan@firma.cz", SessionID: "piWs1j0010jifNx01iWsdh", ClientIP: "192.0.2.1", Received: time.Now()}
	next := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	c.spoolMessage(env, &queue.State{Rcpts: []*queue.Rcpt{
		{Addr: "eva@example.org", Domain: "example.org", Status: queue.Deferred, Attempts: 2, Next: next},
		{Addr: "petr@example.net", Domain: "example.net", Status: queue.Delivered, Attempts: 1},
	}})

	code, out, errOut := c.run("", "queue", "list")
	if code != 0 || errOut != "" {
		t.Fatalf("queue list = %d, %q", code, errOut)
	}
	line := strings.TrimSuffix(out, "\n")
	f := strings.Split(line, "\t")
	if len(f) != 5 || len(strings.Fields(line)) != 5 {
		t.Fatalf("queue list line %q: want 5 tab-separated fields without blanks", line)
	}
	if f[0] != env.ID || f[2] != "<jan@firma.cz>" || f[3] != "eva@example.org:deferred(2),petr@example.net:delivered" {
		t.Errorf("queue list line %q", line)
	}
	if got, err := time.Parse(time.RFC3339, f[4]); err != nil || !got.Equal(next) || !strings.HasSuffix(f[4], "Z") {
		t.Errorf("next attempt %q; want %s", f[4], next.Format(time.RFC3339))
	}
}

// spoolMessage puts a message from env, with delivery state st, in the
// spool of the CLI's data_dir, as a stopped server left it.
func (c *cli) spoolMessage(env *spool.Envelope, st *queue.State) {
	c.t.Helper()
	sp, err := spool.Open(filepath.Join(c.dataDir, "spool"), slog.New(slog.DiscardHandler))
	if err != nil {
		c.t.Fatal(err)
	}
	w, err := sp.Create(env)
	if err != nil {
		c.t.Fatal(err)
	}
	io.WriteString(w, "From: jan@firma.cz\r\nSubject: x\r\n\r\nbody\r\n")
	if err := w.Commit(); err != nil {
		c.t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	if err := sp.WriteState(env.ID, b); err != nil {
		c.t.Fatal(err)
	}
}

// TestQueueAdoptOffline: with no server running, "queue adopt" moves a
// stopped node's messages, with their delivery state, into this node's
// spool (where the next start finds them), given a relative path; a data_dir
// instead of its spool is refused with a hint.
func TestQueueAdoptOffline(t *testing.T) {
	c := newCLI(t, "bcrypt")
	c.run("", "domain", "add", "firma.cz") // creates the database, for the audit log
	quiet := slog.New(slog.DiscardHandler)
	ours, err := spool.Open(filepath.Join(c.dataDir, "spool"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	// A stopped node: its data_dir with a spool that its queue locked once.
	other := t.TempDir()
	foreign, err := spool.Open(filepath.Join(other, "spool"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign.Dir(), "lock"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	env := &spool.Envelope{From: "jan@firma.cz", To: []string{"eva@example.org", "petr@example.net"}, Received: time.Now()}
	w, err := foreign.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: x\r\n\r\nbody\r\n")
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(&queue.State{Rcpts: []*queue.Rcpt{
		{Addr: "eva@example.org", Domain: "example.org", Status: queue.Delivered, Attempts: 1},
		{Addr: "petr@example.net", Domain: "example.net", Status: queue.Deferred, Attempts: 3},
	}})
	if err := foreign.WriteState(env.ID, st); err != nil {
		t.Fatal(err)
	}

	if code, _, errOut := c.run("", "queue", "adopt", other); code == 0 || !strings.Contains(errOut, "is a data_dir; its spool is "+foreign.Dir()) {
		t.Fatalf("adopt of a data_dir: %d %q", code, errOut)
	}
	t.Chdir(other)
	code, out, errOut := c.run("", "queue", "adopt", "spool")
	if code != 0 || out != "adopted 1 message(s) from "+foreign.Dir()+"\n" {
		t.Fatalf("queue adopt = %d, %q %q", code, out, errOut)
	}
	_, got, err := queue.ReadState(ours, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rcpts[0].Status != queue.Delivered || got.Rcpts[1].Status != queue.Deferred || got.Rcpts[1].Attempts != 3 {
		t.Errorf("adopted state: %+v %+v", got.Rcpts[0], got.Rcpts[1])
	}
	if envs, _ := foreign.List(); len(envs) != 0 {
		t.Errorf("the stopped node's spool still holds %d messages", len(envs))
	}
}
