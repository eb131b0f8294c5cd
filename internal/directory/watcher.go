package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"submitd/internal/poll"
)

// Defaults of WatcherConfig.
const (
	// DefaultPollInterval is how often a Watcher reads the change log: a
	// password change or a disable made with the CLI takes effect within it.
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultChangeRetention is how long entries stay in the log. A reader
	// that falls further behind (its database unreachable for longer) is
	// told with ChangesLost.
	DefaultChangeRetention = time.Hour
	// DefaultChangeKeep bounds the log whatever its age: a bulk import
	// writes one entry per account.
	DefaultChangeKeep = 100000
)

// changesBatch is how many entries one read of the log returns at most.
const changesBatch = 1000

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// PollInterval is how often the log is read; 0 means DefaultPollInterval.
	PollInterval time.Duration
	// Retention is how long entries are kept; 0 means DefaultChangeRetention.
	Retention time.Duration
	// Keep is the most entries kept; 0 means DefaultChangeKeep.
	Keep int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Watcher follows a ChangeLog and hands each change to its subscribers, in
// log order, so that what a process derived from the directory (cached
// credentials, cached accounts, open sessions) follows changes made by
// other processes.
type Watcher struct {
	// log is the feed followed; cfg its settings, defaults applied.
	log ChangeLog
	cfg WatcherConfig
	// logger receives read failures, once per outage.
	logger *slog.Logger

	// mu guards seq; syncMu makes Sync calls take turns, so every change
	// is delivered once and in order.
	mu     sync.Mutex
	syncMu sync.Mutex
	// subs are called with each change.
	subs subscribers
	// seq is the position read up to.
	seq int64
}

// NewWatcher returns a Watcher that starts at the log's newest entry: the
// caller has derived nothing from the directory yet, so older changes do
// not concern it.
func NewWatcher(ctx context.Context, log ChangeLog, cfg WatcherConfig, logger *slog.Logger) (*Watcher, error) {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultChangeRetention
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultChangeKeep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seq, err := log.LastChange(ctx)
	if err != nil {
		return nil, err
	}
	return &Watcher{log: log, cfg: cfg, logger: logger, seq: seq}, nil
}

// Subscribe adds f, which is called with every change read from now on. f
// runs on the Watcher's goroutine and must not block; it is also called with
// ChangesLost, after which it must assume anything changed.
func (w *Watcher) Subscribe(f func(Change)) {
	w.subs.add(f)
}

// Position returns the log position read up to.
func (w *Watcher) Position() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq
}

// Sync reads the changes made since the last call and delivers them.
func (w *Watcher) Sync(ctx context.Context) error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	for {
		w.mu.Lock()
		after := w.seq
		w.mu.Unlock()
		chs, err := w.log.Changes(ctx, after, changesBatch)
		if errors.Is(err, ErrChangesPruned) {
			w.logger.Warn("directory: change log pruned past this process's position; forgetting what was derived from the directory", "position", after)
			seq, err := w.log.LastChange(ctx)
			if err != nil {
				return err
			}
			w.deliver(Change{Seq: seq, Kind: ChangesLost, Time: w.cfg.Now()})
			continue
		}
		if err != nil {
			return fmt.Errorf("directory: read changes after %d: %w", after, err)
		}
		for _, ch := range chs {
			w.deliver(ch)
		}
		if len(chs) < changesBatch {
			return nil
		}
	}
}

// deliver hands ch to every subscriber and advances the position past it.
func (w *Watcher) deliver(ch Change) {
	w.subs.deliver(ch)
	w.mu.Lock()
	w.seq = max(w.seq, ch.Seq)
	w.mu.Unlock()
}

// Prune deletes entries older than the retention, and all but the newest
// Keep.
func (w *Watcher) Prune(ctx context.Context) error {
	return w.log.PruneChanges(ctx, w.cfg.Now().Add(-w.cfg.Retention), w.cfg.Keep)
}

// Run calls Sync every poll interval and Prune every minute until ctx is
// done. While the log cannot be read nothing is delivered; once it can,
// the changes made meanwhile are (or ChangesLost, if they are gone).
func (w *Watcher) Run(ctx context.Context) {
	poll.Loop{Every: w.cfg.PollInterval, Sync: w.Sync, Prune: w.Prune,
		What: "directory: the change log", Log: w.logger}.Run(ctx)
}
