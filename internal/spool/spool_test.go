package spool

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func put(t *testing.T, s *Spool, body string) *Envelope {
	t.Helper()
	env := &Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}, Account: "jan@firma.cz",
		SessionID: "piWs1j0010jifNx01iWsdh", ClientIP: "127.0.0.1", Received: time.Now()}
	w, err := s.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, body)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	s, err := Open(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a := put(t, s, "From: jan@firma.cz\r\n\r\nfirst\r\n")
	b := put(t, s, "From: jan@firma.cz\r\n\r\nsecond\r\n")
	// An aborted message leaves nothing.
	w, _ := s.Create(&Envelope{From: "x@y.cz"})
	io.WriteString(w, "partial")
	w.Abort()

	envs, err := s.Load()
	if err != nil || len(envs) != 2 {
		t.Fatalf("Load: %d, %v", len(envs), err)
	}
	if envs[0].ID != a.ID || envs[1].ID != b.ID || envs[0].SessionID != "piWs1j0010jifNx01iWsdh" {
		t.Fatalf("envelopes %+v %+v", envs[0], envs[1])
	}
	r, size, err := s.Message(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if string(got) != "From: jan@firma.cz\r\n\r\nsecond\r\n" || size != int64(len(got)) {
		t.Fatalf("message %q (%d)", got, size)
	}
	if err := s.WriteState(a.ID, []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.ReadState(a.ID); string(st) != `{"x":1}` {
		t.Fatalf("state %q", st)
	}
	if err := s.Remove(a.ID); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.ReadState(a.ID); st != nil {
		t.Fatal("state survived Remove")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ holds %d files", len(ents))
	}
}

// TestDamage: truncated, bit-flipped and foreign files are moved to
// corrupt/ with a log line; the good ones still load.
func TestDamage(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	s, _ := Open(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	good := put(t, s, "From: a@b.cz\r\n\r\ngood\r\n")
	trunc := put(t, s, "From: a@b.cz\r\n\r\ntruncated body\r\n")
	flip := put(t, s, "From: a@b.cz\r\n\r\nflipped body\r\n")
	// A restart makes the files durable on their own and retires the
	// journal, which would otherwise restore them.
	s, _ = Open(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	s.ClearUnfinished()
	if segs := segmentNames(filepath.Join(dir, journalDir)); len(segs) != 0 {
		t.Fatalf("journal segments left after replay: %v", segs)
	}
	name := func(e *Envelope) string { return filepath.Join(dir, e.ID+".msg") }
	b, _ := os.ReadFile(name(trunc))
	os.WriteFile(name(trunc), b[:len(b)-10], 0o640)
	b, _ = os.ReadFile(name(flip))
	b[bytes.Index(b, []byte("flipped"))] = 'F'
	os.WriteFile(name(flip), b, 0o640)
	os.WriteFile(filepath.Join(dir, "33lrhkj7b47fao68fvg29102.msg"), []byte("not a spool file"), 0o640)
	// A leftover from an interrupted write is cleared by its owner.
	os.WriteFile(filepath.Join(dir, "tmp", "leftover"), []byte("x"), 0o640)

	s, _ = Open(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	s.ClearUnfinished()
	envs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 || envs[0].ID != good.ID {
		t.Fatalf("loaded %d envelopes", len(envs))
	}
	bad, _ := os.ReadDir(filepath.Join(dir, "corrupt"))
	if len(bad) != 3 {
		t.Fatalf("corrupt/ holds %d files", len(bad))
	}
	if n := strings.Count(logs.String(), "damaged message moved aside"); n != 3 {
		t.Fatalf("%d log lines:\n%s", n, logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "leftover")); !os.IsNotExist(err) {
		t.Fatal("tmp/ leftover not removed")
	}
}

// FuzzReadEnvelope: whatever a spool file holds, reading it never panics,
// and a file it accepts has a trailer that matches its content.
func FuzzReadEnvelope(f *testing.F) {
	f.Add([]byte("submitd-spool 1\n{\"id\":\"33lrhkj7b47fao68fvg29102\",\"from\":\"a@b.cz\",\"to\":[\"c@d.cz\"],\"account\":\"a@b.cz\",\"session_id\":\"piWs1j0010jifNx01iWsdh\",\"client_ip\":\"127.0.0.1\",\"received\":\"2026-11-26T22:00:00Z\"}\nFrom: a@b.cz\r\n\r\nx\r\nend 0000000000000013 00000000\n"))
	f.Add([]byte("submitd-spool 1\n{\"id\":\"33lrhkj7b47fao68fvg29102\"}\nend 0000000000000000 00000000\n"))
	f.Add([]byte("submitd-spool 1\n{\"id\":\"x\"}\n"))
	f.Add([]byte("garbage"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		name := filepath.Join(dir, "33lrhkj7b47fao68fvg29102.msg")
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		env, err := readEnvelope(name, true)
		if err != nil {
			return
		}
		if env.offset+env.Size+int64(trailerLen) != int64(len(data)) {
			t.Fatalf("accepted file with inconsistent size: offset %d size %d len %d", env.offset, env.Size, len(data))
		}
	})
}

// TestCommitHandsOverContent: a small message committed from memory reaches
// OnCommit with its content, byte for byte what Message reads back, so the
// first delivery attempt need not read it; a large one comes without.
func TestCommitHandsOverContent(t *testing.T) {
	s, err := Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var got []*Envelope
	s.OnCommit = func(e *Envelope) { got = append(got, e) }
	for _, size := range []int{100, 4 << 20} {
		w, err := s.Create(&Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(bytes.Repeat([]byte("x"), size-2))
		w.Write([]byte("\r\n"))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	small, large := got[0], got[1]
	rc, _, err := s.Message(small.ID)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(small.Content, stored) || len(stored) != 100 {
		t.Fatalf("handed-over content %q, stored %q", small.Content, stored)
	}
	if large.Content != nil {
		t.Fatalf("a %d-byte message was handed over in memory", large.Size)
	}
}

// TestLargeCommitSyncFailureLeavesNothing: when the directory sync after a
// large message's rename fails, the client gets no 250 and sends the
// message again, so the file must not stay to be delivered a second time
// after the next start (SPEC R15 forbids the loss; this avoids the copy).
func TestLargeCommitSyncFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.group = newGroup(func() error { return errors.New("fsync: too many open files") })
	w, err := s.Create(&Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("y"), 1<<20))
	w.Write([]byte("\r\n"))
	if err := w.Commit(); err == nil {
		t.Fatal("Commit succeeded although the directory sync failed")
	}
	s2, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s2.ClearUnfinished()
	if envs, err := s2.Load(); err != nil || len(envs) != 0 {
		t.Fatalf("after a failed commit the spool holds %d messages (%v)", len(envs), err)
	}
}

// TestContent: before Commit, Content reads back exactly the bytes
// written, from memory for a small message and from its file in tmp/ for
// one past journalMax, and those are the bytes Commit queues; once the
// message is finished, the reader of a file reads nothing more.
func TestContent(t *testing.T) {
	s, _ := testSpool(t)
	for _, size := range []int{1 << 10, journalMax, 3 << 20} {
		body := make([]byte, size)
		for i := range body {
			body[i] = "abcdefghijklmnopqrstuvwxyz\r\n"[i%28]
		}
		w, err := s.Create(&Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}})
		if err != nil {
			t.Fatal(err)
		}
		// Written in pieces, as a session writes what it reads.
		for p := body; len(p) > 0; p = p[min(len(p), 1000):] {
			w.Write(p[:min(len(p), 1000)])
		}
		r, err := w.Content()
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, body) || r.Size() != int64(size) {
			t.Fatalf("%d bytes: Content read %d bytes (size %d), err %v; not the bytes written", size, len(got), r.Size(), err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		m, _, err := s.Message(w.env.ID)
		if err != nil {
			t.Fatal(err)
		}
		queued, _ := io.ReadAll(m)
		m.Close()
		if !bytes.Equal(queued, got) {
			t.Errorf("%d bytes: the queued message is not what Content read", size)
		}
		if _, err := r.ReadAt(make([]byte, 1), 0); size > journalMax && err == nil {
			t.Errorf("%d bytes: the file is still read after Commit", size)
		}
	}
}

// TestContentWriteError: a message whose file cannot be written out for
// Content is refused at Commit too, and leaves nothing in tmp/.
func TestContentWriteError(t *testing.T) {
	s, _ := testSpool(t)
	w, _ := s.Create(&Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}})
	w.Write(bytes.Repeat([]byte("a"), 2*journalMax))
	// A file that no longer takes writes, as a failing disk makes it; what
	// is written now waits in the write buffer for Content to write out.
	w.f.Close()
	w.Write([]byte("tail\r\n"))
	if _, err := w.Content(); err == nil {
		t.Fatal("Content succeeded though the file could not be written")
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit succeeded after a failed write")
	}
	if ents, _ := os.ReadDir(filepath.Join(s.dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ holds %d files", len(ents))
	}
	if envs, _ := s.Load(); len(envs) != 0 {
		t.Errorf("%d messages spooled", len(envs))
	}
}
