package node

import "submitd/internal/queue"

// Adopt implements admin.Queue: the running queue takes in a stopped
// node's spool ("submitd queue adopt").
func (l liveQueue) Adopt(dir string) (*queue.AdoptResult, error) { return l.q.Adopt(dir) }
