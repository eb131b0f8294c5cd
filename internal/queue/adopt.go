package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"submitd/internal/spool"
)

// AdoptResult says what adopting a foreign spool did.
type AdoptResult struct {
	// Dir is the foreign spool directory.
	Dir string `json:"dir"`
	// Adopted are the queue ids moved into this node's queue.
	Adopted []string `json:"adopted"`
	// Left are the queue ids left in the foreign spool because a message
	// with the same id is in this node's already, or because reading them
	// failed for a reason that may pass; a second run tries them again.
	Left []string `json:"left"`
	// Unfinished counts writes that were under way when the foreign node
	// stopped; their clients never saw 250 (SPEC R15), so they are removed,
	// as the node's own restart would.
	Unfinished int `json:"unfinished"`
	// Damaged counts message files that do not check out, moved to the
	// foreign spool's corrupt/ directory.
	Damaged int `json:"damaged"`
}

// String is the one-line answer of "submitd queue adopt".
func (r *AdoptResult) String() string {
	s := fmt.Sprintf("adopted %d message(s) from %s", len(r.Adopted), r.Dir)
	var notes []string
	if r.Unfinished > 0 {
		notes = append(notes, fmt.Sprintf("%d unfinished write(s) discarded, never acknowledged", r.Unfinished))
	}
	if r.Damaged > 0 {
		notes = append(notes, fmt.Sprintf("%d damaged file(s) moved to %s", r.Damaged, filepath.Join(r.Dir, "corrupt")))
	}
	if len(r.Left) > 0 {
		notes = append(notes, fmt.Sprintf("%d left in place (see the log): %s", len(r.Left), strings.Join(r.Left, ", ")))
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, "; ") + ")"
	}
	return s
}

// ErrNotSpool means the directory given to adopt is no submitd spool.
var ErrNotSpool = errors.New("not a submitd spool")

// adopt moves every message of the foreign spool in dir into ours, keeping
// each recipient's delivery state: delivered recipients are not sent again,
// reported failures not reported again, and deferred recipients keep their
// attempt count and next retry time (one already past is due at once). It
// calls schedule with each message once it is in ours. The caller holds
// whatever keeps ours from changing under it (the running queue, or the
// lock of a stopped node's spool).
//
// The foreign spool's lock is taken first, so that its node, were it still
// running or started again meanwhile, never delivers a message this node
// delivers too. See spool.Stage for the steps that make a crash half-way
// lose and duplicate nothing; a second run with the same dir finishes what
// the first began.
func adopt(ours *spool.Spool, dir string, schedule func(*spool.Envelope), log *slog.Logger) (*AdoptResult, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("queue: adopt %q: the directory must be an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	res := &AdoptResult{Dir: dir, Adopted: []string{}, Left: []string{}}
	if err := checkForeign(ours, dir); err != nil {
		return nil, err
	}
	lock, err := lockSpool(dir)
	if errors.Is(err, ErrLocked) {
		return nil, fmt.Errorf("queue: %s is locked by a running submitd (its own node, or an adoption under way): stop it first (%w)", dir, ErrLocked)
	}
	if err != nil {
		return nil, err
	}
	defer lock.Close()

	staged, source, err := ours.Staged()
	if err != nil {
		return nil, err
	}
	if len(staged) > 0 && source != "" && source != dir {
		return nil, fmt.Errorf("queue: an interrupted adoption of %s has %d message(s) staged; run \"submitd queue adopt %s\" again first", source, len(staged), source)
	}

	tmps, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	res.Unfinished = len(tmps)
	damaged := countDir(filepath.Join(dir, "corrupt"))
	foreign, err := spool.Open(dir, log)
	if err != nil {
		return nil, err
	}
	// What the foreign node's own restart would do: drop writes never
	// acknowledged, and replay its journal, which restores the messages
	// whose files a power cut lost and removes those it had finished.
	foreign.ClearUnfinished()

	// Messages staged by a run a crash interrupted: where the foreign copy
	// is gone, the staged one is the message; where it is still there, the
	// staged one is dropped and the message staged again below.
	for _, id := range staged {
		there, err := foreign.Has(id)
		if err != nil {
			return nil, err
		}
		if there {
			ours.Unstage(id)
			continue
		}
		if err := (&adoption{ours: ours, schedule: schedule, res: res, log: log}).promote(id); err != nil {
			return nil, err
		}
	}

	envs, err := foreign.Load()
	if err != nil {
		return nil, err
	}
	res.Damaged = max(countDir(filepath.Join(dir, "corrupt"))-damaged, 0)
	if len(envs) > 0 {
		if err := ours.SetAdoptSource(dir); err != nil {
			return nil, err
		}
	}
	a := &adoption{ours: ours, foreign: foreign, schedule: schedule, res: res, log: log}
	for len(envs) > 0 {
		n := min(len(envs), adoptBatch)
		if err := a.batch(envs[:n]); err != nil {
			return res, err
		}
		envs = envs[n:]
	}
	if err := ours.SetAdoptSource(""); err != nil {
		return res, err
	}
	slices.Sort(res.Adopted)
	slices.Sort(res.Left)
	log.Info("spool adopted", "dir", dir, "adopted", len(res.Adopted), "left", len(res.Left),
		"unfinished", res.Unfinished, "damaged", res.Damaged)
	return res, nil
}

// adoptBatch is how many messages are adopted together, and
// adoptWorkers how many of them at once: each step of a message waits for
// the disk, and messages moved at the same time share the spools' syncs.
const (
	adoptBatch   = 256
	adoptWorkers = 16
)

// adoption is one run of adopt.
type adoption struct {
	// ours and foreign are the spools moved to and from.
	ours, foreign *spool.Spool
	// schedule hands each adopted message to the queue; nil: nobody.
	schedule func(*spool.Envelope)
	// log receives a line per message.
	log *slog.Logger

	// mu guards res.
	mu sync.Mutex
	// res is what the run did so far.
	res *AdoptResult
}

// batch adopts envs: all are staged, then removed from the foreign spool,
// then promoted, each step for many messages at once.
func (a *adoption) batch(envs []*spool.Envelope) error {
	staged := make([]bool, len(envs))
	each(len(envs), func(i int) { staged[i] = a.stage(envs[i]) })
	// The point of no return (see spool.Stage): once the foreign copy is
	// durably gone, the staged one is the message.
	var errs []error
	var mu sync.Mutex
	each(len(envs), func(i int) {
		if !staged[i] {
			return
		}
		if err := a.foreign.Remove(envs[i].ID); err != nil {
			a.ours.Unstage(envs[i].ID)
			staged[i] = false
			mu.Lock()
			errs = append(errs, fmt.Errorf("queue: adopt %s: %w", envs[i].ID, err))
			mu.Unlock()
		}
	})
	each(len(envs), func(i int) {
		if !staged[i] {
			return
		}
		if err := a.promote(envs[i].ID); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})
	return errors.Join(errs...)
}

// stage copies env's message and state into ours, reporting false when it
// stays in the foreign spool.
func (a *adoption) stage(env *spool.Envelope) bool {
	id := env.ID
	if dup, err := a.ours.Has(id); err != nil || dup {
		a.log.Error("queue: adopt: a message with this id is in this node's spool already; left in the foreign spool",
			"queue_id", id, "dir", a.res.Dir, "err", err)
		a.left(id)
		return false
	}
	data, err := a.foreign.ReadState(id)
	var pe *fs.PathError
	switch {
	case errors.As(err, &pe):
		// Reading failed, which says nothing of the state; adopting it
		// without would deliver again to recipients already done.
		a.log.Error("queue: adopt: cannot read the delivery state; left in the foreign spool", "queue_id", id, "err", err)
		a.left(id)
		return false
	case err == nil && data != nil:
		if _, derr := decodeState(env, data); derr != nil {
			err = derr
		}
	}
	if err != nil {
		// As at a node's start (Load): losing track of which recipients
		// got it may deliver twice to some; dropping it would lose it for
		// all.
		a.log.Error("queue: adopt: damaged delivery state; every recipient will be tried", "queue_id", id, "err", err)
		data = nil
	}
	if err := a.ours.Stage(a.foreign, id, data); err != nil {
		a.log.Error("queue: adopt: cannot copy the message; left in the foreign spool", "queue_id", id, "err", err)
		a.left(id)
		return false
	}
	return true
}

// left notes a message left in the foreign spool.
func (a *adoption) left(id string) {
	a.mu.Lock()
	a.res.Left = append(a.res.Left, id)
	a.mu.Unlock()
}

// promote moves staged message id into ours and schedules it.
func (a *adoption) promote(id string) error {
	env, err := a.ours.Promote(id)
	if err != nil {
		// The staged copy is now the only one and stays staged; the next
		// run promotes it.
		return fmt.Errorf("queue: adopt %s: %w", id, err)
	}
	a.log.Info("message adopted", "queue_id", id, "session", env.SessionID, "dir", a.res.Dir)
	a.mu.Lock()
	a.res.Adopted = append(a.res.Adopted, id)
	a.mu.Unlock()
	if a.schedule != nil {
		a.schedule(env)
	}
	return nil
}

// each runs f(0) … f(n-1), adoptWorkers at a time, and waits for them.
func each(n int, f func(int)) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(n, adoptWorkers) {
		wg.Go(func() {
			for i := range work {
				f(i)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// checkForeign refuses a dir that is not a spool, or is ours.
func checkForeign(ours *spool.Spool, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("queue: adopt: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("queue: adopt: %s is not a directory", dir)
	}
	if own, err := os.Stat(ours.Dir()); err == nil && os.SameFile(fi, own) {
		return fmt.Errorf("queue: adopt: %s is this node's own spool", dir)
	}
	// A spool has its lock file from the first start of its node; a
	// data_dir holds the spool one level down.
	if _, err := os.Lstat(filepath.Join(dir, "lock")); err != nil {
		if _, serr := os.Lstat(filepath.Join(dir, "spool", "lock")); serr == nil {
			return fmt.Errorf("queue: adopt: %s is a data_dir; its spool is %s: %w", dir, filepath.Join(dir, "spool"), ErrNotSpool)
		}
		return fmt.Errorf("queue: adopt: %s has no lock file: %w", dir, ErrNotSpool)
	}
	return nil
}

// countDir counts the entries of dir, 0 when it cannot be read.
func countDir(dir string) int {
	ents, _ := os.ReadDir(dir)
	return len(ents)
}

// Adopt moves the messages of the stopped node's spool in dir into this
// running queue (see adopt); the admin API calls it for "submitd queue
// adopt". One adoption runs at a time.
func (q *Queue) Adopt(dir string) (*AdoptResult, error) {
	q.adoptMu.Lock()
	defer q.adoptMu.Unlock()
	return adopt(q.sp, dir, func(env *spool.Envelope) { q.Load([]*spool.Envelope{env}) }, q.log)
}

// Adopt moves the messages of the stopped node's spool in dir into this
// spool while no server runs; the server's next start loads them.
func (a *Admin) Adopt(dir string) (*AdoptResult, error) {
	lock, err := lockSpool(a.Spool.Dir())
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	return adopt(a.Spool, dir, nil, a.log())
}
