package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"submitd/internal/sending"
)

// Settings are the parts of the server's configuration that a reload may
// change while it serves (SetSettings).
type Settings struct {
	// MetricsNetworks may read /metrics without a token.
	MetricsNetworks []netip.Prefix
	// SendingAccount and SendingDomain are the configured sending limits
	// (Config.SendingAccount, Config.SendingDomain).
	SendingAccount, SendingDomain sending.Limits
	// PasswordScheme is the scheme of new password hashes.
	PasswordScheme string
	// SessionIdle ends a browser session after this long unused; 0 means
	// DefaultSessionIdle.
	SessionIdle time.Duration
	// DNS looks up the published DKIM records (Config.DNS).
	DNS TXTResolver
	// Health checks the domains' DNS (Config.Health).
	Health HealthChecker
}

// SetSettings puts st in force for the requests that come after it.
func (s *Server) SetSettings(st Settings) {
	if st.SessionIdle <= 0 {
		st.SessionIdle = DefaultSessionIdle
	}
	s.live.Store(&st)
}

// settings returns the settings in force.
func (s *Server) settings() *Settings { return s.live.Load() }

// ReloadFunc re-reads the running server's configuration file and puts it
// in force (node.Node.Reload). applied names the settings that changed and
// are in force; restart those that changed but only take effect at a
// restart, left as they were. An error means the file does not load or
// validate, and nothing changed.
type ReloadFunc func(ctx context.Context) (applied, restart []string, err error)

// reloadResult is the answer to POST /api/v1/reload.
type reloadResult struct {
	// Result says what happened, as the CLI prints it.
	Result string `json:"result"`
	// Applied are the settings changed and in force.
	Applied []string `json:"applied"`
	// Restart are the settings changed that need a restart.
	Restart []string `json:"restart"`
}

// reload re-reads the configuration file of the running server. A file
// that does not load changes nothing and is answered 422 with the reason,
// which names the file's line when the TOML does not parse.
func (s *Server) reload(r *http.Request, p *principal) (any, error) {
	if s.Reload == nil {
		return nil, errorf(http.StatusServiceUnavailable, "no running server to reload here")
	}
	applied, restart, err := s.Reload(r.Context())
	if err != nil {
		return nil, errorf(http.StatusUnprocessableEntity, "nothing changed: %v", err)
	}
	out := reloadResult{Result: ReloadSummary(applied, restart), Applied: applied, Restart: restart}
	if out.Applied == nil {
		out.Applied = []string{}
	}
	if out.Restart == nil {
		out.Restart = []string{}
	}
	if err := s.audit(r.Context(), p, "config.reload", "config", nil, map[string][]string{"applied": out.Applied, "restart": out.Restart}); err != nil {
		return nil, err
	}
	return out, nil
}

// ReloadSummary is the one line that tells what a reload did: the reply to
// the CLI and the server's log say the same.
func ReloadSummary(applied, restart []string) string {
	var b strings.Builder
	b.WriteString("configuration reloaded")
	if len(applied) == 0 {
		b.WriteString("; no setting changed")
	} else {
		fmt.Fprintf(&b, "; in force now: %s", strings.Join(applied, ", "))
	}
	if len(restart) > 0 {
		fmt.Fprintf(&b, "; left as they were until a restart: %s", strings.Join(restart, ", "))
	}
	return b.String()
}
