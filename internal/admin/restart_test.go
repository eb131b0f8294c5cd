package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestRestart: POST /api/v1/restart needs the admin role, answers with the
// new process's pid once the Restarter has it and writes the audit entry;
// a failed handover, one under way and a CLI without a server each get
// their own status, with nothing audited.
func TestRestart(t *testing.T) {
	w := newWorld(t)
	if r := w.do("POST", "/api/v1/restart", "", RoleAdmin); r.status != http.StatusServiceUnavailable {
		t.Errorf("without a running server: %d %s", r.status, r.raw)
	}
	var answer error
	w.srv.Restart = func(context.Context) (int, error) { return 4242, answer }
	if r := w.do("POST", "/api/v1/restart", "", RoleSupport); r.status != http.StatusForbidden {
		t.Errorf("support: %d %s", r.status, r.raw)
	}
	r := w.do("POST", "/api/v1/restart", "", RoleAdmin)
	if r.status != 200 || r.body["pid"] != 4242.0 || r.body["old_pid"] != float64(os.Getpid()) ||
		!strings.Contains(r.body["result"].(string), "process 4242 takes over") {
		t.Errorf("restart: %d %s", r.status, r.raw)
	}
	target := fmt.Sprintf("pid:%d", os.Getpid())
	if e := w.lastAudit(); e == nil || e.Action != "server.restart" || e.Target != target || !strings.Contains(string(e.After), "4242") {
		t.Errorf("audit entry: %+v", e)
	}
	before := w.lastAudit()
	for _, tc := range []struct {
		err    error
		status int
	}{
		{ErrRestarting, http.StatusConflict},
		{errors.New("the new process 99 failed before it was ready to take over"), http.StatusInternalServerError},
	} {
		answer = tc.err
		r := w.do("POST", "/api/v1/restart", "", RoleAdmin)
		if r.status != tc.status || !strings.Contains(r.raw, tc.err.Error()) {
			t.Errorf("%v: %d %s", tc.err, r.status, r.raw)
		}
		if e := w.lastAudit(); e.ID != before.ID {
			t.Errorf("%v audited: %+v", tc.err, e)
		}
	}
}
