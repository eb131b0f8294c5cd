package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
)

// Restarter replaces the running server with a new process of its binary
// that inherits its listening sockets (internal/handover), and returns the
// new process's pid once that process is ready to take over.
type Restarter func(ctx context.Context) (pid int, err error)

// ErrRestarting is a Restarter's answer while a restart is already under
// way.
var ErrRestarting = errors.New("a restart is already under way")

// restartResult is the answer to POST /api/v1/restart.
type restartResult struct {
	result
	// OldPID is the process that answered and now drains.
	OldPID int `json:"old_pid"`
	// PID is the process that takes over.
	PID int `json:"pid"`
}

// restart hands the listening sockets to a new process (POST
// /api/v1/restart, admin role). It answers once the new process has read
// its configuration and opened its stores: this one then stops accepting,
// lets its sessions finish and hands over the spool.
func (s *Server) restart(r *http.Request, p *principal) (any, error) {
	if s.Restart == nil {
		return nil, errorf(http.StatusServiceUnavailable, "no server runs on this data_dir; start it with \"submitd serve\"")
	}
	old := os.Getpid()
	pid, err := s.Restart(r.Context())
	if errors.Is(err, ErrRestarting) {
		return nil, errorf(http.StatusConflict, "%s", err)
	}
	if err != nil {
		s.cfg.Log.Error("admin: restart failed; this process goes on serving", "actor", p.actor, "err", err)
		return nil, errorf(http.StatusInternalServerError, "restart failed, this process (%d) goes on serving: %s", old, err)
	}
	type procs struct {
		PID int `json:"pid"`
	}
	if err := s.audit(r.Context(), p, "server.restart", fmt.Sprintf("pid:%d", old), procs{old}, procs{pid}); err != nil {
		return nil, err
	}
	return restartResult{result: done("process %d takes over from process %d, which finishes its sessions and exits", pid, old),
		OldPID: old, PID: pid}, nil
}
