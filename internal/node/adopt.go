package node

import (
	"submitd/internal/delivery"
	"submitd/internal/queue"
)

// Adopt implements admin.Queue: the running queue takes in a stopped
// node's spool ("submitd queue adopt").
func (l liveQueue) Adopt(dir string) (*queue.AdoptResult, error) { return l.q.Adopt(dir) }

// Backoffs implements admin.Backoffs: the queue page shows the
// destinations the running queue's sender holds back.
func (l liveQueue) Backoffs() []delivery.Backoff { return l.q.Backoffs() }
