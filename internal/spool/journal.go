package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"submitd/internal/ids"
)

// The journal makes messages durable with one fdatasync for many commits.
//
// A commit of a message up to journalMax bytes appends the whole message file
// (the very bytes of <id>.msg) as one record to the current segment,
// journal/<sequence>.log, writes the file at its final name without syncing
// it, and waits for an fdatasync of the segment that the commits under way
// at the same time share (see group). A removal appends a tombstone record and
// waits the same way. Each record carries its length and CRC-32C, so that a
// record a crash cut short or a power cut left as zeros is never taken for a
// whole one.
//
// A segment that has grown past segmentMax is sealed and a new one started.
// A sealed segment is reclaimed, oldest first, once the message files it
// stands for are durable on their own: those still in the spool (delivery
// removes most messages before their segment fills) are fdatasynced, the
// spool directory is fsynced, and the segment is deleted. Oldest first,
// because a tombstone in a later segment is what keeps a message recorded in
// an earlier one from coming back.
//
// At start the owner of the spool replays what segments are left: a message
// whose file is missing or damaged is written again from its record, a
// tombstoned one is removed, and the segments are deleted once everything is
// durable. Readers ("submitd queue") never read the journal: the message
// files are in place before any commit returns.
const (
	journalDir = "journal"
	segmentExt = ".log"
	// segmentMax is the size past which a segment is sealed.
	segmentMax = 4 << 20
	// journalMax is the largest message file that goes through the journal,
	// and so what a session holds in memory while it receives DATA (as much
	// as its write buffer held before). A larger one is written to tmp/
	// once, fdatasynced on its own and renamed with a shared directory
	// fsync: at that size the write costs more than the sync, and writing
	// it twice would cost bandwidth.
	journalMax = 64 << 10
	// recHdrLen is the length of a record header:
	// "jrec " kind " " id " " length " " crc "\n".
	recHdrLen = len("jrec ") + 1 + 1 + ids.QueueLen + 1 + 8 + 1 + 8 + 1
)

// Record kinds.
const (
	// recMessage holds a whole message file.
	recMessage = 'm'
	// recRemoved says the message was removed.
	recRemoved = 'd'
	// recState holds a state record's data that WriteState made durable.
	recState = 's'
)

// segment is one journal file this process appends to or has sealed.
type segment struct {
	// seq orders segments; it is the file name.
	seq uint64
	// f is the open file.
	f *os.File
	// size is how many bytes of f are whole records.
	size int64
	// ids are the messages recorded in it.
	ids []string
	// states are the messages whose state it records.
	states []string
	// inflight counts commits that appended a record but have not yet
	// renamed their file into place; the segment must not be reclaimed
	// before they have.
	inflight int
}

// journal is the spool's group-commit log.
type journal struct {
	// s is the spool.
	s *Spool
	// dir is the journal directory.
	dir string
	// group shares fdatasyncs of the current segment.
	group *group
	// segmentMax is the size past which a segment is sealed; tests lower it.
	segmentMax int64

	// syncMu keeps a segment from being closed while it is being synced.
	syncMu sync.Mutex

	mu sync.Mutex
	// cur is the segment appended to; nil until the first record.
	cur *segment
	// sealed are the full segments not yet reclaimed, oldest first.
	sealed []*segment
	// reclaiming says a reclaim runs.
	reclaiming bool
}

func newJournal(s *Spool) *journal {
	j := &journal{s: s, dir: filepath.Join(s.dir, journalDir), segmentMax: segmentMax}
	j.group = newGroup(j.sync)
	return j
}

// recHeader formats a record header.
func recHeader(kind byte, id string, payload []byte) []byte {
	return fmt.Appendf(nil, "jrec %c %s %08x %08x\n", kind, id, len(payload), crc32.Checksum(payload, castagnoli))
}

// appendRec appends one record and returns its segment. For a message
// record the caller must call finished(seg) once its file is in place.
func (j *journal) appendRec(kind byte, id string, payload []byte) (*segment, error) {
	rec := append(recHeader(kind, id, payload), payload...)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cur != nil && j.cur.size > 0 && j.cur.size+int64(len(rec)) > j.segmentMax {
		j.rotateLocked()
	}
	if j.cur == nil {
		seg, err := j.openSegment()
		if err != nil {
			return nil, err
		}
		j.cur = seg
	}
	seg := j.cur
	if _, err := seg.f.Write(rec); err != nil {
		// A partial record would end the replay of everything after it:
		// cut it off, or if that fails too, leave the segment.
		if terr := seg.f.Truncate(seg.size); terr != nil {
			j.rotateLocked()
		}
		return nil, fmt.Errorf("journal: %w", err)
	}
	seg.size += int64(len(rec))
	switch kind {
	case recMessage:
		seg.ids = append(seg.ids, id)
		seg.inflight++
	case recState:
		seg.states = append(seg.states, id)
	}
	return seg, nil
}

// finished notes that a message recorded in seg has its file in place.
func (j *journal) finished(seg *segment) {
	j.mu.Lock()
	seg.inflight--
	j.mu.Unlock()
}

// rotateLocked seals the current segment and starts a reclaim. The sealed
// segment is synced first, as the commits waiting for the group's next sync
// of the new segment rely on; if that fails the segment stays current, so
// that the group's sync reports the failure to them.
func (j *journal) rotateLocked() {
	seg := j.cur
	if err := j.s.syncFile(seg.f); err != nil {
		return
	}
	j.sealed = append(j.sealed, seg)
	j.cur = nil
	if !j.reclaiming {
		j.reclaiming = true
		go j.reclaim()
	}
}

// openSegment creates the next segment file and makes its name durable, so
// that records synced in it are found after a power cut.
func (j *journal) openSegment() (*segment, error) {
	if err := os.MkdirAll(j.dir, 0o750); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	seq := uint64(1)
	for _, n := range segmentNames(j.dir) {
		if q, _ := strconv.ParseUint(strings.TrimSuffix(n, segmentExt), 16, 64); q >= seq {
			seq = q + 1
		}
	}
	for _, s := range j.sealed {
		seq = max(seq, s.seq+1)
	}
	for {
		f, err := os.OpenFile(filepath.Join(j.dir, fmt.Sprintf("%016x%s", seq, segmentExt)), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
		if errors.Is(err, os.ErrExist) {
			seq++
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		// The spool directory too, once per segment, in case journal/ itself
		// is new.
		err = syncDir(j.dir)
		if err == nil {
			err = syncDir(j.s.dir)
		}
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("journal: %w", err)
		}
		return &segment{seq: seq, f: f}, nil
	}
}

// segmentNames lists the segment files in dir, oldest first.
func segmentNames(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, segmentExt) && len(n) == 16+len(segmentExt) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// sync makes the current segment durable; it is the group's sync.
func (j *journal) sync() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	seg := j.cur
	j.mu.Unlock()
	if seg == nil {
		// Everything appended was in a segment that rotation synced.
		return nil
	}
	return j.s.syncFile(seg.f)
}

// commit records a message file's bytes and returns once the record is
// durable. place must put the file at its final name; it runs before the
// wait, so that the segment is never reclaimed before the file exists.
func (j *journal) commit(id string, file []byte, place func() error) error {
	seg, err := j.appendRec(recMessage, id, file)
	if err != nil {
		return err
	}
	err = place()
	j.finished(seg)
	if err != nil {
		return err
	}
	return j.group.wait()
}

// removed records that message id was removed and returns once that is
// durable.
func (j *journal) removed(id string) error {
	if _, err := j.appendRec(recRemoved, id, nil); err != nil {
		return err
	}
	return j.group.wait()
}

// state records data as message id's state, already appended to its state
// file, and returns once the record is durable.
func (j *journal) state(id string, data []byte) error {
	if _, err := j.appendRec(recState, id, data); err != nil {
		return err
	}
	return j.group.wait()
}

// reclaim deletes sealed segments, oldest first, whose messages are durable
// on their own, and stops at the first one with a commit still under way.
func (j *journal) reclaim() {
	for {
		j.mu.Lock()
		if len(j.sealed) == 0 || j.sealed[0].inflight > 0 {
			j.reclaiming = false
			j.mu.Unlock()
			return
		}
		seg := j.sealed[0]
		j.mu.Unlock()
		if err := j.retire(seg); err != nil {
			// The next rotation tries again; the segment costs only space.
			j.s.log.Error("spool: cannot reclaim journal segment; it is kept", "segment", seg.f.Name(), "err", err)
			j.mu.Lock()
			j.reclaiming = false
			j.mu.Unlock()
			return
		}
		j.mu.Lock()
		j.sealed = j.sealed[1:]
		j.mu.Unlock()
	}
}

// retire makes seg's messages and states durable without it and deletes it.
func (j *journal) retire(seg *segment) error {
	if err := j.s.syncFiles(seg.states, stateExt); err != nil {
		return err
	}
	if err := j.s.syncMessages(seg.ids); err != nil {
		return err
	}
	j.syncMu.Lock()
	seg.f.Close()
	j.syncMu.Unlock()
	return os.Remove(seg.f.Name())
}

// syncMessages fdatasyncs the message files of ids still in the spool, then
// the spool directory, so that their names (and the removal of the others,
// and the names of state files) are durable too.
func (s *Spool) syncMessages(list []string) error {
	if err := s.syncFiles(list, msgExt); err != nil {
		return err
	}
	return s.group.wait()
}

// syncFiles fdatasyncs the files <id><ext> of the ids in list that exist.
func (s *Spool) syncFiles(list []string, ext string) error {
	for _, id := range list {
		f, err := os.Open(filepath.Join(s.dir, id+ext))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = s.syncFile(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// replay recovers what the segments left in the journal record, for the
// owner of the spool at start: a tombstoned message is removed, a message
// whose file is missing or damaged is written again from its record. Once
// every recorded message is durable on its own, the segments are deleted; a
// segment with a damaged record is moved to corrupt/ instead, for the
// operator, after whatever could be read from it was recovered.
func (s *Spool) replay() error {
	dir := filepath.Join(s.dir, journalDir)
	names := segmentNames(dir)
	if len(names) == 0 {
		return nil
	}
	msgs := map[string][]byte{}
	removed := map[string]bool{}
	states := map[string][]byte{}
	var order []string
	damaged := map[string]bool{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		total := len(b)
		for len(b) > 0 {
			kind, id, payload, rest, err := parseRec(b)
			if err == errTorn || (err != nil && allZero(b)) {
				// The tail a crash cut short, or zeros a power cut left
				// past the last synced record: its commit never returned.
				break
			}
			var dr *damagedRec
			if errors.As(err, &dr) {
				s.log.Error("spool: damaged journal record skipped", "segment", n, "offset", total-len(b), "err", err)
				damaged[n] = true
				b = rest
				continue
			}
			if err != nil {
				s.log.Error("spool: damaged journal record; the rest of the segment is skipped", "segment", n, "offset", total-len(b), "err", err)
				damaged[n] = true
				break
			}
			switch kind {
			case recMessage:
				if _, dup := msgs[id]; !dup {
					order = append(order, id)
				}
				msgs[id] = payload
			case recRemoved:
				removed[id] = true
			case recState:
				states[id] = payload
			}
			b = rest
		}
	}
	for id := range removed {
		os.Remove(filepath.Join(s.dir, id+msgExt))
		os.Remove(filepath.Join(s.dir, id+stateExt))
	}
	var live []string
	for _, id := range order {
		if removed[id] {
			continue
		}
		live = append(live, id)
		name := filepath.Join(s.dir, id+msgExt)
		if _, err := readEnvelope(name, true); err == nil {
			continue
		}
		s.log.Warn("spool: message restored from the journal", "queue_id", id)
		if err := writeFileVia(filepath.Join(s.dir, "tmp"), name, msgs[id]); err != nil {
			return fmt.Errorf("journal: restore %s: %w", id, err)
		}
	}
	var withState []string
	for id, data := range states {
		if removed[id] {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.dir, id+msgExt)); err != nil {
			continue
		}
		withState = append(withState, id)
		if err := s.restoreState(id, data); err != nil {
			return fmt.Errorf("journal: restore state of %s: %w", id, err)
		}
	}
	if err := s.syncFiles(withState, stateExt); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := s.syncMessages(live); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if damaged[n] {
			dst := filepath.Join(s.dir, "corrupt", "journal-"+n)
			s.log.Error("spool: damaged journal segment moved aside", "segment", p, "to", dst)
			os.Rename(p, dst)
			continue
		}
		os.Remove(p)
	}
	return nil
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// errTorn is parseRec's error for a record that runs past the end of the
// data: the tail of a segment a crash cut short.
var errTorn = errors.New("journal record cut short")

// damagedRec is parseRec's error for a whole record whose content fails its
// checksum; the records after it can still be read.
type damagedRec struct{ id string }

func (d *damagedRec) Error() string { return "record of " + d.id + " fails its checksum" }

// parseRec reads one record from b. With a *damagedRec error, rest is where
// the next record starts.
func parseRec(b []byte) (kind byte, id string, payload, rest []byte, err error) {
	if len(b) < recHdrLen {
		if strings.HasPrefix("jrec ", string(b[:min(len(b), 5)])) {
			return 0, "", nil, nil, errTorn
		}
		return 0, "", nil, nil, errors.New("bad record header")
	}
	h := string(b[:recHdrLen])
	kind = h[5]
	id = h[7 : 7+ids.QueueLen]
	at := 7 + ids.QueueLen // the space before the length
	if !strings.HasPrefix(h, "jrec ") || h[6] != ' ' || h[at] != ' ' || h[at+9] != ' ' || h[recHdrLen-1] != '\n' ||
		(kind != recMessage && kind != recRemoved && kind != recState) || !ids.IsQueue(id) {
		return 0, "", nil, nil, errors.New("bad record header")
	}
	n, ok1 := hex8(h[at+1 : at+9])
	sum, ok2 := hex8(h[at+10 : at+18])
	if !ok1 || !ok2 {
		return 0, "", nil, nil, errors.New("bad record header")
	}
	if int64(len(b)-recHdrLen) < int64(n) {
		return 0, "", nil, nil, errTorn
	}
	payload, rest = b[recHdrLen:recHdrLen+int(n)], b[recHdrLen+int(n):]
	if crc32.Checksum(payload, castagnoli) != sum {
		// Stale blocks a power cut left past the last synced record look
		// like this too; only a record followed by more is damage, and
		// its length still frames the records after it.
		if len(rest) == 0 {
			return 0, "", nil, nil, errTorn
		}
		return 0, id, nil, rest, &damagedRec{id: id}
	}
	return kind, id, payload, rest, nil
}

// writeFileVia writes data to a new file in tmpDir, fdatasyncs it and
// renames it to name.
func writeFileVia(tmpDir, name string, data []byte) error {
	return placeSynced(tmpDir, filepath.Base(name)+".*", name, fdatasync, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// idle reports whether no reclaim runs and no sealed segment waits; tests
// use it.
func (j *journal) idle() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return !j.reclaiming && len(j.sealed) == 0
}

// hex8 parses exactly eight lowercase hex digits, the form the writers use.
func hex8(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	var v uint32
	for i := 0; i < 8; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint32(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint32(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}
