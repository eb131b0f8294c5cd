package smtpd

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// activityLog records what an Activity hears.
type activityLog struct {
	mu     sync.Mutex
	logins []string
	queued map[string]int
}

func (a *activityLog) LoggedIn(account string, ip netip.Addr, helo string, _ time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.logins = append(a.logins, account+" "+ip.String()+" "+helo)
}

func (a *activityLog) Queued(account string, rcpts int, _ time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.queued == nil {
		a.queued = map[string]int{}
	}
	a.queued[account] += rcpts
}

// TestCloseAccount: CloseAccount ends the open sessions of one account at
// once, leaves the others' alone, and refuses that account's next AUTH as
// disabled until ReopenAccount, even with the right password (SPEC R20).
func TestCloseAccount(t *testing.T) {
	act := &activityLog{}
	e := newTestEnv(t, withServer(func(s *Server) { s.Activity = act }))
	jan := e.login("smtp", "jan@firma.cz")
	eva := e.login("smtp", "eva@jina.cz")
	if got := jan.sendMessage("jan@firma.cz", []string{"x@example.org", "y@example.org"}, msg("From: jan@firma.cz")); got[:3] != "250" {
		t.Fatalf("message before the hold: %q", got)
	}
	if n := e.srv.CloseAccount("jan@firma.cz"); n != 1 {
		t.Fatalf("CloseAccount closed %d sessions, want 1", n)
	}
	jan.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := jan.r.ReadString('\n'); err == nil {
		t.Fatal("the held account's session is still open")
	}
	eva.expect("NOOP", "250 ")
	c := e.open("smtp")
	matchSID(t, c.cmd(plain("jan@firma.cz", testPassword)), "535 5.1.0 SID authentication rejected access disabled")
	e.srv.ReopenAccount("jan@firma.cz")
	c.expect(plain("jan@firma.cz", testPassword), "235 ")

	act.mu.Lock()
	defer act.mu.Unlock()
	if len(act.logins) != 3 || act.logins[0] != "jan@firma.cz 127.0.0.1 client.example" {
		t.Fatalf("logins %q", act.logins)
	}
	if act.queued["jan@firma.cz"] != 2 {
		t.Fatalf("queued %v, want 2 recipients for jan@firma.cz", act.queued)
	}
}
