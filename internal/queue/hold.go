package queue

import (
	"bufio"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"

	"submitd/internal/ids"
	"submitd/internal/message"
)

// StateHeld counts held messages in Sizes (SPEC R20).
const StateHeld = "held"

// holding reports whether e's attempt must hold it instead of delivering:
// Hold asked for it during the attempt, or its account is held and the
// message came after the hold.
func (q *Queue) holding(e *entry) bool {
	if e.holdReq.Load() {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.heldAccounts[e.account]
	return ok
}

// holdLocked records the hold in e's state, durably, at the end of an
// attempt; e.amu is held. It reports false when the account was released
// meanwhile, and the attempt ends as any other.
func (q *Queue) holdLocked(e *entry) bool {
	q.mu.Lock()
	reason, ok := q.heldAccounts[e.account]
	q.mu.Unlock()
	e.holdReq.Store(false)
	if !ok {
		return false
	}
	e.st.Held = &Hold{Account: e.account, Reason: reason, Since: q.now()}
	if err := e.st.write(q.sp, e.id); err != nil {
		// Held in memory all the same; at the next start the account's
		// hold in the directory holds it again.
		q.log.Error("queue: cannot save hold", "queue_id", e.id, "err", err)
	}
	q.log.Info("message held", "queue_id", e.id, "session", e.env.SessionID, "account", e.account, "reason", reason)
	q.tracer().Trace(TraceEvent{QueueID: e.id, Time: e.st.Held.Since, Kind: TraceHeld, Detail: reason})
	return true
}

// Hold holds every message of account that is not yet delivered, and those
// it submits later, until Release or Purge (SPEC R20): a held message is
// neither tried nor reported, and stays held across restarts. An attempt
// under way is stopped. It returns how many messages are held.
func (q *Queue) Hold(account, reason string) (int, error) {
	q.holdMu.Lock()
	defer q.holdMu.Unlock()
	q.mu.Lock()
	q.heldAccounts[account] = reason
	n := 0
	var idle []*entry
	for _, e := range q.entries {
		if e.account != account {
			continue
		}
		n++
		switch {
		case e.held:
		case e.active:
			// The attempt's end holds it (holdLocked).
			e.holdReq.Store(true)
			e.cancel()
		default:
			heap.Remove(&q.waiting, e.index)
			e.held = true
			idle = append(idle, e)
		}
	}
	q.mu.Unlock()
	var errs []error
	for _, e := range idle {
		err := q.writeHold(e.id, &Hold{Account: account, Reason: reason, Since: q.now()})
		if errors.Is(err, fs.ErrNotExist) {
			q.mu.Lock()
			delete(q.entries, e.id)
			q.mu.Unlock()
			n--
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		q.log.Info("message held", "queue_id", e.id, "account", account, "reason", reason)
		q.tracer().Trace(TraceEvent{QueueID: e.id, Time: q.now(), Kind: TraceHeld, Detail: reason})
	}
	return n, errors.Join(errs...)
}

// writeHold sets or (h nil) clears the hold in message id's state.
func (q *Queue) writeHold(id string, h *Hold) error {
	env, st, err := ReadState(q.sp, id)
	if err != nil {
		return err
	}
	st.Held = h
	return st.write(q.sp, env.ID)
}

// Release ends the hold of account: its held messages are due at once,
// every open recipient included, and its new messages go out as usual. It
// returns how many messages it released.
func (q *Queue) Release(account string) (int, error) {
	q.holdMu.Lock()
	defer q.holdMu.Unlock()
	q.mu.Lock()
	delete(q.heldAccounts, account)
	es := q.heldOf(account)
	q.mu.Unlock()
	var errs []error
	n := 0
	for _, e := range es {
		if err := q.writeHold(e.id, nil); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Left held: delivering a message whose state still says held
			// would hold it again at the next start, out of step.
			errs = append(errs, err)
			continue
		}
		q.mu.Lock()
		e.held = false
		e.force = true
		e.due = q.now()
		heap.Push(&q.waiting, e)
		q.mu.Unlock()
		q.tracer().Trace(TraceEvent{QueueID: e.id, Time: q.now(), Kind: TraceReleased})
		n++
	}
	q.kick()
	q.log.Info("account released", "account", account, "messages", n)
	return n, errors.Join(errs...)
}

// Purge deletes the held messages of account without reporting them to
// their senders (SPEC R20: the senders were forged, a report would be
// backscatter). The account stays held. It returns how many it deleted.
func (q *Queue) Purge(account string) (int, error) {
	q.holdMu.Lock()
	defer q.holdMu.Unlock()
	q.mu.Lock()
	es := q.heldOf(account)
	for _, e := range es {
		delete(q.entries, e.id)
	}
	q.mu.Unlock()
	var errs []error
	n := 0
	for _, e := range es {
		env, st, err := ReadState(q.sp, e.id)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			_, err = q.reporter().remove(env, st, false, q.now())
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		q.tracer().Trace(TraceEvent{QueueID: e.id, Time: q.now(), Kind: TracePurged})
		n++
	}
	q.log.Info("held messages purged", "account", account, "messages", n)
	return n, errors.Join(errs...)
}

// HeldMessages lists the queue ids of account's held messages, in order.
func (q *Queue) HeldMessages(account string) []string {
	q.mu.Lock()
	es := q.heldOf(account)
	q.mu.Unlock()
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.id
	}
	slices.Sort(out)
	return out
}

// heldOf lists account's held entries; q.mu is held.
func (q *Queue) heldOf(account string) []*entry {
	var es []*entry
	for _, e := range q.entries {
		if e.held && e.account == account {
			es = append(es, e)
		}
	}
	return es
}

// Preview returns message id's header section and the first lines of its
// body, at most lines lines and maxBytes bytes of it, for support to judge
// a held message (SPEC R20) without reading all of a large one.
func (a *Admin) Preview(id string, lines, maxBytes int) (header []byte, body string, err error) {
	if !ids.IsQueue(id) {
		return nil, "", fmt.Errorf("%q is not a queue id", id)
	}
	rc, _, err := a.Spool.Message(id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", fmt.Errorf("%s: %w", id, ErrNotQueued)
		}
		return nil, "", err
	}
	defer rc.Close()
	br := bufio.NewReader(io.LimitReader(rc, maxReportHeader+int64(maxBytes)))
	header, err = message.ReadHeader(br, maxReportHeader)
	if err != nil && len(header) == 0 {
		return nil, "", err
	}
	var b strings.Builder
	for n := 0; n < lines && b.Len() < maxBytes; n++ {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			break
		}
	}
	body = b.String()
	if len(body) > maxBytes {
		body = body[:maxBytes]
	}
	return header, body, nil
}
