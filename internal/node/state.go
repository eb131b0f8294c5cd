package node

import (
	"context"
	"strings"
	"sync"
	"time"

	"submitd/internal/contain"
	"submitd/internal/sending"
)

// StateSaveEvery is how often the counts a node keeps in memory (the
// containment signals, R21's failures, the per-node sending windows) are
// saved; a crash loses at most this much of them, a stop nothing (issue
// 19). The SMTP path only counts in memory.
const StateSaveEvery = 2 * time.Second

// saver is one part of the state the node saves.
type saver struct {
	// name says what it saves, for the log.
	name string
	// flush saves what changed since it last ran.
	flush func(context.Context) error
	// failing is set while flush fails, so an outage is logged once.
	failing bool
}

// keepSaving adds a part of the state to what runSaving saves.
func (n *Node) keepSaving(name string, flush func(context.Context) error) {
	n.savers = append(n.savers, &saver{name: name, flush: flush})
}

// openSignals loads the containment signals' windows from the store
// [store] names, the node's SQLite database or the PostgreSQL the nodes
// share, and saves them there from now on. The volume signal learns each
// account's hourly limit from the sending limits.
func (n *Node) openSignals(ctx context.Context) error {
	var st contain.SignalStore
	var err error
	if n.Stores.Pool != nil {
		st, err = contain.NewPostgresSignals(ctx, n.Stores.Pool)
	} else {
		st, err = contain.NewSQLiteSignals(ctx, n.DB)
	}
	if err != nil {
		return err
	}
	n.Detector.SetHourlyLimit(n.hourlyLimit)
	if err := n.Detector.Restore(ctx, st); err != nil {
		return err
	}
	n.keepSaving("containment signals", n.Detector.Flush)
	return nil
}

// hourlyLimit is the most messages an hour the sending limits let account
// send (SPEC R19), 0 when nothing bounds them: the smallest of its own and
// its domain's messages_per_hour, recipients_per_hour and
// recipients_per_day, overrides included, since every message has at least
// one recipient.
func (n *Node) hourlyLimit(account string) int64 {
	if n.Sending == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, domain, _ := strings.Cut(account, "@")
	acct, dom := n.Sending.Effective(ctx, account, domain)
	var most int64
	for _, l := range []sending.Limits{acct, dom} {
		for _, lim := range []sending.Limit{sending.MessagesPerHour, sending.RecipientsPerHour, sending.RecipientsPerDay} {
			if v := l[lim]; v > 0 && (most == 0 || v < most) {
				most = v
			}
		}
	}
	return most
}

// runSaving saves the node's state every StateSaveEvery until ctx ends,
// then once more; the returned channel closes after that last save.
func (n *Node) runSaving(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(StateSaveEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
				defer cancel()
				n.saveState(sctx)
				return
			case <-t.C:
				n.saveState(ctx)
			}
		}
	}()
	return done
}

// saveState runs every saver once, logging a failure when it starts and
// when it ends.
func (n *Node) saveState(ctx context.Context) {
	n.savingMu.Lock()
	defer n.savingMu.Unlock()
	for _, s := range n.savers {
		err := s.flush(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !s.failing:
			s.failing = true
			n.Log.Error("state not saved; counting goes on in memory and is saved when the store answers", "state", s.name, "err", err)
		case err == nil && s.failing:
			s.failing = false
			n.Log.Info("state saved again", "state", s.name)
		}
	}
}

// savingState is what Node keeps for runSaving.
type savingState struct {
	// savers are the parts of the state saved; savingMu makes saves take
	// turns.
	savers   []*saver
	savingMu sync.Mutex
}
