package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"submitd/internal/ids"
)

// Adopting another node's spool moves each message in three steps, so that
// a crash at any point neither loses it nor lets it be delivered twice:
//
//  1. Stage copies the message and its state into adopt/ of this spool,
//     where neither Load nor "submitd queue" looks, and makes the copies
//     durable.
//  2. The caller removes the message from the foreign spool, durably. That
//     removal is the point of no return: before it, the foreign copy is the
//     message and the staged one is thrown away by the next run; after it,
//     the staged copy is.
//  3. Promote moves the staged files into the spool, the state first, so
//     the message never appears without the record of the recipients
//     already delivered.
//
// Once a message is in the spool, the delivery queue may deliver and remove
// it at any time; no record of that outlives the removal. That is why the
// foreign copy must be gone before the message becomes visible: were it the
// other way round, a crash between the two and a second run would find the
// foreign copy but no local one, and deliver it again.
const adoptDir = "adopt"

// adoptSource names the file in adopt/ that holds the directory being
// adopted from, so that a second run after a crash knows whose staged
// messages it finds.
const adoptSource = "source"

// stagePath returns where message id's file with extension ext is staged.
func (s *Spool) stagePath(id, ext string) string {
	return filepath.Join(s.dir, adoptDir, id+ext)
}

// Stage copies message id of from, content checked against its trailer, and
// state, the data of one state record or nil for none, into adopt/, and
// returns once both copies are durable. A file staged before for id is
// replaced.
func (s *Spool) Stage(from *Spool, id string, state []byte) error {
	if !ids.IsQueue(id) {
		return fmt.Errorf("spool: bad queue id %q", id)
	}
	dir := filepath.Join(s.dir, adoptDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	src, err := os.Open(filepath.Join(from.dir, id+msgExt))
	if err != nil {
		return fmt.Errorf("spool: stage %s: %w", id, err)
	}
	defer src.Close()
	// The state goes first, and is removed when the message has none, so
	// that a staged message never has a state that is not its own.
	if state != nil {
		if err := s.stageFile(id+stateExt, func(w io.Writer) error {
			_, err := w.Write(encodeState(state))
			return err
		}); err != nil {
			return err
		}
	} else if err := os.Remove(s.stagePath(id, stateExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: stage %s: %w", id, err)
	}
	if err := s.stageFile(id+msgExt, func(w io.Writer) error {
		_, err := io.Copy(w, src)
		return err
	}); err != nil {
		return err
	}
	// The copy is checked as it is on disk, so that a read or write error
	// on either side cannot pass for a message.
	if _, err := readEnvelope(s.stagePath(id, msgExt), true); err != nil {
		s.Unstage(id)
		return fmt.Errorf("spool: stage %s: the copy does not check out: %w", id, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("spool: stage %s: %w", id, err)
	}
	return nil
}

// stageFile writes adopt/name through a temporary file that fill writes,
// fdatasynced before it is renamed into place.
func (s *Spool) stageFile(name string, fill func(io.Writer) error) error {
	dir := filepath.Join(s.dir, adoptDir)
	if err := placeSynced(dir, "."+name+".*", filepath.Join(dir, name), s.syncFile, fill); err != nil {
		return fmt.Errorf("spool: stage %s: %w", name, err)
	}
	return nil
}

// placeSynced writes a temporary file in tmpDir, named after pattern, with
// what fill writes, makes it durable with sync and renames it to name; the
// rename is not yet durable. On failure the temporary file goes.
func placeSynced(tmpDir, pattern, name string, sync func(*os.File) error, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(tmpDir, pattern)
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Chmod(0o640)
	}
	if err == nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Unstage removes what Stage left for id.
func (s *Spool) Unstage(id string) {
	os.Remove(s.stagePath(id, msgExt))
	os.Remove(s.stagePath(id, stateExt))
}

// Staged lists the ids of the messages staged in adopt/, in order, and the
// directory they are being adopted from ("" when none is recorded). A state
// staged without its message, which only a failed Stage leaves, is removed.
func (s *Spool) Staged() (staged []string, source string, err error) {
	dir := filepath.Join(s.dir, adoptDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("spool: %w", err)
	}
	msgs := map[string]bool{}
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), msgExt); ok && ids.IsQueue(id) {
			msgs[id] = true
		}
	}
	for _, e := range ents {
		name := e.Name()
		id, ok := strings.CutSuffix(name, stateExt)
		switch {
		case ok && ids.IsQueue(id) && !msgs[id], strings.HasPrefix(name, "."):
			// A leftover of an interrupted Stage.
			os.Remove(filepath.Join(dir, name))
		}
	}
	for id := range msgs {
		staged = append(staged, id)
	}
	sort.Strings(staged)
	b, err := os.ReadFile(filepath.Join(dir, adoptSource))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("spool: %w", err)
	}
	return staged, strings.TrimSpace(string(b)), nil
}

// SetAdoptSource records the directory the staged messages come from, or
// removes the record for "".
func (s *Spool) SetAdoptSource(dir string) error {
	name := filepath.Join(s.dir, adoptDir, adoptSource)
	if dir == "" {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o750); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := WriteFileAtomic(name, []byte(dir+"\n"), 0o640); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// Has reports whether message id is in the spool.
func (s *Spool) Has(id string) (bool, error) {
	_, err := os.Lstat(filepath.Join(s.dir, id+msgExt))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("spool: %w", err)
}

// Promote moves staged message id into the spool and returns its envelope
// once the move is durable. The state moves first, made durable by a
// directory fsync before the message's name appears, so that a crash never
// leaves the message in the spool without it. Promote may be called again
// for a message whose earlier Promote a crash interrupted.
func (s *Spool) Promote(id string) (*Envelope, error) {
	if !ids.IsQueue(id) {
		return nil, fmt.Errorf("spool: bad queue id %q", id)
	}
	env, err := readEnvelope(s.stagePath(id, msgExt), false)
	if err != nil {
		return nil, fmt.Errorf("spool: promote %s: %w", id, err)
	}
	err = os.Rename(s.stagePath(id, stateExt), filepath.Join(s.dir, id+stateExt))
	if errors.Is(err, fs.ErrNotExist) {
		// No state staged (every recipient pending), or it moved before a
		// crash interrupted an earlier Promote.
		err = nil
	}
	if err == nil {
		err = s.group.wait()
	}
	if err == nil {
		err = os.Rename(s.stagePath(id, msgExt), filepath.Join(s.dir, id+msgExt))
	}
	if err == nil {
		err = s.group.wait()
	}
	if err != nil {
		return nil, fmt.Errorf("spool: promote %s: %w", id, err)
	}
	return env, nil
}
