package spool

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"submitd/internal/ids"
)

// A state file is a sequence of records, each
//
//	"state " <length, 8 hex digits> " " <CRC-32C, 8 hex digits> "\n" <data> "\n"
//
// appended in one write. The last intact record is the state. Appending
// instead of replacing the file needs no new file, no rename and no directory
// fsync per write; the length and CRC let a reader tell a record that a crash
// cut short, or that a power cut left as zeros or stale blocks, from a whole
// one, and fall back to the record before it. "submitd queue" reads state
// files while the server appends to them and is protected the same way.
const (
	stateMagic  = "state "
	magicLen    = len(stateMagic)
	stateHdrLen = magicLen + 8 + 1 + 8 + 1
	// maxStateFile is the size past which the next write replaces the file
	// with its one newest record, so a message retried for days does not
	// grow its state file without bound; four records' worth at least, for
	// messages with many recipients.
	maxStateFile = 64 << 10
)

// errNoState is returned by parseState when the data has no intact record.
var errNoState = errors.New("no intact state record")

// encodeState frames data as one record.
func encodeState(data []byte) []byte {
	rec := make([]byte, 0, stateHdrLen+len(data)+1)
	rec = fmt.Appendf(rec, "%s%08x %08x\n", stateMagic, len(data), crc32.Checksum(data, castagnoli))
	rec = append(rec, data...)
	return append(rec, '\n')
}

// parseState returns the data of the last intact record in b, nil when b
// holds none and is empty, zeros, or one record cut short. Where a record is
// cut short, garbled or fails its CRC (a power cut tore it, and records may
// have been appended after it since), the scan resumes at the next header
// that checks out. A file with no intact record that is not merely cut short
// is an error. A file written by versions that replaced it whole holds bare
// JSON, returned as it is.
func parseState(b []byte) ([]byte, error) {
	if len(b) > 0 && b[0] == '{' {
		return b, nil
	}
	all := b
	var last []byte
	found := false
	for len(b) > 0 {
		data, n, ok := stateRecord(b)
		if ok {
			last, found = data, true
			b = b[n:]
			continue
		}
		i := bytes.Index(b[1:], []byte(stateMagic))
		if i < 0 {
			break
		}
		b = b[1+i:]
	}
	if !found && !allZero(all) && !bytes.HasPrefix(all, []byte(stateMagic)) &&
		!bytes.HasPrefix([]byte(stateMagic), all) {
		return nil, errNoState
	}
	return last, nil
}

// stateRecord checks the record at the start of b and returns its data and
// length.
func stateRecord(b []byte) (data []byte, n int, ok bool) {
	if len(b) < stateHdrLen || !bytes.HasPrefix(b, []byte(stateMagic)) || b[magicLen+8] != ' ' || b[stateHdrLen-1] != '\n' {
		return nil, 0, false
	}
	size, ok1 := hex8(string(b[magicLen : magicLen+8]))
	sum, ok2 := hex8(string(b[magicLen+9 : stateHdrLen-1]))
	if !ok1 || !ok2 || int64(len(b)-stateHdrLen) < int64(size)+1 {
		return nil, 0, false
	}
	data = b[stateHdrLen : stateHdrLen+int(size)]
	if b[stateHdrLen+int(size)] != '\n' || crc32.Checksum(data, castagnoli) != sum {
		return nil, 0, false
	}
	return data, stateHdrLen + int(size) + 1, true
}

// WriteState records data as message id's state and returns once it is
// durable: the record is appended to the state file unsynced and copied to
// the journal, whose fdatasync it shares with the commits, removals and
// state writes under way at the same time. Use it for changes whose loss
// would make a recipient get the message twice or its sender a second
// report.
func (s *Spool) WriteState(id string, data []byte) error {
	return s.writeState(id, data, true)
}

// WriteStateNoSync records data as message id's state without waiting for
// the disk. A crash of the process loses nothing (the kernel has the
// write); a power cut may lose it, and then the previous record is the
// state. Use it only for changes whose loss causes nothing worse than an
// earlier retry, such as a temporary failure and its next retry time.
func (s *Spool) WriteStateNoSync(id string, data []byte) error {
	return s.writeState(id, data, false)
}

func (s *Spool) writeState(id string, data []byte, durable bool) error {
	if !ids.IsQueue(id) {
		return fmt.Errorf("spool: bad queue id %q", id)
	}
	name := filepath.Join(s.dir, id+stateExt)
	rec := encodeState(data)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("spool: state of %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() > 0 && (fi.Size()+int64(len(rec)) > max(maxStateFile, 4*int64(len(rec))) || oldState(name)) {
		// Past its bound, or a whole-file state from before records, to
		// which a record cannot be appended.
		f.Close()
		err = s.replaceState(id, name, rec)
		if err == nil && durable {
			// The replacement is durable, but a replay must not take an
			// older record in the journal for newer than it.
			if err = s.journal.state(id, data); err != nil {
				err = fmt.Errorf("spool: state of %s: %w", id, err)
			}
		}
		return err
	}
	if err == nil {
		_, err = f.Write(rec)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && durable {
		// The file goes first: once the journal record exists, the segment
		// may be reclaimed, and that syncs the file as it then is.
		err = s.journal.state(id, data)
	}
	if err != nil {
		return fmt.Errorf("spool: state of %s: %w", id, err)
	}
	return nil
}

// oldState reports whether the state file name holds bare JSON, as versions
// before records wrote it.
func oldState(name string) bool {
	f, err := os.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	var c [1]byte
	_, err = f.ReadAt(c[:], 0)
	return err == nil && c[0] == '{'
}

// restoreState appends data to message id's state file unless the file has
// that record already (later records, written unsynced, may follow it).
func (s *Spool) restoreState(id string, data []byte) error {
	name := filepath.Join(s.dir, id+stateExt)
	rec := encodeState(data)
	b, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if bytes.Contains(b, rec) {
		return nil
	}
	s.log.Warn("spool: state restored from the journal", "queue_id", id)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(rec)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// replaceState replaces a state file grown past maxStateFile by one holding
// only rec, durably whatever the caller asked: a replacement that a power
// cut left empty would lose every record, not just the newest.
func (s *Spool) replaceState(id, name string, rec []byte) error {
	err := placeSynced(filepath.Join(s.dir, "tmp"), id+stateExt+".*", name, s.syncFile, func(w io.Writer) error {
		_, err := w.Write(rec)
		return err
	})
	if err != nil {
		return fmt.Errorf("spool: state of %s: %w", id, err)
	}
	if err := s.group.wait(); err != nil {
		return fmt.Errorf("spool: state of %s: %w", id, err)
	}
	return nil
}

// ReadState returns message id's state, or nil if it has none yet. A state
// file with no intact record (damaged, or cut short by a power cut before
// its first record was durable) is an error; the caller then starts over
// with every recipient pending, which may deliver twice but loses nothing.
func (s *Spool) ReadState(id string) ([]byte, error) {
	if !ids.IsQueue(id) {
		return nil, fmt.Errorf("spool: bad queue id %q", id)
	}
	f, err := os.Open(filepath.Join(s.dir, id+stateExt))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	data, err := parseState(b)
	if err != nil {
		return nil, fmt.Errorf("spool: state of %s: %w", id, err)
	}
	return data, nil
}
