package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"submitd/internal/certs"
)

// testServerOptions shape the in-process go-smtp server.
type testServerOptions struct {
	// implicitTLS serves TLS from the first byte instead of STARTTLS.
	implicitTLS bool
	// failEvery makes every n-th DATA fail with 451 4.3.0 (0: none).
	failEvery int
	// onData runs for every message, before its reply.
	onData func()
	// refuse answers connections from this address with 554 and closes.
	refuse netip.Addr
	// authDelay is how long a correct login takes.
	authDelay time.Duration
}

// testServer is a go-smtp server on 127.0.0.1:0 that counts what it got.
type testServer struct {
	// addr is its address.
	addr string
	// opts are its options.
	opts testServerOptions
	// mu guards the counters.
	mu sync.Mutex
	// data counts DATA commands, accepted the messages that got 250.
	data, accepted int
	// authOK and authFailed count logins.
	authOK, authFailed int
	// auths are the logins in the order they were checked.
	auths []testLogin
}

// testLogin is one login the test server checked.
type testLogin struct {
	// user is the login and src the client's address.
	user, src string
	// ok says whether the password was right.
	ok bool
}

// logins returns the logins checked so far.
func (ts *testServer) logins() []testLogin {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.auths)
}

const testPassword = "right-password"

func startTestServer(t *testing.T, opts testServerOptions) *testServer {
	t.Helper()
	tc, _, err := certs.Load("", "", t.TempDir(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{opts: opts}
	s := smtp.NewServer(ts)
	s.Domain = "test.server"
	s.TLSConfig = tc
	// The refusal tests reset connections on purpose.
	s.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	var l net.Listener = &refusingListener{Listener: ln, refuse: opts.refuse}
	if opts.implicitTLS {
		l = tls.NewListener(l, tc)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return ts
}

// refusingListener writes 554 to connections from one address and closes
// them, the way a server refuses a blocked client.
type refusingListener struct {
	net.Listener
	// refuse is the refused address (invalid: none).
	refuse netip.Addr
}

func (l *refusingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if l.refuse.IsValid() && ap.Addr() == l.refuse {
			io.WriteString(c, "554 5.7.1 blocked\r\n")
			c.Close()
			continue
		}
		return c, nil
	}
}

func (ts *testServer) counts() (data, accepted, authOK, authFailed int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.data, ts.accepted, ts.authOK, ts.authFailed
}

// sendConfig is a workload against the server with n connections.
func (ts *testServer) sendConfig(n int) *sendConfig {
	sec := "starttls"
	if ts.opts.implicitTLS {
		sec = "implicit"
	}
	return &sendConfig{
		dial:  &dialConfig{addr: ts.addr, security: sec, timeout: 10 * time.Second, pipelining: true, heloName: "client.test"},
		conns: n,
		size:  1000,
		to:    "rcpt@example.net",
		accts: accounts{format: "user%d@test.server", n: 3, password: testPassword},
		src:   sources{base: netip.MustParseAddr("127.0.0.1"), n: 1},
	}
}

func (ts *testServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	host, _, _ := net.SplitHostPort(c.Conn().RemoteAddr().String())
	return &testSession{ts: ts, src: host}, nil
}

// testSession is one session of the test server.
type testSession struct {
	// ts is the server.
	ts *testServer
	// authed is set by a successful login.
	authed bool
	// src is the client's address.
	src string
}

func (s *testSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *testSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		s.ts.mu.Lock()
		defer s.ts.mu.Unlock()
		ok := pass == testPassword && strings.HasSuffix(user, "@test.server")
		s.ts.auths = append(s.ts.auths, testLogin{user: user, src: s.src, ok: ok})
		if !ok {
			s.ts.authFailed++
			return smtp.ErrAuthFailed
		}
		s.ts.authOK++
		s.authed = true
		if d := s.ts.opts.authDelay; d > 0 {
			s.ts.mu.Unlock()
			time.Sleep(d)
			s.ts.mu.Lock()
		}
		return nil
	}), nil
}

func (s *testSession) Mail(string, *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	return nil
}

func (s *testSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

func (s *testSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if s.ts.opts.onData != nil {
		s.ts.opts.onData()
	}
	s.ts.mu.Lock()
	defer s.ts.mu.Unlock()
	s.ts.data++
	if n := s.ts.opts.failEvery; n > 0 && s.ts.data%n == 0 {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	s.ts.accepted++
	return nil
}

func (s *testSession) Reset() {}

func (s *testSession) Logout() error { return nil }

// runCLI runs submitd-bench with args and returns its result and the JSON
// line it wrote.
func runCLI(t *testing.T, args ...string) (*result, *result) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.jsonl")
	var out strings.Builder
	res, err := run(context.Background(), append(args, "-json", path, "-tag", "w=T", "-tag", "srv=test"), &out)
	if err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, out.String())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines, err := readResults(f)
	if err != nil || len(lines) != 1 {
		t.Fatalf("JSON lines: %v, %v", lines, err)
	}
	t.Logf("%s", out.String())
	return res, lines[0]
}

func TestSendCountsMessagesAndErrors(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		for _, pipelining := range []string{"true", "false"} {
			name := "starttls"
			if implicit {
				name = "implicit"
			}
			t.Run(name+"/pipelining="+pipelining, func(t *testing.T) {
				ts := startTestServer(t, testServerOptions{failEvery: 3, implicitTLS: implicit})
				sec := map[bool]string{false: "starttls", true: "implicit"}[implicit]
				res, line := runCLI(t, "-addr", ts.addr, "-tls", sec, "-pipelining="+pipelining,
					"-c", "3", "-n", "30", "-duration", "1m", "-accounts", "3", "-user", "user%d@test.server",
					"-password", testPassword, "-size", "2000", "-src", "127.0.0.1", "-pid", strconv.Itoa(os.Getpid()))
				data, accepted, authOK, _ := ts.counts()
				if data != 30 || accepted != 20 {
					t.Fatalf("server saw %d messages and accepted %d, want 30 and 20", data, accepted)
				}
				if res.OK != accepted || res.Errors["451 4.3.0"] != 10 || len(res.Errors) != 1 {
					t.Errorf("counted %d accepted, errors %v; want %d and 10×451 4.3.0", res.OK, res.Errors, accepted)
				}
				if authOK != 3 || res.Setup.N != 3 {
					t.Errorf("%d logins, %d setups recorded; want one per connection, 3", authOK, res.Setup.N)
				}
				if res.Latency.N != 20 || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
					t.Errorf("latency %+v", res.Latency)
				}
				if want := float64(20*2000) / 1e6 / res.Seconds; res.MBPerSec < want*0.99 || res.MBPerSec > want*1.01 {
					t.Errorf("MB/s = %v, want %v", res.MBPerSec, want)
				}
				if res.Server == nil || res.Server.Procs != 1 || res.Server.PeakRSSKiB <= 0 {
					t.Errorf("server figures %+v", res.Server)
				}
				if line.OK != res.OK || line.Tags["w"] != "T" || line.Errors["451 4.3.0"] != 10 {
					t.Errorf("JSON line %+v does not match the result", line)
				}
			})
		}
	}
}

func TestNewConnectionPerMessage(t *testing.T) {
	ts := startTestServer(t, testServerOptions{})
	res, _ := runCLI(t, "-addr", ts.addr, "-k", "1", "-c", "2", "-n", "10", "-user", "user%d@test.server",
		"-password", testPassword, "-sources", "4", "-src", "127.1.0.1")
	_, accepted, authOK, _ := ts.counts()
	if accepted != 10 || res.OK != 10 || authOK != 10 || res.Setup.N != 10 {
		t.Errorf("accepted %d, counted %d, %d logins, %d setups; want 10 each", accepted, res.OK, authOK, res.Setup.N)
	}
}

func TestWrongPasswordCountsAsSetupError(t *testing.T) {
	ts := startTestServer(t, testServerOptions{})
	cfg := ts.sendConfig(2)
	cfg.accts.password = "wrong"
	l := &sendLoad{cfg: cfg, clk: realClock{}, msgs: newRecorder(), setup: newRecorder()}
	l.run(context.Background(), func() ticket {
		return closedTickets(&closedLoop{end: time.Now().Add(time.Minute), limit: 4}, realClock{})
	})
	if n := l.setup.errors()["535 5.7.8"]; n < 4 {
		t.Errorf("setup errors %v, want each login to count as 535 5.7.8", l.setup.errors())
	}
	if l.msgs.count() != 0 || l.msgs.errors()["no connection (see setup errors)"] != 4 {
		t.Errorf("messages: %d ok, errors %v", l.msgs.count(), l.msgs.errors())
	}
}

func TestFloodAndProbes(t *testing.T) {
	ts := startTestServer(t, testServerOptions{})
	res, _ := runCLI(t, "-mode", "flood", "-addr", ts.addr, "-c", "4", "-sources", "10", "-src", "127.5.0.1",
		"-accounts", "5", "-user", "user%d@test.server", "-password", testPassword,
		"-probe-user", "probe%d@test.server", "-probe-accounts", "5",
		"-probe-every", "10ms", "-probe-src", "127.9.0.1", "-owner-new-src", "127.10.0.1", "-duration", "400ms", "-strict")
	_, _, authOK, authFailed := ts.counts()
	if res.OK == 0 || res.OK > authFailed || len(res.Errors) != 0 {
		t.Errorf("counted %d rejected wrong passwords (server: %d), errors %v", res.OK, authFailed, res.Errors)
	}
	sets := []*loginResult{res.Cached, res.Uncached, res.OwnerTrusted, res.OwnerNew}
	probes := 0
	for i, l := range sets {
		if l == nil || l.Latency.N == 0 || len(l.Errors) != 0 {
			t.Errorf("probe set %d: %+v", i, l)
			continue
		}
		probes += l.Latency.N
	}
	// Each try of the owner from a new network comes from a network of
	// its own: a success would have made the one before known.
	seen := map[string]bool{}
	for _, l := range ts.logins() {
		if strings.HasPrefix(l.src, "127.10.") {
			network := l.src[:strings.LastIndex(l.src, ".")]
			if seen[network] {
				t.Errorf("the owner tried %s.0/24 twice", network)
			}
			seen[network] = true
		}
	}
	if len(seen) != res.OwnerNew.Latency.N {
		t.Errorf("%d new networks for %d tries", len(seen), res.OwnerNew.Latency.N)
	}
	// Two warm-up logins, of the cached account and of the flooded
	// owner, come before the timed ones.
	if probes+2 != authOK {
		t.Errorf("%d probe logins counted, server accepted %d", probes, authOK)
	}
	logins := ts.logins()
	for _, l := range logins[:2] {
		if l.user != "probe0@test.server" && l.user != "user0@test.server" {
			t.Errorf("warm-up login of %s, want the cached account and the flooded owner", l.user)
		}
	}
	for _, l := range logins {
		switch {
		case l.ok && strings.HasPrefix(l.user, "user") && l.user != "user0@test.server":
			t.Errorf("a right password for %s, a flooded account other than the owner's", l.user)
		case l.ok && l.user == "user0@test.server" && !strings.HasPrefix(l.src, "127.9.0.") && !strings.HasPrefix(l.src, "127.10."):
			t.Errorf("the owner logged in from %s, neither its trusted network nor a new one", l.src)
		case !l.ok && strings.HasPrefix(l.user, "probe"):
			t.Errorf("a wrong password for %s, an account the flood must leave alone", l.user)
		}
	}
}

func TestStrictNamesUnexpectedReplies(t *testing.T) {
	// Every third message gets 451 4.3.0, as a sending limit would give
	// once a benchmark account runs into it: -strict fails the run and
	// names the reply and its count; -expect makes it part of the workload.
	ts := startTestServer(t, testServerOptions{failEvery: 3})
	args := []string{"-addr", ts.addr, "-c", "1", "-n", "9", "-duration", "1m", "-user", "user%d@test.server",
		"-password", testPassword, "-src", "127.0.0.1", "-strict"}
	var out strings.Builder
	res, err := run(context.Background(), args, &out)
	if !errors.Is(err, errFaults) || !strings.Contains(err.Error(), `unexpected replies: errors "451 4.3.0"×3`) {
		t.Errorf("err = %v, want the run failed naming 3×451 4.3.0", err)
	}
	if res == nil || res.OK != 6 || res.Unexpected["errors"]["451 4.3.0"] != 3 {
		t.Errorf("result %+v: want the 6 accepted messages counted and the 3 refusals unexpected", res)
	}
	if _, err := run(context.Background(), append(args, "-expect", "451 4.3.0"), io.Discard); err != nil {
		t.Errorf("with -expect 451 4.3.0: %v", err)
	}
	// Without -strict the run succeeds and says what was unexpected.
	out.Reset()
	if _, err := run(context.Background(), args[:len(args)-1], &out); err != nil || !strings.Contains(out.String(), `"451 4.3.0"×3`) {
		t.Errorf("without -strict: err %v, output %q", err, out.String())
	}
}

func TestStrictNamesMissingFigures(t *testing.T) {
	// The idle workload against an address where every login fails holds
	// no session: there is no memory figure, which -strict reports.
	ts := startTestServer(t, testServerOptions{})
	_, err := run(context.Background(), []string{"-mode", "idle", "-addr", ts.addr, "-c", "2", "-duration", "0s",
		"-user", "user%d@test.server", "-password", "wrong", "-src", "127.0.0.1", "-expect", "535 5.7.8", "-strict"}, io.Discard)
	if !errors.Is(err, errFaults) || !strings.Contains(err.Error(), "missing: no session held, 0 of 2 sessions held") {
		t.Errorf("err = %v, want the missing sessions named", err)
	}
}

func TestProbesDoNotWaitForSlowLogins(t *testing.T) {
	// Logins take 200 ms and one starts every 10 ms: legitimate users keep
	// coming while the server is slow, so the probes overlap, from
	// several addresses, instead of queueing behind each other (which
	// would give about two in 400 ms).
	ts := startTestServer(t, testServerOptions{authDelay: 200 * time.Millisecond})
	res, _ := runCLI(t, "-mode", "flood", "-addr", ts.addr, "-c", "1", "-src", "127.5.0.1",
		"-accounts", "50", "-user", "user%d@test.server", "-password", testPassword, "-probe-user", "probe%d@test.server",
		"-probe-every", "10ms", "-probe-src", "127.9.0.1", "-duration", "400ms")
	if n := res.Cached.Latency.N + res.Uncached.Latency.N + res.OwnerTrusted.Latency.N + res.OwnerNew.Latency.N; n < 8 {
		t.Errorf("%d probe logins in 400 ms of 200 ms logins: they waited for each other", n)
	}
	if res.Cached.Latency.P50 < 200 {
		t.Errorf("cached login p50 %v ms, below the server's 200 ms", res.Cached.Latency.P50)
	}
}

func TestRefused(t *testing.T) {
	blocked := netip.MustParseAddr("127.8.0.1")
	ts := startTestServer(t, testServerOptions{refuse: blocked})
	res, _ := runCLI(t, "-mode", "refused", "-addr", ts.addr, "-c", "2", "-blocked-src", "127.8.0.1", "-duration", "200ms")
	if res.OK == 0 || len(res.Errors) != 0 {
		t.Errorf("refusals %d, errors %v", res.OK, res.Errors)
	}
	// A server that lets the address in gets its 220s counted as errors.
	open := startTestServer(t, testServerOptions{})
	rec := runRefused(context.Background(), open.sendConfig(1).dial, net.ParseIP("127.8.0.2"), 1, time.Now().Add(100*time.Millisecond))
	if rec.count() != 0 || rec.errors()["220"] == 0 {
		t.Errorf("against an open server: %d refusals, errors %v", rec.count(), rec.errors())
	}
	// preblock gives up when failed logins do not lead to a block.
	_, err := preblock(context.Background(), open.sendConfig(1).dial, net.ParseIP("127.8.0.3"), "u@test.server", "p", 5)
	if err == nil || !strings.Contains(err.Error(), "not refused") {
		t.Errorf("preblock against a server that never blocks: %v", err)
	}
}

func TestIdleSessions(t *testing.T) {
	ts := startTestServer(t, testServerOptions{})
	defer func(d time.Duration) { idleSettle = d }(idleSettle)
	idleSettle = 0
	var logins []int
	ir := runIdle(context.Background(), ts.sendConfig(0), 12, 4, 0, func(int) {
		_, _, authOK, _ := ts.counts()
		logins = append(logins, authOK)
	})
	if ir.half != 6 || ir.open != 12 || len(logins) != 2 || logins[0] != 6 || logins[1] != 12 {
		t.Errorf("%d then %d sessions held, logins at the two measurements %v; want 6 and 12", ir.half, ir.open, logins)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-mode", "nope"}, {"-tls", "ssl"}, {"-c", "0"}, {"-size", "10"}, {"-pid", "x"}, {"-src", "nohost"}, {"extra"},
		{"-mode", "idle", "-scan-metrics", "http://127.0.0.1:8025/metrics"}} {
		_, err := run(context.Background(), args, io.Discard)
		if !errors.Is(err, errUsage) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}
