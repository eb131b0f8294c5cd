// Package spool keeps accepted messages on disk so that no crash loses them
// once the client has seen 250 (SPEC R15).
//
// Each message is one file, <queue id>.msg, holding a magic line, the
// envelope as one JSON line, the message, and a fixed-size trailer with the
// message's length and CRC-32C; the trailer lets Load tell a complete file
// from a truncated or damaged one, which it moves to corrupt/ instead of
// failing. Concurrent commits share their syncs: a message up to journalMax
// bytes is copied into an append-only journal whose fdatasync the commits
// under way at the same time share, and its file is written unsynced (see
// journal); a larger one is fdatasynced on its own and shares the directory
// fsync that makes its name durable (see group). Removals are tombstones in
// the journal.
//
// Why not keep the messages in the journal alone (a segment log): it would
// save creating a file per message, but needs an index, compaction of
// segments a long-deferred message pins for days, and a reader for "submitd
// queue" that parses files the server appends to. The journal keeps the
// files as they were and is deleted once they are durable.
//
// Per-recipient delivery state lives beside each message in <queue id>.state,
// an append-only file of records, each with its length and CRC-32C; the last
// intact record is the state. WriteState makes a record durable through the
// journal before it returns; WriteStateNoSync leaves that to the kernel, for
// changes whose loss in a power cut only makes a recipient be tried again
// sooner.
package spool

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"submitd/internal/ids"
)

const (
	magic      = "submitd-spool 1\n"
	msgExt     = ".msg"
	stateExt   = ".state"
	trailerLen = len("end ") + 16 + 1 + 8 + 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Envelope is what the SMTP session knew about a message when it accepted it.
type Envelope struct {
	// ID is the queue id, set by Create.
	ID string `json:"id"`
	// From is the envelope sender; "" is the null sender <>.
	From string `json:"from"`
	// To are the envelope recipients.
	To []string `json:"to"`
	// Account is the authenticated login that submitted the message.
	Account string `json:"account"`
	// SessionID is the SMTP session that accepted it (SPEC R12).
	SessionID string `json:"session_id"`
	// ClientIP is the submitting client's address.
	ClientIP string `json:"client_ip"`
	// Received is when the message was accepted.
	Received time.Time `json:"received"`
	// Kind is "" for submitted mail and "dsn" for a bounce the server made,
	// which must never itself cause a bounce (SPEC R18).
	Kind string `json:"kind,omitempty"`
	// DSN holds the delivery status notification parameters the client
	// gave (RFC 3461), nil when it gave none.
	DSN *DSN `json:"dsn,omitempty"`
	// RequireTLS: the client gave REQUIRETLS (RFC 8689 §4.1): the message
	// may go only over TLS validated by DANE or MTA-STS, to next hops
	// offering REQUIRETLS.
	RequireTLS bool `json:"require_tls,omitempty"`
	// TLSOptional: the message says "TLS-Required: No" (RFC 8689 §5) and
	// not REQUIRETLS: the recipient domains' TLS policies are not applied.
	TLSOptional bool `json:"tls_optional,omitempty"`
	// Size is the message length in bytes, filled by Load.
	Size int64 `json:"-"`
	// Content is the message itself when a commit held it in memory (small
	// messages), as OnCommit gets it, so that the first delivery attempt
	// need not read back what was just written; nil otherwise. It is never
	// stored.
	Content []byte `json:"-"`
	// offset is where the message starts in the file.
	offset int64
}

// DSN are the RFC 3461 parameters of one message.
type DSN struct {
	// Ret is "FULL" or "HDRS" (RET=, §4.3): how much of the message a
	// failure report returns; "" when not given.
	Ret string `json:"ret,omitempty"`
	// EnvID is the envelope identifier (ENVID=, §4.4), decoded from
	// xtext; "" when not given.
	EnvID string `json:"envid,omitempty"`
	// Rcpts are the parameters of each recipient that had any, by the
	// address as given in RCPT TO.
	Rcpts map[string]RcptDSN `json:"rcpts,omitempty"`
}

// RcptDSN are the RFC 3461 parameters of one recipient.
type RcptDSN struct {
	// Notify is NEVER alone, or any of SUCCESS, FAILURE and DELAY
	// (NOTIFY=, §4.1); empty when not given, which means FAILURE and
	// DELAY (§4.1).
	Notify []string `json:"notify,omitempty"`
	// ORcpt is the original recipient as "addr-type;address", decoded
	// from xtext (ORCPT=, §4.2); "" when not given.
	ORcpt string `json:"orcpt,omitempty"`
}

// Notifies reports whether the recipient asked for reports of kind
// ("SUCCESS", "FAILURE" or "DELAY"); without NOTIFY, failures and delays
// are reported (RFC 3461 §4.1).
func (d *DSN) Notifies(rcpt, kind string) bool {
	var n []string
	if d != nil {
		n = d.Rcpts[rcpt].Notify
	}
	if len(n) == 0 {
		return kind == "FAILURE" || kind == "DELAY"
	}
	for _, k := range n {
		if k == kind {
			return true
		}
	}
	return false
}

// EnvIDOrEmpty returns the ENVID, "" for none (d may be nil).
func (d *DSN) EnvIDOrEmpty() string {
	if d == nil {
		return ""
	}
	return d.EnvID
}

// ORcptOf returns the ORCPT of rcpt, "" for none (d may be nil).
func (d *DSN) ORcptOf(rcpt string) string {
	if d == nil {
		return ""
	}
	return d.Rcpts[rcpt].ORcpt
}

// Spool is a directory of messages.
type Spool struct {
	// OnCommit, when set, is called with the envelope of every message after
	// its Commit succeeded, so the queue learns of it at once. Set it before
	// the spool is shared.
	OnCommit func(*Envelope)

	// dir is the spool directory.
	dir string
	// log receives damage reports.
	log *slog.Logger
	// now is the clock that queue ids are made from.
	now func() time.Time
	// syncFile makes a file's content durable (fdatasync); tests replace it
	// to count syncs.
	syncFile func(*os.File) error
	// group shares directory fsyncs between concurrent callers.
	group *group
	// journal shares fdatasyncs of commits and removals.
	journal *journal
}

// newSpool returns the spool at dir with the real sync functions.
func newSpool(dir string, log *slog.Logger) *Spool {
	s := &Spool{dir: dir, log: log, now: time.Now, syncFile: fdatasync}
	s.group = newGroup(func() error { return syncDir(dir) })
	s.journal = newJournal(s)
	return s
}

// Open prepares the spool directory dir. Files an interrupted write left in
// tmp/ stay until the process that owns the spool calls ClearUnfinished,
// which it must do only once it holds the spool's lock: another server may
// still be writing there.
func Open(dir string, log *slog.Logger) (*Spool, error) {
	for _, d := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "corrupt"), filepath.Join(dir, journalDir)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	return newSpool(dir, log), nil
}

// ClearUnfinished removes what interrupted writes left in tmp/: their clients
// never saw 250, so nothing accepted is lost (SPEC R15). Then it replays the
// journal: messages whose commit returned but whose file a power cut lost
// are written again, and removals are made durable.
func (s *Spool) ClearUnfinished() {
	tmps, _ := filepath.Glob(filepath.Join(s.dir, "tmp", "*"))
	for _, t := range tmps {
		s.log.Info("spool: removing unfinished message", "file", t)
		os.Remove(t)
	}
	if err := s.replay(); err != nil {
		// The segments stay, so the next start tries again; the messages
		// whose files are intact load anyway.
		s.log.Error("spool: cannot replay the journal", "err", err)
	}
}

// Attach returns the spool at dir without Open's clean-up of tmp/, for tools
// (like "submitd queue") that run beside a server that may be writing there.
func Attach(dir string, log *slog.Logger) (*Spool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("spool: %s is not a directory", dir)
	}
	return newSpool(dir, log), nil
}

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.dir }

// Writer writes one message. Write the message, then Commit or Abort.
type Writer struct {
	// s is the spool written to.
	s *Spool
	// env is the message's envelope.
	env *Envelope
	// buf holds the file's bytes while they fit in journalMax; nothing is
	// on disk before Commit then.
	buf []byte
	// f is the file in tmp/ once the message outgrew buf; nil before.
	f *os.File
	// bw buffers writes to f.
	bw *bufio.Writer
	// off is where the message starts, after the magic and envelope lines,
	// in buf and in f alike.
	off int64
	// crc sums the message content for the trailer.
	crc hash.Hash32
	// n counts the message bytes written.
	n int64
	// err is the first write error; Commit fails with it.
	err error
	// done says Commit or Abort was called.
	done bool
}

// Create starts a new message for env, assigning env.ID.
func (s *Spool) Create(env *Envelope) (*Writer, error) {
	env.ID = ids.Queue(s.now())
	hdr, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("spool: encode envelope: %w", err)
	}
	w := &Writer{s: s, env: env, crc: crc32.New(castagnoli)}
	w.buf = make([]byte, 0, min(journalMax, len(magic)+len(hdr)+1+4096+trailerLen))
	w.buf = append(w.buf, magic...)
	w.buf = append(w.buf, hdr...)
	w.buf = append(w.buf, '\n')
	w.off = int64(len(w.buf))
	return w, nil
}

// Write appends message bytes.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.f == nil && len(w.buf)+len(p)+trailerLen > journalMax {
		// Too large for the journal: from here on it goes to a file,
		// opened for reading as well for Content.
		f, err := os.OpenFile(filepath.Join(w.s.dir, "tmp", w.env.ID), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
		if err != nil {
			w.err = fmt.Errorf("spool: %w", err)
			return 0, w.err
		}
		w.f, w.bw = f, bufio.NewWriterSize(f, 64<<10)
		w.bw.Write(w.buf)
		w.buf = nil
	}
	if w.f == nil {
		w.buf = append(w.buf, p...)
		w.crc.Write(p)
		w.n += int64(len(p))
		return len(p), nil
	}
	n, err := w.bw.Write(p)
	w.crc.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("spool: write %s: %w", w.env.ID, err)
	}
	return n, w.err
}

// Content returns a reader of the message bytes written so far, to be read
// before Commit or Abort (a content scan, SPEC R22): the writer's own copy,
// so that reading the message costs no second one. A message still in
// memory is read from there; a larger one from its file in tmp/, written
// out first. The reader is good until Commit or Abort: the file is then
// closed, and reads fail. An error is one writing the message, which
// Commit then fails with too.
func (w *Writer) Content() (*io.SectionReader, error) {
	switch {
	case w.done:
		return nil, errors.New("spool: message already finished")
	case w.err != nil:
		return nil, w.err
	case w.f == nil:
		return io.NewSectionReader(bytes.NewReader(w.buf[w.off:]), 0, w.n), nil
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("spool: write %s: %w", w.env.ID, err)
		return nil, w.err
	}
	return io.NewSectionReader(w.f, w.off, w.n), nil
}

// Commit makes the message durable and returns nil only once it is; only
// then may the client be told 250 (SPEC R15).
//
// A message whose file fits in journalMax bytes is appended to the journal,
// written to its final name unsynced, and made durable by the journal's next
// fdatasync, which the commits and removals under way at the same time
// share. A larger one is fdatasynced in tmp/, renamed into place and made
// durable by a directory fsync that concurrent callers share; it is renamed
// only once its content is durable, so that a crash never leaves a name
// pointing at content that is not.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("spool: message already finished")
	}
	w.done = true
	if w.f == nil {
		if w.err != nil {
			w.buf = nil
			return fmt.Errorf("spool: commit %s: %w", w.env.ID, w.err)
		}
		return w.commitSmall()
	}
	fail := func(err error) error {
		w.f.Close()
		os.Remove(w.f.Name())
		return fmt.Errorf("spool: commit %s: %w", w.env.ID, err)
	}
	if w.err != nil {
		return fail(w.err)
	}
	fmt.Fprintf(w.bw, "end %016x %08x\n", w.n, w.crc.Sum32())
	if err := w.bw.Flush(); err != nil {
		return fail(err)
	}
	if err := w.s.syncFile(w.f); err != nil {
		return fail(err)
	}
	if err := w.f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(w.f.Name(), filepath.Join(w.s.dir, w.env.ID+msgExt)); err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("spool: commit %s: %w", w.env.ID, err)
	}
	if err := w.s.group.wait(); err != nil {
		// The file is complete but its name may not be durable, so there is
		// no 250, and the client sends the message again: the file goes, or
		// it would be delivered after the next start as well.
		os.Remove(filepath.Join(w.s.dir, w.env.ID+msgExt))
		return fmt.Errorf("spool: commit %s: %w", w.env.ID, err)
	}
	w.committed()
	return nil
}

// commitSmall commits a message held in buf through the journal. The record
// goes first and the file after it, so that a crash while the file is being
// written leaves a record that replay restores the file from, not a
// truncated file to be taken for damage.
func (w *Writer) commitSmall() error {
	start := int(w.off)
	data := fmt.Appendf(w.buf, "end %016x %08x\n", w.n, w.crc.Sum32())
	w.buf = nil
	name := filepath.Join(w.s.dir, w.env.ID+msgExt)
	placed := false
	err := w.s.journal.commit(w.env.ID, data, func() error {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(name)
			return err
		}
		placed = true
		return nil
	})
	if err != nil && !placed {
		// The client is not told 250, so the record must not bring the
		// message back after a crash.
		w.s.journal.appendRec(recRemoved, w.env.ID, nil)
	}
	if err != nil {
		// A placed file is complete but may not be durable; it stays (a
		// later sync makes it so), without a promise of 250.
		return fmt.Errorf("spool: commit %s: %w", w.env.ID, err)
	}
	w.env.Content = data[start : start+int(w.n) : start+int(w.n)]
	w.committed()
	return nil
}

// committed tells the queue of a durable message.
func (w *Writer) committed() {
	w.env.Size = w.n
	if w.s.OnCommit != nil {
		w.s.OnCommit(w.env)
	}
}

// Abort discards the message.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.buf = nil
	if w.f != nil {
		w.f.Close()
		os.Remove(w.f.Name())
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Load reads every committed message's envelope, oldest first. A file that is
// truncated or damaged is moved to corrupt/ with a log line; it never stops
// the rest from loading.
func (s *Spool) Load() ([]*Envelope, error) {
	names, err := filepath.Glob(filepath.Join(s.dir, "*"+msgExt))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	sort.Strings(names)
	var out []*Envelope
	for _, name := range names {
		env, err := readEnvelope(name, true)
		if err != nil {
			s.quarantine(name, err)
			continue
		}
		out = append(out, env)
	}
	return out, nil
}

// List reads every committed message's envelope, oldest first, without
// checking content checksums and without moving anything: a file that cannot
// be read (for instance removed meanwhile) is skipped. It is for listing a
// spool that a running server owns.
func (s *Spool) List() ([]*Envelope, error) {
	names, err := filepath.Glob(filepath.Join(s.dir, "*"+msgExt))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	sort.Strings(names)
	out := make([]*Envelope, 0, len(names))
	for _, name := range names {
		env, err := readEnvelope(name, false)
		if err != nil {
			continue
		}
		out = append(out, env)
	}
	return out, nil
}

// quarantine moves a bad message file and its state to corrupt/.
func (s *Spool) quarantine(name string, why error) {
	base := filepath.Base(name)
	dst := filepath.Join(s.dir, "corrupt", base)
	s.log.Error("spool: damaged message moved aside", "file", name, "to", dst, "err", why)
	if err := os.Rename(name, dst); err != nil {
		s.log.Error("spool: cannot move damaged message", "file", name, "err", err)
	}
	st := strings.TrimSuffix(name, msgExt) + stateExt
	if _, err := os.Stat(st); err == nil {
		os.Rename(st, filepath.Join(s.dir, "corrupt", filepath.Base(st)))
	}
}

// readEnvelope parses a message file's envelope and, with verify, checks the
// trailer's length and CRC against the content.
func readEnvelope(name string, verify bool) (*Envelope, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return envelopeOf(f, verify)
}

// envelopeOf reads the envelope of the spool file f, checking its trailer
// and, with verify, its checksum.
func envelopeOf(f *os.File, verify bool) (*Envelope, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// The envelope line is read whole however long it is; the buffer only
	// needs to hold the usual one.
	br := bufio.NewReaderSize(f, 4<<10)
	env, off, err := parseHead(br)
	if err != nil {
		return nil, err
	}
	size := fi.Size() - off - int64(trailerLen)
	if size < 0 {
		return nil, errors.New("file is shorter than its header and trailer")
	}
	var tr [trailerLen]byte
	if _, err := f.ReadAt(tr[:], off+size); err != nil {
		return nil, fmt.Errorf("read trailer: %w", err)
	}
	var tsize int64
	var tcrc uint32
	if _, err := fmt.Sscanf(string(tr[:]), "end %016x %08x\n", &tsize, &tcrc); err != nil || tr[trailerLen-1] != '\n' {
		return nil, errors.New("trailer missing (truncated write)")
	}
	if tsize != size {
		return nil, fmt.Errorf("trailer says %d bytes, file holds %d", tsize, size)
	}
	if verify {
		h := crc32.New(castagnoli)
		if _, err := io.Copy(h, io.NewSectionReader(f, off, size)); err != nil {
			return nil, err
		}
		if h.Sum32() != tcrc {
			return nil, fmt.Errorf("checksum mismatch: trailer %08x, content %08x", tcrc, h.Sum32())
		}
	}
	env.Size = size
	env.offset = off
	return env, nil
}

// parseHead reads the magic line and envelope line, returning the envelope
// and the offset of the message.
func parseHead(br *bufio.Reader) (*Envelope, int64, error) {
	m, err := br.ReadString('\n')
	if err != nil || m != magic {
		return nil, 0, errors.New("not a spool file (bad magic line)")
	}
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, 0, errors.New("envelope line incomplete")
	}
	env := &Envelope{}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(env); err != nil {
		return nil, 0, fmt.Errorf("envelope: %w", err)
	}
	if !ids.IsQueue(env.ID) {
		return nil, 0, fmt.Errorf("envelope has a bad queue id %q", env.ID)
	}
	return env, int64(len(m) + len(line)), nil
}

// Message returns a reader over message id's content and its length.
func (s *Spool) Message(id string) (io.ReadCloser, int64, error) {
	if !ids.IsQueue(id) {
		return nil, 0, fmt.Errorf("spool: bad queue id %q", id)
	}
	// One open serves the envelope and the content.
	f, err := os.Open(filepath.Join(s.dir, id+msgExt))
	if err != nil {
		return nil, 0, fmt.Errorf("spool: message %s: %w", id, err)
	}
	env, err := envelopeOf(f, false)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("spool: message %s: %w", id, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, env.offset, env.Size), f}, env.Size, nil
}

// Envelope reads message id's envelope.
func (s *Spool) Envelope(id string) (*Envelope, error) {
	if !ids.IsQueue(id) {
		return nil, fmt.Errorf("spool: bad queue id %q", id)
	}
	env, err := readEnvelope(filepath.Join(s.dir, id+msgExt), false)
	if err != nil {
		return nil, fmt.Errorf("spool: message %s: %w", id, err)
	}
	return env, nil
}

// Remove deletes message id and its state, and returns once the removal is
// durable, so that a finished message does not come back after a crash to
// be delivered again: a tombstone in the journal records it, synced with the
// commits and removals under way at the same time.
func (s *Spool) Remove(id string) error {
	if !ids.IsQueue(id) {
		return fmt.Errorf("spool: bad queue id %q", id)
	}
	err := os.Remove(filepath.Join(s.dir, id+msgExt))
	os.Remove(filepath.Join(s.dir, id+stateExt))
	if err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if err := s.journal.removed(id); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	return nil
}

// WriteFileAtomic writes data to a temporary file beside name, fsyncs it,
// renames it over name and fsyncs the directory, so a reader sees either the
// old content or the new, never a mix, even after a crash.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}
