package queue

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/spool"
	"submitd/internal/testutil"
)

// deadNode is a second node with its own spool, delivering to w's
// receivers on w's clock, so that counts over w's receivers cover both.
func deadNode(w *world) *world {
	w.t.Helper()
	sp, err := spool.Open(w.t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		w.t.Fatal(err)
	}
	d := &world{t: w.t, clk: w.clk, rcv: w.rcv, dns: w.dns, port: w.port, cfg: w.cfg, sp: sp, log: &bytes.Buffer{}, logMu: w.logMu}
	d.cfg.Spool = sp
	d.start()
	return d
}

// deliveries counts, over every receiver, the messages each recipient got.
func (w *world) deliveries() map[string]int {
	n := map[string]int{}
	for _, r := range w.rcv {
		for _, m := range r.Messages() {
			for _, rc := range m.Rcpts {
				n[rc]++
			}
		}
	}
	return n
}

// msgFiles lists the message files in dir.
func msgFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.msg"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// A stopped node's spool with messages in every delivery state is adopted,
// and every recipient gets the message exactly once over both nodes: those
// the dead node delivered are not sent again, the failure it reported is
// not reported again, deferred ones keep their attempt count, the pending
// message is delivered, and the write it had under way is discarded.
func TestAdoptDeliversEachRecipientOnce(t *testing.T) {
	w := newWorld(t, map[string]testutil.ReceiverOptions{"b.test": {RcptHook: tempFail(1)}}, nil)
	w.rcv["a.test"].SetRcptError("bad@a.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	d := deadNode(w)
	m1 := d.submit("jan@firma.test", "eva@a.test", "petr@b.test")
	m2 := d.submit("jan@firma.test", "ota@a.test", "bad@a.test", "iva@b.test")
	d.run()
	if st := d.state(m1); st.Rcpts[0].Status != Delivered || st.Rcpts[1].Status != Deferred {
		t.Fatalf("dead node, m1: %s", summary(st))
	}
	if st := d.state(m2); st.Rcpts[1].Status != Failed || !st.Rcpts[1].Bounced || st.Rcpts[2].Status != Deferred {
		t.Fatalf("dead node, m2: %s", summary(st))
	}
	d.submit("jan@firma.test", "zdena@a.test", "karel@b.test") // never attempted
	// A large message being received when the node died: its file is in
	// tmp/ and its client never saw 250.
	wr, err := d.sp.Create(&spool.Envelope{From: "jan@firma.test", To: []string{"lost@a.test"}, Received: w.clk.Now()})
	if err != nil {
		t.Fatal(err)
	}
	wr.Write(bytes.Repeat([]byte("x"), 100<<10))
	if tmps, _ := filepath.Glob(filepath.Join(d.sp.Dir(), "tmp", "*")); len(tmps) != 1 {
		t.Fatalf("tmp/ holds %v", tmps)
	}
	d.stop()
	before := w.deliveries()
	if before["jan@firma.test"] != 1 {
		t.Fatalf("dead node's report for bad@a.test: jan@firma.test got %d messages", before["jan@firma.test"])
	}

	res, err := w.q.Adopt(d.sp.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Adopted) != 3 || res.Unfinished != 1 || len(res.Left) != 0 || res.Damaged != 0 {
		t.Fatalf("adopt: %+v", res)
	}
	if left := msgFiles(t, d.sp.Dir()); len(left) != 0 {
		t.Fatalf("foreign spool still holds %v", left)
	}
	if st := w.state(m1); st.Rcpts[1].Status != Deferred || st.Rcpts[1].Attempts != 1 {
		t.Fatalf("adopted m1 lost its state: %s, attempts %d", summary(st), st.Rcpts[1].Attempts)
	}
	w.run()
	w.clk.Advance(10 * time.Minute)
	w.run()
	got := w.deliveries()
	for _, r := range []string{"eva@a.test", "petr@b.test", "ota@a.test", "iva@b.test", "zdena@a.test", "karel@b.test", "jan@firma.test"} {
		if got[r] != 1 {
			t.Errorf("%s got %d copies, want 1 (all: %v)", r, got[r], got)
		}
	}
	if got["bad@a.test"] != 0 || got["lost@a.test"] != 0 {
		t.Errorf("delivered to a failed or unacknowledged recipient: %v", got)
	}
	if q := w.queued(); len(q) != 0 {
		t.Errorf("spool still holds %d messages", len(q))
	}
}

// A spool whose node still runs is refused: two nodes must never deliver
// the same message.
func TestAdoptRefusesLockedSpool(t *testing.T) {
	w := newWorld(t, nil, nil)
	d := deadNode(w) // still holds its lock
	d.submit("jan@firma.test", "eva@a.test")
	_, err := w.q.Adopt(d.sp.Dir())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by a running submitd") {
		t.Fatalf("adopt of a locked spool: %v", err)
	}
	if n := len(msgFiles(t, d.sp.Dir())); n != 1 {
		t.Fatalf("foreign spool holds %d messages after the refusal, want 1", n)
	}
	if _, err := w.q.Adopt(w.sp.Dir()); err == nil || !strings.Contains(err.Error(), "own spool") {
		t.Fatalf("adopt of the node's own spool: %v", err)
	}
	if _, err := w.q.Adopt("relative/spool"); err == nil {
		t.Fatal("adopt of a relative path succeeded")
	}
	if _, err := w.q.Adopt(t.TempDir()); !errors.Is(err, ErrNotSpool) {
		t.Fatalf("adopt of an empty directory: %v", err)
	}
}

// A crash half-way loses and duplicates nothing: staged but not yet removed
// from the foreign spool, the foreign copy wins; removed there but not yet
// promoted, the staged copy does.
func TestAdoptAfterCrash(t *testing.T) {
	w := newWorld(t, nil, nil)
	d := deadNode(w)
	a := d.submit("jan@firma.test", "eva@a.test")
	b := d.submit("jan@firma.test", "petr@b.test")
	d.stop()
	foreign, err := spool.Attach(d.sp.Dir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.sp.SetAdoptSource(d.sp.Dir()); err != nil {
		t.Fatal(err)
	}
	// a: the crash came after staging; b: after the foreign removal.
	for _, id := range []string{a, b} {
		if err := w.sp.Stage(foreign, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := foreign.Remove(b); err != nil {
		t.Fatal(err)
	}
	if envs, _ := w.sp.Load(); len(envs) != 0 {
		t.Fatalf("staged messages are visible to Load: %d", len(envs))
	}
	// Another dead node's spool waits until this adoption is finished.
	other := deadNode(w)
	other.stop()
	if _, err := w.q.Adopt(other.sp.Dir()); err == nil || !strings.Contains(err.Error(), "interrupted adoption") {
		t.Fatalf("adopt of another spool with one interrupted: %v", err)
	}
	res, err := w.q.Adopt(d.sp.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Adopted) != 2 || len(res.Left) != 0 {
		t.Fatalf("adopt after a crash: %+v", res)
	}
	if left := msgFiles(t, d.sp.Dir()); len(left) != 0 {
		t.Fatalf("foreign spool still holds %v", left)
	}
	w.run()
	if got := w.deliveries(); got["eva@a.test"] != 1 || got["petr@b.test"] != 1 {
		t.Fatalf("deliveries after a crashed adoption: %v", got)
	}
	if staged, src, _ := w.sp.Staged(); len(staged) != 0 || src != "" {
		t.Fatalf("staging holds %v from %q", staged, src)
	}
}

// Garbage in the foreign spool does not stop the adoption: a message file
// that does not check out goes to corrupt/, a message whose state is
// damaged is adopted with every recipient to be tried, and files that are
// no messages are left alone.
func TestAdoptGarbage(t *testing.T) {
	w := newWorld(t, nil, nil)
	d := deadNode(w)
	id := d.submit("jan@firma.test", "eva@a.test")
	d.stop()
	dir := d.sp.Dir()
	for name, data := range map[string]string{
		"0123456789abcdefghijklmn.msg": "submitd-spool 1\n{\"id\":\"x\"}\n",
		"garbage.msg":                  "\x00\x01not a spool file",
		id + ".state":                  "state ffffffff 00000000\n{",
		"notes.txt":                    "hello",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "sub.msg"), 0o750)
	res, err := w.q.Adopt(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Adopted) != 1 || res.Damaged < 2 {
		t.Fatalf("adopt: %+v", res)
	}
	w.run()
	if got := w.deliveries(); got["eva@a.test"] != 1 {
		t.Fatalf("deliveries: %v", got)
	}
}

// FuzzAdopt puts arbitrary bytes in a foreign spool as a message file, as
// the state of a good message and as a journal segment: adopting it never
// fails or panics, the good message always moves, and nothing stays behind
// unaccounted for.
func FuzzAdopt(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		quiet := slog.New(slog.DiscardHandler)
		foreign, err := spool.Open(t.TempDir(), quiet)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(foreign.Dir(), "lock"), nil, 0o640)
		env := &spool.Envelope{From: "jan@firma.test", To: []string{"eva@a.test"}, Received: time.Now()}
		wr, err := foreign.Create(env)
		if err != nil {
			t.Fatal(err)
		}
		wr.Write([]byte("Subject: hi\r\n\r\nHello.\r\n"))
		if err := wr.Commit(); err != nil {
			t.Fatal(err)
		}
		good := env.ID
		for _, name := range []string{"33lri0tkmc85oqcscipnh29f.msg", good + ".state", "journal/00000000000000ff.log"} {
			if err := os.WriteFile(filepath.Join(foreign.Dir(), name), data, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		ours, err := spool.Open(t.TempDir(), quiet)
		if err != nil {
			t.Fatal(err)
		}
		res, err := adopt(ours, foreign.Dir(), nil, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(res.Adopted, good) {
			t.Fatalf("the good message was not adopted: %+v", res)
		}
		if left := msgFiles(t, foreign.Dir()); len(left) != len(res.Left) {
			t.Fatalf("foreign spool holds %v, result %+v", left, res)
		}
		envs, err := ours.Load()
		if err != nil || len(envs) != len(res.Adopted) {
			t.Fatalf("our spool loads %d messages (%v), adopted %d", len(envs), err, len(res.Adopted))
		}
	})
}

// BenchmarkAdopt measures adopting a stopped node's spool of b.N messages
// (each with a state record), per message.
func BenchmarkAdopt(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	foreign, err := spool.Open(b.TempDir(), quiet)
	if err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(foreign.Dir(), "lock"), nil, 0o640)
	body := bytes.Repeat([]byte("Hello, this is a line of a message.\r\n"), 100)
	for range b.N {
		env := &spool.Envelope{From: "jan@firma.test", To: []string{"eva@a.test", "petr@b.test"}, Received: time.Now()}
		wr, err := foreign.Create(env)
		if err != nil {
			b.Fatal(err)
		}
		wr.Write(body)
		if err := wr.Commit(); err != nil {
			b.Fatal(err)
		}
		if err := foreign.WriteStateNoSync(env.ID, []byte(`{"rcpts":[{"addr":"eva@a.test","domain":"a.test","status":"delivered","attempts":1},{"addr":"petr@b.test","domain":"b.test","status":"deferred","attempts":1}]}`)); err != nil {
			b.Fatal(err)
		}
	}
	ours, err := spool.Open(b.TempDir(), quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	res, err := adopt(ours, foreign.Dir(), nil, quiet)
	if err != nil || len(res.Adopted) != b.N {
		b.Fatalf("adopt: %v, %d of %d", err, len(res.Adopted), b.N)
	}
}
