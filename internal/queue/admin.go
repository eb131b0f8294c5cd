package queue

import (
	"container/heap"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"submitd/internal/ids"
	"submitd/internal/spool"
)

// ErrLocked means a running submitd holds the spool.
var ErrLocked = errors.New("the spool is in use by a running submitd")

// ErrNotQueued means no message has the queue id.
var ErrNotQueued = errors.New("no such message in the queue")

// lockSpool takes the spool's lock file with flock, which the kernel
// releases when the process ends, even by SIGKILL.
func lockSpool(dir string) (*os.File, error) {
	name := filepath.Join(dir, "lock")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("queue: lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("queue: lock %s: %w", name, ErrLocked)
		}
		return nil, fmt.Errorf("queue: lock %s: %w", name, err)
	}
	return f, nil
}

// request is what "submitd queue retry/delete" asks a running server to do,
// left as a file in the spool's ctl/ directory. The server answers in a
// file of the same name ending in .done.
type request struct {
	// Op is "retry" or "delete".
	Op string `json:"op"`
	// ID is a queue id, or "all" for retry.
	ID string `json:"id"`
	// Bounce reports a deleted message's open recipients to its sender.
	Bounce bool `json:"bounce,omitempty"`
}

const (
	ctlDir  = "ctl"
	reqExt  = ".req"
	doneExt = ".done"
)

// handleRequests serves the requests waiting in ctl/.
func (q *Queue) handleRequests() {
	dir := filepath.Join(q.sp.Dir(), ctlDir)
	names, _ := filepath.Glob(filepath.Join(dir, "*"+reqExt))
	for _, name := range names {
		var answer string
		var req request
		data, err := os.ReadFile(name)
		if err == nil {
			err = json.Unmarshal(data, &req)
		}
		if err == nil {
			answer, err = q.serve(req)
		}
		if err != nil {
			answer = "error: " + err.Error()
		}
		q.log.Info("queue request", "op", req.Op, "id", req.ID, "bounce", req.Bounce, "answer", answer)
		done := strings.TrimSuffix(name, reqExt) + doneExt
		if err := spool.WriteFileAtomic(done, []byte(answer+"\n"), 0o640); err != nil {
			q.log.Error("queue: cannot answer request", "file", done, "err", err)
		}
		os.Remove(name)
	}
}

// serve carries out one request in the running server.
func (q *Queue) serve(req request) (string, error) {
	switch req.Op {
	case "retry":
		q.mu.Lock()
		var es []*entry
		if req.ID == "all" {
			for _, e := range q.entries {
				es = append(es, e)
			}
		} else if e := q.entries[req.ID]; e != nil {
			es = append(es, e)
		}
		now := q.now()
		for _, e := range es {
			if e.active {
				e.retry.Store(true)
				continue
			}
			e.force = true
			e.due = now
			heap.Fix(&q.waiting, e.index)
		}
		q.mu.Unlock()
		q.kick()
		if req.ID != "all" && len(es) == 0 {
			return "", fmt.Errorf("%s: %w", req.ID, ErrNotQueued)
		}
		return retryAnswer(req.ID, len(es)), nil
	case "delete":
		q.mu.Lock()
		e := q.entries[req.ID]
		if e == nil {
			q.mu.Unlock()
			return "", fmt.Errorf("%s: %w", req.ID, ErrNotQueued)
		}
		if e.active {
			// The attempt under way stops and its end deletes the message.
			e.bounce.Store(req.Bounce)
			e.deleted.Store(true)
			e.cancel()
			q.mu.Unlock()
			return fmt.Sprintf("deleting %s (its delivery attempt under way is stopped)", req.ID), nil
		}
		heap.Remove(&q.waiting, e.index)
		delete(q.entries, req.ID)
		q.mu.Unlock()
		env, st, err := ReadState(q.sp, req.ID)
		if err != nil {
			return "", err
		}
		if err := q.remove(env, st, req.Bounce); err != nil {
			return "", err
		}
		return deleteAnswer(env, req.Bounce), nil
	}
	return "", fmt.Errorf("unknown request %q", req.Op)
}

func retryAnswer(id string, n int) string {
	if id == "all" {
		return fmt.Sprintf("retry scheduled for %d message(s)", n)
	}
	return "retry scheduled for " + id
}

func deleteAnswer(env *spool.Envelope, bounce bool) string {
	switch {
	case !bounce:
		return "deleted " + env.ID
	case !Bounceable(env):
		return "deleted " + env.ID + " (no report: the sender is <> or it is a report)"
	}
	return fmt.Sprintf("deleted %s and reported it to <%s>", env.ID, env.From)
}

// Admin inspects and changes a spool from outside the server ("submitd
// queue"). Retry and Delete go through the running server when there is one,
// so that it never works on a message the command has changed under it;
// otherwise they change the spool directly.
type Admin struct {
	// Spool is the spool, opened with spool.Attach.
	Spool *spool.Spool
	// Hostname names the reporting server in reports made by Delete.
	Hostname string
	// MaxAge is the configured max_age, for the reports' retry horizon.
	MaxAge time.Duration
	// Timeout bounds the wait for a running server's answer; default 10s.
	Timeout time.Duration
	// Log receives log lines; nil discards.
	Log *slog.Logger
}

// Item is one queued message with its state.
type Item struct {
	// Env is the envelope.
	Env *spool.Envelope
	// State is the delivery state.
	State *State
}

// List returns the queued messages, oldest first. A message removed while
// listing is left out.
func (a *Admin) List() ([]Item, error) {
	envs, err := a.Spool.List()
	if err != nil {
		return nil, err
	}
	out := make([]Item, 0, len(envs))
	for _, env := range envs {
		data, err := a.Spool.ReadState(env.ID)
		if err != nil {
			continue
		}
		st, err := decodeState(env, data)
		if err != nil {
			st = newState(env)
		}
		out = append(out, Item{Env: env, State: st})
	}
	return out, nil
}

// Show returns message id's envelope, state and header section.
func (a *Admin) Show(id string) (*Item, []byte, error) {
	if !ids.IsQueue(id) {
		return nil, nil, fmt.Errorf("%q is not a queue id", id)
	}
	env, st, err := ReadState(a.Spool, id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%s: %w", id, ErrNotQueued)
		}
		return nil, nil, err
	}
	return &Item{Env: env, State: st}, readHeaders(a.Spool, id), nil
}

// Retry makes message id (or every message, for "all") due at once, every
// open recipient included, and returns what was done.
func (a *Admin) Retry(id string) (string, error) {
	if id != "all" && !ids.IsQueue(id) {
		return "", fmt.Errorf("%q is not a queue id", id)
	}
	return a.do(request{Op: "retry", ID: id}, func() (string, error) {
		var items []string
		if id == "all" {
			envs, err := a.Spool.List()
			if err != nil {
				return "", err
			}
			for _, env := range envs {
				items = append(items, env.ID)
			}
		} else {
			items = []string{id}
		}
		n := 0
		for _, mid := range items {
			env, st, err := ReadState(a.Spool, mid)
			if err != nil {
				if id != "all" {
					if errors.Is(err, fs.ErrNotExist) {
						return "", fmt.Errorf("%s: %w", id, ErrNotQueued)
					}
					return "", err
				}
				continue
			}
			for _, r := range st.Rcpts {
				if r.open() {
					r.Next = time.Time{}
				}
			}
			if err := st.write(a.Spool, env.ID); err != nil {
				return "", err
			}
			n++
		}
		return retryAnswer(id, n), nil
	})
}

// Delete removes message id; with bounce its sender gets a report naming
// the recipients not delivered. Without bounce nobody is told.
func (a *Admin) Delete(id string, bounce bool) (string, error) {
	if !ids.IsQueue(id) {
		return "", fmt.Errorf("%q is not a queue id", id)
	}
	return a.do(request{Op: "delete", ID: id, Bounce: bounce}, func() (string, error) {
		env, st, err := ReadState(a.Spool, id)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("%s: %w", id, ErrNotQueued)
			}
			return "", err
		}
		r := &reporter{sp: a.Spool, hostname: a.Hostname, maxAge: a.MaxAge, log: a.log()}
		if _, err := r.remove(env, st, bounce, time.Now()); err != nil {
			return "", err
		}
		return deleteAnswer(env, bounce), nil
	})
}

func (a *Admin) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// do runs direct while holding the spool lock when no server runs, else
// hands req to the running server and waits for its answer.
func (a *Admin) do(req request, direct func() (string, error)) (string, error) {
	lock, err := lockSpool(a.Spool.Dir())
	if err == nil {
		defer lock.Close()
		return direct()
	}
	if !errors.Is(err, ErrLocked) {
		return "", err
	}
	dir := filepath.Join(a.Spool.Dir(), ctlDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	base := filepath.Join(dir, fmt.Sprintf("%d-%s", time.Now().UnixNano(), hex.EncodeToString(rnd[:])))
	data, _ := json.Marshal(req)
	if err := spool.WriteFileAtomic(base+reqExt, data, 0o640); err != nil {
		return "", fmt.Errorf("queue: write request: %w", err)
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ans, err := os.ReadFile(base + doneExt)
		if err == nil {
			os.Remove(base + doneExt)
			s := strings.TrimSpace(string(ans))
			if msg, ok := strings.CutPrefix(s, "error: "); ok {
				return "", errors.New(msg)
			}
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("the running server did not answer within %s; the request waits in %s and is carried out when the server reads it",
		timeout, base+reqExt)
}
