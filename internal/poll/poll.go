// Package poll runs the loop that keeps a process in step with a store other
// processes write: read what changed every interval, prune old entries every
// minute, and log a failing store once per outage rather than every poll.
package poll

import (
	"context"
	"log/slog"
	"time"
)

// Loop describes one such loop.
type Loop struct {
	// Every is the time between two calls of Sync.
	Every time.Duration
	// Sync reads and applies what changed.
	Sync func(context.Context) error
	// Prune drops what is no longer needed; it runs every minute.
	Prune func(context.Context) error
	// What names the store in log lines ("guard: the store's change log").
	What string
	// Log receives the failures.
	Log *slog.Logger
}

// Run runs l until ctx is done.
func (l Loop) Run(ctx context.Context) {
	poll := time.NewTicker(l.Every)
	defer poll.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			err := l.Sync(ctx)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil && !failing:
				l.Log.Error(l.What+": reading failed", "err", err)
				failing = true
			case err == nil && failing:
				l.Log.Info(l.What + ": reading works again")
				failing = false
			}
		case <-prune.C:
			if err := l.Prune(ctx); err != nil && ctx.Err() == nil {
				l.Log.Error(l.What+": pruning failed", "err", err)
			}
		}
	}
}
