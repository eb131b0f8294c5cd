package queue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/testutil"
)

func (w *world) admin() *Admin {
	return &Admin{Spool: w.sp, Hostname: "submit.test", MaxAge: w.cfg.MaxAge}
}

// With no server running, "queue retry" and "queue delete" change the spool
// directly, and a server started later acts on it.
func TestAdminOffline(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, nil)
	w.rcv["b.test"].SetRcptError("petr@b.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"})
	retried := w.submit("jan@firma.test", "eva@a.test")
	bounced := w.submit("jan@firma.test", "petr@b.test")
	silent := w.submit("jan@firma.test", "petr@b.test", "ota@a.test")
	w.run()
	w.stop()
	a := w.admin()

	items, err := a.List()
	if err != nil || len(items) != 3 {
		t.Fatalf("list: %d items, %v", len(items), err)
	}
	if items[0].Env.ID != retried || items[0].State.Rcpts[0].Status != Deferred || items[0].State.Rcpts[0].Attempts != 1 {
		t.Errorf("first item %s: %+v", items[0].Env.ID, items[0].State.Rcpts[0])
	}
	it, headers, err := a.Show(bounced)
	if err != nil || !strings.Contains(string(headers), "Subject: quarterly report") || it.State.Rcpts[0].Reply != "451 4.7.1 greylisted" {
		t.Fatalf("show: %v %q %+v", err, headers, it)
	}
	if _, _, err := a.Show("000000000000000000000000"); !errors.Is(err, ErrNotQueued) {
		t.Errorf("show of an unknown id: %v", err)
	}
	if _, err := a.Retry("../../etc/passwd"); err == nil {
		t.Error("retry accepted a bad id")
	}

	if msg, err := a.Retry(retried); err != nil || msg != "retry scheduled for "+retried {
		t.Fatalf("retry: %q %v", msg, err)
	}
	if msg, err := a.Delete(bounced, true); err != nil || msg != "deleted "+bounced+" and reported it to <jan@firma.test>" {
		t.Fatalf("delete -bounce: %q %v", msg, err)
	}
	if msg, err := a.Delete(silent, false); err != nil || msg != "deleted "+silent {
		t.Fatalf("delete: %q %v", msg, err)
	}
	if _, err := a.Delete(silent, false); !errors.Is(err, ErrNotQueued) {
		t.Errorf("second delete: %v", err)
	}

	// The clock has not moved: only the retry makes the first message due.
	w.start()
	w.run()
	if msgs := w.rcv["a.test"].Messages(); len(msgs) != 1 || msgs[0].Rcpts[0] != "eva@a.test" {
		t.Fatalf("a.test got %+v", msgs)
	}
	reports := w.rcv["firma.test"].Messages()
	if len(reports) != 1 {
		t.Fatalf("sender got %d reports, want 1 (for the bounced delete)", len(reports))
	}
	d := parseDSN(t, reports[0].Data)
	h := d.rcpt(t, "petr@b.test")
	if h.Get("Action") != "failed" || !strings.Contains(d.human, "deleted from the queue by the administrator") ||
		!strings.Contains(d.human, bounced) {
		t.Errorf("report: %v\n%s", h, d.human)
	}
	if q := w.queued(); len(q) != 0 {
		t.Errorf("%d messages left", len(q))
	}
}

// While the server runs, retry and delete go to the running queue (the
// admin API calls Queue.Retry and Queue.Delete); it retries at once and
// deletes. Changing the spool from outside is refused meanwhile.
func TestAdminWhileRunning(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"a.test": {RcptHook: tempFail(1)}}, nil)
	w.rcv["b.test"].SetRcptError("petr@b.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"})
	retried := w.submit("jan@firma.test", "eva@a.test")
	deleted := w.submit("jan@firma.test", "petr@b.test")
	w.run()

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		w.q.Run(ctx)
		close(stopped)
	}()
	defer func() {
		cancel()
		<-stopped
	}()
	if _, err := w.admin().Retry(retried); !errors.Is(err, ErrLocked) {
		t.Errorf("a change from outside while the server runs: %v, want ErrLocked", err)
	}
	if msg, err := w.q.Retry(retried); err != nil || msg != "retry scheduled for "+retried {
		t.Fatalf("retry: %q %v", msg, err)
	}
	if msg, err := w.q.Delete(deleted, true); err != nil || msg != "deleted "+deleted+" and reported it to <jan@firma.test>" {
		t.Fatalf("delete: %q %v", msg, err)
	}
	if _, err := w.q.Retry("000000000000000000000000"); !errors.Is(err, ErrNotQueued) {
		t.Errorf("retry of an unknown id: %v", err)
	}
	if _, err := w.q.Delete("../../etc/passwd", false); err == nil || errors.Is(err, ErrNotQueued) {
		t.Errorf("delete of a bad id: %v", err)
	}
	testutil.WaitFor(t, 20*time.Second, "the retried message and the report", func() bool {
		return len(w.rcv["a.test"].Messages()) == 1 && len(w.rcv["firma.test"].Messages()) == 1 && len(w.queued()) == 0
	})
	d := parseDSN(t, w.rcv["firma.test"].Messages()[0].Data)
	d.rcpt(t, "petr@b.test")
}

// One server at a time delivers from a spool.
func TestSpoolLocked(t *testing.T) {
	w := newWorld(t, nil, nil)
	cfg := w.cfg
	cfg.LockWait = 10 * time.Millisecond
	if _, err := New(cfg); !errors.Is(err, ErrLocked) {
		t.Fatalf("second queue on one spool: %v", err)
	}
	w.stop()
	q, err := New(cfg)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	q.Close()
}
