package trace

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"submitd/internal/queue"
	"submitd/internal/spool"
	"submitd/internal/testutil"
)

func TestHeaderFacts(t *testing.T) {
	for _, c := range []struct{ msg, subject, id string }{
		{"Subject: Faktura 42\r\nMessage-ID: <a.1@firma.cz>\r\n\r\nbody", "Faktura 42", "<a.1@firma.cz>"},
		{"Subject: =?UTF-8?Q?P=C5=99=C3=ADloha?=\r\n folded\r\n\r\n", "Příloha folded", ""},
		{"message-id:\r\n <x@y>\r\n\r\n", "", "<x@y>"},
		{"not a header\r\n\r\n", "", ""},
		{"Subject: " + strings.Repeat("é", 400) + "\r\n\r\n", strings.Repeat("é", maxSubject/2), ""},
	} {
		s, id := HeaderFacts(strings.NewReader(c.msg))
		if s != c.subject || id != c.id {
			t.Errorf("HeaderFacts(%.40q) = %q, %q; want %q, %q", c.msg, s, id, c.subject, c.id)
		}
	}
}

// FuzzHeaderFacts: whatever a message's header holds, HeaderFacts returns
// bounded, valid UTF-8 without control characters, and does not panic.
func FuzzHeaderFacts(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\nMessage-ID: <a@b>\r\n\r\n",
		"Subject: =?iso-8859-2?q?=BEluty?=\r\n\r\n",
		"Subject: \x00\xff\r\n\r\n",
		" continuation first\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, id := HeaderFacts(strings.NewReader(string(data)))
		for _, v := range []string{s, id} {
			if !utf8.ValidString(v) || len(v) > maxMsgID || strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("HeaderFacts gave %q", v)
			}
		}
	})
}

// stalled is a store whose Save blocks until release is closed.
type stalled struct {
	Store
	release chan struct{}
	saved   atomic.Int64
}

func (s *stalled) Save(ctx context.Context, b *Batch) error {
	<-s.release
	s.saved.Add(int64(len(b.Messages) + len(b.Events)))
	return nil
}

func (s *stalled) Prune(context.Context, time.Time) (int64, error) { return 0, nil }

// TestRecorderBoundedUnderFlood: with the store stalled, a flood of events
// neither blocks the delivery worker that reports them nor grows without
// bound: past the backlog they are dropped and counted.
func TestRecorderBoundedUnderFlood(t *testing.T) {
	st := &stalled{release: make(chan struct{})}
	r := NewRecorder(st, time.Hour, slog.New(slog.DiscardHandler))
	const n = 3 * backlog
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			r.Trace(queue.TraceEvent{QueueID: "0000000000000000000000a1", Rcpt: "a@example.org", Time: time.Now(), Kind: queue.TraceDeferred})
		}
		close(done)
	}()
	testutil.WaitFor(t, 30*time.Second, "the flood handed over", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	if s := r.Stats(); s.Dropped == 0 || s.Backlog > backlog {
		t.Errorf("stats under a flood: %+v", s)
	}
	close(st.release)
	r.Close()
	if got, s := st.saved.Load(), r.Stats(); got+int64(s.Dropped) != n {
		t.Errorf("saved %d + dropped %d, want %d", got, s.Dropped, n)
	}
}

// TestRecorderAccepted: a message's Subject and Message-ID come from the
// content the commit held, or from the spool when it held none.
func TestRecorderAccepted(t *testing.T) {
	st, err := NewSQLite(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRecorder(st, time.Hour, slog.New(slog.DiscardHandler))
	r.Spool = sp
	env := &spool.Envelope{From: "jan@firma.cz", To: []string{"Friend@Example.org"}, Account: "jan@firma.cz",
		SessionID: "piWs1j0010jifNx01iWsdh", Received: time.Now()}
	w, err := sp.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: from the spool\r\nMessage-ID: <s@firma.cz>\r\n\r\nhi\r\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	r.Accepted(env)
	held := &spool.Envelope{ID: "0000000000000000000000c1", From: "jan@firma.cz", To: []string{"b@example.org"}, Received: time.Now(),
		Content: []byte("Subject: held\r\n\r\n")}
	r.Accepted(held)
	r.Close()
	m, err := st.Message(context.Background(), env.ID)
	if err != nil || m.Subject != "from the spool" || m.MessageID != "<s@firma.cz>" || m.Rcpts[0].Addr != "friend@example.org" {
		t.Errorf("message from the spool: %+v, %v", m, err)
	}
	if m, err := st.Message(context.Background(), held.ID); err != nil || m.Subject != "held" {
		t.Errorf("message held in memory: %+v, %v", m, err)
	}
	if _, err := st.Message(context.Background(), "0000000000000000000000c2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown: %v", err)
	}
}

// failing is a store whose first saves fail, as a database does while it
// restarts.
type failing struct {
	Store
	fails atomic.Int64
	saved atomic.Int64
}

func (s *failing) Save(ctx context.Context, b *Batch) error {
	if s.fails.Add(-1) >= 0 {
		return errors.New("the database is restarting")
	}
	s.saved.Add(int64(len(b.Messages) + len(b.Events)))
	return nil
}

func (s *failing) Prune(context.Context, time.Time) (int64, error) { return 0, nil }

// TestRecorderRetries: while the store fails, the history is held and
// tried again, the items that come meanwhile with it; once the store
// answers, all of it is saved and nothing counts as lost.
func TestRecorderRetries(t *testing.T) {
	st := &failing{}
	st.fails.Store(2)
	r := NewRecorder(st, time.Hour, slog.New(slog.DiscardHandler))
	defer r.Close()
	ev := queue.TraceEvent{QueueID: "0000000000000000000000a1", Rcpt: "a@example.org", Time: time.Now(), Kind: queue.TraceDeferred}
	r.Trace(ev)
	testutil.WaitFor(t, 30*time.Second, "the first save failed", func() bool { return st.fails.Load() < 2 })
	for range 10 {
		r.Trace(ev)
	}
	testutil.WaitFor(t, 30*time.Second, "the held history saved", func() bool { return st.saved.Load() == 11 })
	if s := r.Stats(); s.Failed != 0 || s.Dropped != 0 {
		t.Errorf("stats after the store recovered: %+v", s)
	}
}
