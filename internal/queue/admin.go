package queue

import (
	"container/heap"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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

// request is a retry or delete for the running queue (Retry, Delete).
type request struct {
	// Op is "retry" or "delete".
	Op string
	// ID is a queue id, or "all" for retry.
	ID string
	// Bounce reports a deleted message's open recipients to its sender.
	Bounce bool
}

// Retry makes message id (or every message, for "all") of the running
// queue due at once, every open recipient included, and returns what was
// done. The admin API calls it for "submitd queue retry".
func (q *Queue) Retry(id string) (string, error) {
	if id != "all" && !ids.IsQueue(id) {
		return "", fmt.Errorf("%q is not a queue id", id)
	}
	return q.serve(request{Op: "retry", ID: id})
}

// Delete removes message id from the running queue, stopping an attempt
// under way, and with bounce reports its open recipients to the sender.
// The admin API calls it for "submitd queue delete".
func (q *Queue) Delete(id string, bounce bool) (string, error) {
	if !ids.IsQueue(id) {
		return "", fmt.Errorf("%q is not a queue id", id)
	}
	return q.serve(request{Op: "delete", ID: id, Bounce: bounce})
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
			if e.held {
				// A retry does not release a held message (SPEC R20).
				continue
			}
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
		if e.index >= 0 {
			heap.Remove(&q.waiting, e.index)
		}
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

// Admin inspects a spool from outside the server and changes it while no
// server runs ("submitd queue"). A running server's queue is changed with
// Queue.Retry and Queue.Delete, through its admin API, so that it never
// works on a message changed under it.
type Admin struct {
	// Spool is the spool, opened with spool.Attach.
	Spool *spool.Spool
	// Hostname names the reporting server in reports made by Delete.
	Hostname string
	// MaxAge is the configured max_age, for the reports' retry horizon.
	MaxAge time.Duration
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
	return a.do(func() (string, error) {
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
	return a.do(func() (string, error) {
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

// do runs direct while holding the spool lock. While a server holds it,
// changes go through the server's admin socket instead ("submitd queue"
// does so), so this refuses rather than change messages under it.
func (a *Admin) do(direct func() (string, error)) (string, error) {
	lock, err := lockSpool(a.Spool.Dir())
	if err != nil {
		return "", err
	}
	defer lock.Close()
	return direct()
}
