package smtpd

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/auth"
	"submitd/internal/directory"
	"submitd/internal/guard"
	"submitd/internal/password"
)

// TestAuthBusy: while the only hashing worker is taken, an AUTH that waits
// past the pool's deadline gets the temporary auth_busy reply, both from
// the client whose own check is running (one hash per client key) and from
// another client; neither counts as a failure towards a block (SPEC R11).
// Once the check ends, the same login succeeds, answered from the
// credential cache.
func TestAuthBusy(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var first sync.Once
	e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 2}), withServer(func(s *Server) {
		a, err := auth.New(auth.Config{
			Directory: s.Directory,
			// The first check holds the worker until the test releases it;
			// the pool, not the hash, is under test.
			Verify: func(hash, pw string) (bool, error) {
				first.Do(func() { close(entered); <-release })
				return password.Verify(hash, pw)
			},
			Workers: 1, Queue: 10, Wait: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Auth = a
	}))
	busy := "454 4.7.0 SID authentication temporarily unavailable, try again later"

	holder := e.session("plain", nil)
	holder.send(plain("jan@firma.cz", testPassword))
	<-entered

	same := e.session("plain", nil)
	matchSID(t, same.cmd(plain("jan@firma.cz", testPassword)), busy)
	other := e.dialFrom("plain", "127.0.0.2", nil)
	other.last()
	other.expect("EHLO client.example", "250 ")
	for range 3 {
		matchSID(t, other.cmd(plain("jan@firma.cz", "wrong")), busy)
	}
	if st := e.guard.Stats(); st.Failures != 0 || st.Blocks != 0 {
		t.Fatalf("busy replies counted as AUTH failures: %+v", st)
	}

	close(release)
	if got := holder.last(); !strings.HasPrefix(got, "235 ") {
		t.Fatalf("the held check: %q, want 235", got)
	}
	// The retry needs no worker: the held check's answer is cached.
	same.expect(plain("jan@firma.cz", testPassword), "235 ")
}

// brokenDirectory is a directory that cannot be reached.
type brokenDirectory struct{}

func (brokenDirectory) Account(context.Context, string) (*directory.Account, error) {
	return nil, errors.New("database is locked")
}

// TestAuthDirectoryUnreachable: with the directory unreachable, AUTH gets
// the temporary auth_busy reply, never a false "rejected", and it does not
// count towards a block (SPEC R16a).
func TestAuthDirectoryUnreachable(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 2}), withServer(func(s *Server) {
		a, err := auth.New(auth.Config{Directory: brokenDirectory{}})
		if err != nil {
			t.Fatal(err)
		}
		s.Auth = a
	}))
	c := e.session("plain", nil)
	for range 3 {
		matchSID(t, c.cmd(plain("jan@firma.cz", testPassword)), "454 4.7.0 SID authentication temporarily unavailable, try again later")
	}
	if st := e.guard.Stats(); st.Failures != 0 {
		t.Fatalf("directory errors counted as AUTH failures: %+v", st)
	}
}

// TestAuthSuccessNotPadded: min_duration pads failures only. With an hour
// of padding a successful AUTH still answers at once (padded, it would run
// into the client's deadline), from the hash and from the cache.
func TestAuthSuccessNotPadded(t *testing.T) {
	e := newTestEnv(t, withServer(func(s *Server) { s.MinAuthDuration = time.Hour }))
	for range 2 {
		c := e.session("plain", nil)
		c.expect(plain("jan@firma.cz", testPassword), "235 ")
	}
}

// withParallelChecks gives the server an authenticator that runs every
// check at once, each under a pool key of its own, with verify. It is for
// tests of the guard's limit, which must see many checks from one address in
// flight together; the pool's own bounds are tested in package auth and by
// TestAuthBusy. The credential cache is off unless cached is set.
func withParallelChecks(verify Hasher, cached bool) envOption {
	return func(e *testEnv) {
		ttl := time.Duration(-1)
		if cached {
			ttl = time.Hour
		}
		a, err := auth.New(auth.Config{Directory: e.srv.Directory, Verify: verify,
			CacheTTL: ttl, Workers: 64, Queue: 64, Wait: time.Minute})
		if err != nil {
			e.t.Fatal(err)
		}
		var n atomic.Uint32
		e.srv.Auth = a
		e.srv.AuthKey = func(netip.Addr) netip.Prefix {
			i := n.Add(1)
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		}
	}
}
