package spool

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncRecorder stands in for fdatasync: it counts the calls, really syncs,
// and records how much of each file a finished sync covered, so a test can
// check that a commit returned only after a sync covering its record. The
// first call can be held until enough callers wait behind it.
type syncRecorder struct {
	mu      sync.Mutex
	calls   int
	names   []string
	covered map[string]int64
	// holdFirst, when set, is called before the first sync runs.
	holdFirst func()
}

func (r *syncRecorder) sync(f *os.File) error {
	r.mu.Lock()
	r.calls++
	first := r.calls == 1
	r.names = append(r.names, f.Name())
	r.mu.Unlock()
	if first && r.holdFirst != nil {
		r.holdFirst()
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := fdatasync(f); err != nil {
		return err
	}
	r.mu.Lock()
	r.covered[f.Name()] = max(r.covered[f.Name()], fi.Size())
	r.mu.Unlock()
	return nil
}

func (r *syncRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// durable reports whether a finished sync covered a record of kind for id.
func (r *syncRecorder) durable(t *testing.T, dir string, kind byte, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := []byte(fmt.Sprintf("jrec %c %s ", kind, id))
	for name, n := range r.covered {
		if filepath.Dir(name) != filepath.Join(dir, journalDir) {
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, want); i >= 0 && int64(i+recHdrLen) <= n {
			return true
		}
	}
	return false
}

func newRecorder(s *Spool) *syncRecorder {
	r := &syncRecorder{covered: map[string]int64{}}
	s.syncFile = r.sync
	return r
}

// holdUntil returns a holdFirst that waits (up to 10s) until n callers wait
// for the next sync of g.
func holdUntil(t *testing.T, g *group, n int) func() {
	return func() {
		deadline := time.Now().Add(10 * time.Second)
		for g.pending() < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if g.pending() < n {
			t.Errorf("only %d callers waited for the next sync, want %d", g.pending(), n)
		}
	}
}

func testSpool(t *testing.T) (*Spool, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	s, err := Open(t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, &logs
}

// TestGroupCommit: 50 sessions committing at once share the journal's
// fdatasyncs: while the first one's sync runs the other 49 append and wait,
// and one more sync covers them all. None of them returns before a sync that
// covers its record (SPEC R15). Their removals share syncs the same way.
func TestGroupCommit(t *testing.T) {
	s, _ := testSpool(t)
	rec := newRecorder(s)
	const n = 50
	rec.holdFirst = holdUntil(t, s.journal.group, n-1)
	envs := make([]*Envelope, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := &Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}}
			w, err := s.Create(env)
			if err != nil {
				t.Error(err)
				return
			}
			fmt.Fprintf(w, "Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 4096))
			if err := w.Commit(); err != nil {
				t.Error(err)
				return
			}
			if !rec.durable(t, s.dir, recMessage, env.ID) {
				t.Errorf("Commit of %s returned before its record was synced", env.ID)
			}
			envs[i] = env
		}()
	}
	wg.Wait()
	if got := rec.count(); got != 2 {
		t.Errorf("%d commits made %d syncs, want 2", n, got)
	}
	loaded, err := s.Load()
	if err != nil || len(loaded) != n {
		t.Fatalf("Load: %d messages, %v", len(loaded), err)
	}

	// Durable state records share the journal's syncs too.
	rec.mu.Lock()
	rec.calls = 0
	rec.mu.Unlock()
	rec.holdFirst = holdUntil(t, s.journal.group, n-1)
	for _, env := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.WriteState(env.ID, []byte(`{"rcpts":[]}`)); err != nil {
				t.Error(err)
			}
			if !rec.durable(t, s.dir, recState, env.ID) {
				t.Errorf("WriteState of %s returned before its record was synced", env.ID)
			}
		}()
	}
	wg.Wait()
	if got := rec.count(); got != 2 {
		t.Errorf("%d state writes made %d syncs, want 2", n, got)
	}

	rec.mu.Lock()
	rec.calls = 0
	rec.mu.Unlock()
	rec.holdFirst = holdUntil(t, s.journal.group, n-1)
	for _, env := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Remove(env.ID); err != nil {
				t.Error(err)
			}
			if !rec.durable(t, s.dir, recRemoved, env.ID) {
				t.Errorf("Remove of %s returned before its tombstone was synced", env.ID)
			}
		}()
	}
	wg.Wait()
	if got := rec.count(); got != 2 {
		t.Errorf("%d removals made %d syncs, want 2", n, got)
	}
	if loaded, _ := s.Load(); len(loaded) != 0 {
		t.Errorf("%d messages left after removing all", len(loaded))
	}
}

// TestGroupCommitLarge: messages too large for the journal are each
// fdatasynced, and the directory fsync that makes their names durable is
// shared.
func TestGroupCommitLarge(t *testing.T) {
	s, _ := testSpool(t)
	rec := newRecorder(s)
	var dirSyncs sync.Mutex
	nd := 0
	const n = 20
	first := true
	s.group = newGroup(func() error {
		dirSyncs.Lock()
		nd++
		hold := first
		first = false
		dirSyncs.Unlock()
		if hold {
			holdUntil(t, s.group, n-1)()
		}
		return syncDir(s.dir)
	})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, _ := s.Create(&Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}})
			w.Write(bytes.Repeat([]byte("y"), journalMax))
			if err := w.Commit(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if rec.count() != n || nd != 2 {
		t.Errorf("%d large commits made %d file syncs and %d directory syncs, want %d and 2", n, rec.count(), nd, n)
	}
	if segs := segmentNames(filepath.Join(s.dir, journalDir)); len(segs) != 0 {
		t.Errorf("large messages went to the journal: %v", segs)
	}
}

// put1 commits one small message with a body naming i.
func put1(t *testing.T, s *Spool, i int) *Envelope {
	t.Helper()
	return put(t, s, fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n", i, i))
}

// reopen starts over on dir as a server does after a crash.
func reopen(t *testing.T, dir string, logs *bytes.Buffer) *Spool {
	t.Helper()
	s, err := Open(dir, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.ClearUnfinished()
	return s
}

// TestJournalRestores: after a power cut lost the unsynced files of
// committed messages (one missing, one cut short), the journal brings them
// back at start; a removal whose unlink was lost is carried out again.
// Once all is durable the segments are deleted.
func TestJournalRestores(t *testing.T) {
	s, logs := testSpool(t)
	a, b, c, d := put1(t, s, 1), put1(t, s, 2), put1(t, s, 3), put1(t, s, 4)
	name := func(e *Envelope) string { return filepath.Join(s.dir, e.ID+msgExt) }
	want, _ := os.ReadFile(name(b))
	gone, _ := os.ReadFile(name(d))
	if err := s.Remove(d.ID); err != nil {
		t.Fatal(err)
	}
	os.Remove(name(a))
	os.Truncate(name(b), int64(len(want)-20))
	os.WriteFile(name(d), gone, 0o640)

	s = reopen(t, s.dir, logs)
	envs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range envs {
		got = append(got, e.ID)
	}
	if strings.Join(got, " ") != strings.Join([]string{a.ID, b.ID, c.ID}, " ") {
		t.Fatalf("loaded %v, want %s %s %s", got, a.ID, b.ID, c.ID)
	}
	if bb, _ := os.ReadFile(name(b)); !bytes.Equal(bb, want) {
		t.Errorf("restored file differs:\n%q\n%q", bb, want)
	}
	if n := strings.Count(logs.String(), "message restored from the journal"); n != 2 {
		t.Errorf("%d restore log lines, want 2:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "damaged") {
		t.Errorf("damage reported:\n%s", logs)
	}
	if segs := segmentNames(filepath.Join(s.dir, journalDir)); len(segs) != 0 {
		t.Errorf("segments left after replay: %v", segs)
	}
}

// TestJournalRestoresState: a state record WriteState made durable is
// restored after a power cut lost the unsynced state file; one that the
// file still holds is left alone, with the unsynced records after it.
func TestJournalRestoresState(t *testing.T) {
	s, logs := testSpool(t)
	a, b := put1(t, s, 1), put1(t, s, 2)
	s.WriteState(a.ID, []byte(`{"a":"delivered"}`))
	s.WriteState(b.ID, []byte(`{"b":"delivered"}`))
	s.WriteStateNoSync(b.ID, []byte(`{"b":"delivered, retried"}`))
	os.Remove(filepath.Join(s.dir, a.ID+stateExt))

	s = reopen(t, s.dir, logs)
	if st, err := s.ReadState(a.ID); string(st) != `{"a":"delivered"}` {
		t.Errorf("state of a: %q, %v", st, err)
	}
	if st, err := s.ReadState(b.ID); string(st) != `{"b":"delivered, retried"}` {
		t.Errorf("state of b: %q, %v", st, err)
	}
	if n := strings.Count(logs.String(), "state restored from the journal"); n != 1 {
		t.Errorf("%d state restore log lines, want 1:\n%s", n, logs)
	}
}

// TestJournalTornTail: the record a crash cut short at a segment's tail, or
// zeros a power cut left there, end the replay quietly: the commits before
// it are intact, the cut one never returned, nothing is quarantined.
func TestJournalTornTail(t *testing.T) {
	for _, tail := range []string{"cut", "zeros", "stale"} {
		t.Run(tail, func(t *testing.T) {
			s, logs := testSpool(t)
			a := put1(t, s, 1)
			seg := filepath.Join(s.dir, journalDir, segmentNames(filepath.Join(s.dir, journalDir))[0])
			f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
			lost := "33lrhkj7b47fao68fvg29102"
			payload := []byte(magic + `{"id":"` + lost + `"}` + "\nlost\r\n")
			full := append(recHeader(recMessage, lost, payload), payload...)
			switch tail {
			case "cut":
				f.Write(full[:len(full)-5])
			case "zeros":
				f.Write(make([]byte, 4096))
			case "stale":
				full[len(full)-3] ^= 0x20
				f.Write(full)
			}
			f.Close()
			os.Remove(filepath.Join(s.dir, a.ID+msgExt))

			s = reopen(t, s.dir, logs)
			envs, _ := s.Load()
			if len(envs) != 1 || envs[0].ID != a.ID {
				t.Fatalf("loaded %d messages", len(envs))
			}
			if _, err := os.Stat(filepath.Join(s.dir, lost+msgExt)); err == nil {
				t.Error("the cut-off record was restored")
			}
			if bad, _ := os.ReadDir(filepath.Join(s.dir, "corrupt")); len(bad) != 0 || strings.Contains(logs.String(), "damaged") {
				t.Errorf("torn tail taken for damage (%d in corrupt/):\n%s", len(bad), logs)
			}
		})
	}
}

// TestJournalDamage: a record in the middle of a segment that fails its
// CRC is skipped with a log line and the records after it still restore;
// the segment is moved to corrupt/ for the operator.
func TestJournalDamage(t *testing.T) {
	s, logs := testSpool(t)
	envs := []*Envelope{put1(t, s, 1), put1(t, s, 2), put1(t, s, 3)}
	seg := filepath.Join(s.dir, journalDir, segmentNames(filepath.Join(s.dir, journalDir))[0])
	b, _ := os.ReadFile(seg)
	i := bytes.Index(b, []byte("body 2"))
	b[i] = 'B'
	os.WriteFile(seg, b, 0o640)
	for _, e := range envs {
		os.Remove(filepath.Join(s.dir, e.ID+msgExt))
	}

	s = reopen(t, s.dir, logs)
	got, _ := s.Load()
	if len(got) != 2 || got[0].ID != envs[0].ID || got[1].ID != envs[2].ID {
		t.Fatalf("loaded %d messages, want the first and the third", len(got))
	}
	if !strings.Contains(logs.String(), "damaged journal record skipped") {
		t.Errorf("no damage log line:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "corrupt", "journal-"+filepath.Base(seg))); err != nil {
		t.Errorf("damaged segment not in corrupt/: %v", err)
	}
}

// TestReclaim: full segments are deleted once the messages they hold are
// done or durable on their own; only the messages still queued are synced
// for that, and when every message is removed nothing is left but the
// directories.
func TestReclaim(t *testing.T) {
	s, logs := testSpool(t)
	rec := newRecorder(s)
	s.journal.segmentMax = 8 << 10
	var keep []*Envelope
	for i := range 40 {
		e := put(t, s, fmt.Sprintf("Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("z", 2000)))
		if i%4 == 0 {
			keep = append(keep, e)
		} else if err := s.Remove(e.ID); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.journal.idle() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if segs := segmentNames(filepath.Join(s.dir, journalDir)); len(segs) != 1 {
		t.Errorf("%d segments left, want only the current one", len(segs))
	}
	synced := map[string]bool{}
	rec.mu.Lock()
	for _, n := range rec.names {
		synced[filepath.Base(n)] = true
	}
	rec.mu.Unlock()
	for _, e := range keep[:len(keep)-2] {
		if !synced[e.ID+msgExt] {
			t.Errorf("queued message %s of a reclaimed segment was not synced", e.ID)
		}
	}
	n := 0
	for f := range synced {
		if strings.HasSuffix(f, msgExt) {
			n++
		}
	}
	if n > len(keep) {
		t.Errorf("%d message files synced, but only %d were still queued", n, len(keep))
	}
	for _, e := range keep {
		if err := s.WriteState(e.ID, []byte(`{"rcpts":[]}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(e.ID); err != nil {
			t.Fatal(err)
		}
	}
	s = reopen(t, s.dir, logs)
	var left []string
	filepath.Walk(s.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Errorf("files left after every message was done: %v", left)
	}
}

// TestStateRecords: state is appended as CRC-framed records; the last intact
// one is the state. A torn or damaged last record falls back to the one
// before; only WriteState syncs; the file is compacted before it grows past
// its bound; a file from before records holds bare JSON and still reads.
func TestStateRecords(t *testing.T) {
	s, _ := testSpool(t)
	rec := newRecorder(s)
	e := put1(t, s, 1)
	base := rec.count()
	name := filepath.Join(s.dir, e.ID+stateExt)
	read := func() string {
		t.Helper()
		b, err := s.ReadState(e.ID)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if st := read(); st != "" {
		t.Fatalf("fresh message has state %q", st)
	}
	if err := s.WriteStateNoSync(e.ID, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteState(e.ID, []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	if got := rec.count() - base; got != 1 {
		t.Errorf("one WriteState and one WriteStateNoSync made %d syncs, want 1", got)
	}
	if st := read(); st != `{"n":2}` {
		t.Fatalf("state %q", st)
	}
	s.WriteStateNoSync(e.ID, []byte(`{"n":3}`))
	b, _ := os.ReadFile(name)
	os.WriteFile(name, b[:len(b)-4], 0o640)
	if st := read(); st != `{"n":2}` {
		t.Errorf("after a torn last record: %q", st)
	}
	b[len(b)-3] = '9'
	os.WriteFile(name, b, 0o640)
	if st := read(); st != `{"n":2}` {
		t.Errorf("after a damaged last record: %q", st)
	}
	// A record appended after a torn one is found.
	os.WriteFile(name, b[:len(b)-4], 0o640)
	s.WriteStateNoSync(e.ID, []byte(`{"n":4}`))
	if st := read(); st != `{"n":4}` {
		t.Errorf("after a record appended past a torn one: %q", st)
	}
	os.WriteFile(name, []byte("garbage that is no record"), 0o640)
	if _, err := s.ReadState(e.ID); err == nil {
		t.Error("no error for a state file without an intact record")
	}
	os.WriteFile(name, []byte(`{"old":true}`), 0o640)
	if st := read(); st != `{"old":true}` {
		t.Errorf("old-style state: %q", st)
	}
	s.WriteStateNoSync(e.ID, []byte(`{"new":true}`))
	if st := read(); st != `{"new":true}` {
		t.Errorf("state written over an old-style one: %q", st)
	}
	big := []byte(`{"pad":"` + strings.Repeat("p", 1000) + `"}`)
	for range 500 {
		if err := s.WriteStateNoSync(e.ID, big); err != nil {
			t.Fatal(err)
		}
	}
	fi, _ := os.Stat(name)
	if fi.Size() > maxStateFile {
		t.Errorf("state file grew to %d bytes", fi.Size())
	}
	if st := read(); st != string(big) {
		t.Errorf("state after compaction: %.40q", st)
	}
}

// FuzzParseRec: whatever a journal segment holds, parsing it never panics,
// and a record it accepts has a payload matching its CRC and fits in b.
func FuzzParseRec(f *testing.F) {
	p := []byte("submitd-spool 1\n{}\nx")
	f.Add(append(recHeader(recMessage, "33lrhkj7b47fao68fvg29102", p), p...))
	f.Add(recHeader(recRemoved, "33lrhkj7b47fao68fvg29102", nil))
	f.Add([]byte("jrec m 33lrhkj7b47fao68fvg29102 ffffffff 00000000\n"))
	f.Add(make([]byte, 60))
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			kind, id, payload, rest, err := parseRec(b)
			var dr *damagedRec
			if errors.As(err, &dr) {
				if len(rest) >= len(b) {
					t.Fatal("no progress past a damaged record")
				}
				b = rest
				continue
			}
			if err != nil {
				return
			}
			if kind != recMessage && kind != recRemoved && kind != recState || len(id) != 24 || len(rest) >= len(b) {
				t.Fatalf("accepted kind %q id %q", kind, id)
			}
			if !bytes.Equal(append(recHeader(kind, id, payload), payload...), b[:len(b)-len(rest)]) {
				t.Fatal("accepted record does not re-encode to itself")
			}
			b = rest
		}
	})
}

// FuzzParseState: whatever a state file holds, reading it never panics, and
// what it returns is the content of a record in it or the file itself.
func FuzzParseState(f *testing.F) {
	f.Add(encodeState([]byte(`{"rcpts":[]}`)))
	f.Add(append(encodeState([]byte(`{"a":1}`)), encodeState([]byte(`{"a":2}`))[:10]...))
	f.Add([]byte(`{"old":1}`))
	f.Add([]byte("state 00000010 00000000\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		data, err := parseState(b)
		if err != nil || data == nil {
			return
		}
		if !bytes.Equal(data, b) && !bytes.Contains(b, encodeState(data)) {
			t.Fatalf("returned %q, which no record in the file holds", data)
		}
	})
}

// TestSpillFailure: a message that outgrows memory but cannot get its file
// in tmp/ is refused at Commit, and nothing of it is spooled or journaled.
func TestSpillFailure(t *testing.T) {
	s, _ := testSpool(t)
	os.Remove(filepath.Join(s.dir, "tmp"))
	w, _ := s.Create(&Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}})
	w.Write(bytes.Repeat([]byte("a"), journalMax/2))
	if _, err := w.Write(bytes.Repeat([]byte("b"), journalMax)); err == nil {
		t.Fatal("Write succeeded without tmp/")
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit succeeded after a failed Write")
	}
	if envs, _ := s.Load(); len(envs) != 0 {
		t.Errorf("%d messages spooled", len(envs))
	}
	if segs := segmentNames(filepath.Join(s.dir, journalDir)); len(segs) != 0 {
		t.Errorf("journal written: %v", segs)
	}
}
