package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"submitd/internal/guard"
	"submitd/internal/password"
	"submitd/internal/testutil"
)

// The tests here run the real Server with the real guard (SPEC R11, R11a,
// R11b) on loopback (newTestEnv with withGuard); the guard's clock is faked
// so a block can be watched running out without waiting an hour.

// blockedLine is the refusal of SPEC R11 with the session id left as SID.
func blockedLine(ip string) string {
	return "554 5.1.0 SID Connection refused from " + ip + ". Too many authorization failures from this IP, try again later."
}

// expectRefused checks that a new connection gets exactly the refusal of
// SPEC R11, before any command, and is then closed.
func (e *testEnv) expectRefused(listener, ip string, prefix []byte) {
	e.t.Helper()
	c := e.dialFrom(listener, "", prefix)
	line, err := c.r.ReadString('\n')
	if err != nil {
		e.t.Fatalf("reading refusal: %v (got %q)", err, line)
	}
	if !strings.HasSuffix(line, "\r\n") {
		e.t.Fatalf("refusal %q does not end in CRLF", line)
	}
	matchSID(e.t, strings.TrimSuffix(line, "\r\n"), blockedLine(ip))
	expectClosed(e.t, c)
}

// expectClosed checks that the server has closed c, sending nothing more.
func expectClosed(tb testing.TB, c *client) {
	tb.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.r)
	if len(rest) > 0 || (err != nil && !isReset(err)) {
		tb.Fatalf("connection not closed: read %q, %v", rest, err)
	}
}

// isReset reports a connection reset: the server closing with unread input
// resets instead of a clean close, which is still closed.
func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && strings.Contains(oe.Err.Error(), "reset")
}

// TestGuardBlocks: nine failures of every kind and then a success leave the
// client free; the tenth failure gets its normal reply and then the
// connection closes; new connections on every listener are refused with the
// exact reply before the greeting; the block runs out after an hour (SPEC
// R11, R11a).
func TestGuardBlocks(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{}))
	c := e.session("plain", nil)
	matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
	matchSID(t, c.cmd(plain("nikdo@firma.cz", testPassword)), "535 5.1.0 SID authentication rejected")
	matchSID(t, c.cmd(plain("zakazany@firma.cz", testPassword)), "535 5.1.0 SID authentication rejected access disabled")
	matchSID(t, c.cmd("AUTH PLAIN "+b64("no-nuls-here")), "501 5.5.2 SID malformed AUTH response")
	c.expect("AUTH LOGIN", "334 ")
	c.expect(b64("jan@firma.cz"), "334 ")
	matchSID(t, c.cmd(b64("wrong")), "535 5.1.0 SID authentication failed")
	// A cancelled exchange counts when the next command comes.
	c.expect("AUTH LOGIN", "334 ")
	c.expect("*", "501 ")
	c.send("QUIT")
	c.conn.Close()

	c = e.session("plain", nil)
	for range 3 {
		matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
	}
	// Nine failures so far. A success does not reset the count (SPEC R11:
	// an office behind one NAT address shares it with the guesser).
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	if st := e.guard.Stats(); st.Failures != 9 || st.Blocks != 0 {
		t.Fatalf("after 9 failures and a success: %+v", st)
	}
	// Wait for the reply: a QUIT still unread when the block below starts
	// would be refused, and counted as a refusal of its own.
	c.expect("QUIT", "221 ")

	c = e.session("plain", nil)
	matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
	expectClosed(t, c)

	e.expectRefused("plain", "127.0.0.1", nil)
	e.expectRefused("submissions", "127.0.0.1", nil)

	e.clock.Advance(time.Hour - time.Second)
	e.expectRefused("plain", "127.0.0.1", nil)
	e.clock.Advance(time.Second)
	c = e.session("plain", nil)
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	if st := e.guard.Stats(); st.Refusals != 3 || st.Blocks != 1 {
		t.Fatalf("stats = %+v, want 3 refusals and 1 block", st)
	}
}

// TestGuardTwoSessions: a burst of failures spread over two open connections
// from one IP blocks both: the one that fails the tenth time is closed after
// its 535, the other gets the exact refusal at its next command and is closed
// (SPEC R11).
func TestGuardTwoSessions(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{}))
	a, b := e.session("plain", nil), e.session("plain", nil)
	for i := 1; i <= 10; i++ {
		c := a
		if i%2 == 0 {
			c = b
		}
		matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
	}
	expectClosed(t, b)
	matchSID(t, a.cmd(plain("jan@firma.cz", testPassword)), blockedLine("127.0.0.1"))
	expectClosed(t, a)

	// The same holds for MAIL in a session that had logged in before.
	e.clock.Advance(time.Hour)
	a, b = e.session("plain", nil), e.session("plain", nil)
	a.expect(plain("jan@firma.cz", testPassword), "235 ")
	for range 10 {
		b.send(plain("jan@firma.cz", "wrong"))
		if strings.HasPrefix(b.last(), "554 ") {
			break
		}
	}
	matchSID(t, a.cmd("MAIL FROM:<jan@firma.cz>"), blockedLine("127.0.0.1"))
	expectClosed(t, a)

	// And for commands the protocol library answers itself, inside TLS too.
	for _, cmd := range []string{"NOOP", "RSET", "EHLO again.example", "VRFY jan"} {
		e.clock.Advance(time.Hour)
		a, b = e.session("submissions", nil), e.session("plain", nil)
		for range 10 {
			b.send(plain("jan@firma.cz", "wrong"))
			if strings.HasPrefix(b.last(), "554 ") {
				break
			}
		}
		matchSID(t, a.cmd(cmd), blockedLine("127.0.0.1"))
		expectClosed(t, a)
	}
}

// TestGuardExempt: an exempt network is never blocked (SPEC R11a).
func TestGuardExempt(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}))
	c := e.session("plain", nil)
	for range 15 {
		matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
	}
	c.expect(plain("jan@firma.cz", testPassword), "235 ")
	e.session("plain", nil).expect(plain("jan@firma.cz", testPassword), "235 ")
	if st := e.guard.Stats(); st.ExemptFailures != 15 || st.Failures != 0 {
		t.Fatalf("stats = %+v, want 15 exempt failures and none counted", st)
	}
}

// TestGuardUnblock: lifting a block with the guard takes effect on the next
// connection.
func TestGuardUnblock(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 2}))
	c := e.session("plain", nil)
	c.cmd(plain("jan@firma.cz", "wrong"))
	c.cmd(plain("jan@firma.cz", "wrong"))
	e.expectRefused("plain", "127.0.0.1", nil)
	if _, err := e.guard.Unblock(context.Background(), netip.MustParsePrefix("127.0.0.0/8")); err != nil {
		t.Fatal(err)
	}
	e.session("plain", nil).expect(plain("jan@firma.cz", testPassword), "235 ")
}

// proxyV1 is a PROXY protocol v1 header for a TCP client at src.
func proxyV1(src string) []byte {
	ip := netip.MustParseAddr(src)
	fam, dst := "TCP4", "127.0.0.1"
	if ip.Is6() {
		fam, dst = "TCP6", "::1"
	}
	return []byte("PROXY " + fam + " " + src + " " + dst + " 5555 25\r\n")
}

// proxyV2 is a PROXY protocol v2 header for a TCP client at src, made by
// go-proxyproto.
func proxyV2(tb testing.TB, src string) []byte {
	tb.Helper()
	ip := netip.MustParseAddr(src)
	dst := netip.MustParseAddr("127.0.0.1")
	if ip.Is6() {
		dst = netip.IPv6Loopback()
	}
	h := proxyproto.HeaderProxyFromAddrs(2,
		net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 40000)),
		net.TCPAddrFromAddrPort(netip.AddrPortFrom(dst, 587)))
	b, err := h.Format()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestGuardProxy: behind a trusted proxy the client address of the PROXY
// header (v1 or v2) is what is counted, blocked, named in the refusal and
// recorded; the proxy's own address stays free (SPEC R11b).
func TestGuardProxy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header func(src string) []byte
	}{
		{"v1", proxyV1},
		{"v2", func(src string) []byte { return proxyV2(t, src) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, withGuard(guard.Config{}), withProxy("127.0.0.1/32"))
			client := "203.0.113.7"
			c := e.session("proxied", tc.header(client))
			sid := matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
			for range 8 {
				c.cmd(plain("jan@firma.cz", "wrong"))
			}
			c.send("QUIT")
			c.conn.Close()
			if rec := e.waitRecord(sid); rec.ClientIP != client || rec.ClientPort != 5555 && rec.ClientPort != 40000 {
				t.Errorf("session record client = %s port %d, want %s", rec.ClientIP, rec.ClientPort, client)
			}
			c = e.session("proxied", tc.header(client))
			c.cmd(plain("jan@firma.cz", "wrong"))
			expectClosed(t, c)

			e.expectRefused("proxied", client, tc.header(client))
			// Another client behind the same proxy, and the proxy itself on
			// a listener without PROXY protocol, are not blocked.
			e.session("proxied", tc.header("203.0.113.8")).expect(plain("jan@firma.cz", testPassword), "235 ")
			e.session("plain", nil).expect(plain("jan@firma.cz", testPassword), "235 ")
			if got := e.guard.List(); len(got) != 1 || guard.FormatKey(got[0].Key) != client {
				t.Errorf("guard entries = %+v, want only %s", got, client)
			}
		})
	}
}

// TestGuardProxyIPv6: IPv6 clients reported by the proxy are counted by /64,
// and the refusal names the client's full address (SPEC R11).
func TestGuardProxyIPv6(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{}), withProxy("127.0.0.1/32"))
	first, second := "2001:db8:1:2::10", "2001:db8:1:2:aaaa:bbbb:cccc:dddd"
	other := "2001:db8:1:3::10"
	c := e.session("proxied", proxyV1(first))
	for range 5 {
		c.cmd(plain("jan@firma.cz", "wrong"))
	}
	c = e.session("proxied", proxyV2(t, other))
	for range 5 {
		c.cmd(plain("jan@firma.cz", "wrong"))
	}
	c = e.session("proxied", proxyV2(t, second))
	for range 4 {
		c.cmd(plain("jan@firma.cz", "wrong"))
	}
	matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
	expectClosed(t, c)
	e.expectRefused("proxied", first, proxyV1(first))
	e.expectRefused("proxied", "2001:db8:1:2::99", proxyV2(t, "2001:db8:1:2::99"))
	e.session("proxied", proxyV1(other)).expect(plain("jan@firma.cz", testPassword), "235 ")
}

// TestProxyRefused: a PROXY listener closes connections from addresses that
// are not trusted proxies, and connections from a trusted proxy that do not
// start with a valid header (SPEC R11b).
func TestProxyRefused(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{}), withProxy("127.0.0.2/32"))
	for _, tc := range []struct {
		name, local string
		prefix      []byte
	}{
		{"v1 from untrusted", "127.0.0.1", proxyV1("203.0.113.7")},
		{"v2 from untrusted", "127.0.0.3", proxyV2(t, "203.0.113.7")},
		{"no header from untrusted", "127.0.0.1", []byte("EHLO client.example\r\n")},
		{"no header from trusted", "127.0.0.2", []byte("EHLO client.example\r\n")},
		{"garbage header from trusted", "127.0.0.2", []byte("PROXY TCP4 nonsense\r\n")},
		{"UDP source from trusted", "127.0.0.2", guardProxyUDP(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dialFrom("proxied", tc.local, tc.prefix)
			expectClosed(t, c)
		})
	}
	if st := e.guard.Stats(); st.Failures != 0 {
		t.Errorf("refused PROXY connections counted as AUTH failures: %+v", st)
	}
	// The trusted proxy with a header is served.
	c := e.dialFrom("proxied", "127.0.0.2", proxyV1("203.0.113.7"))
	if g := c.last(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting through trusted proxy: %q", g)
	}
}

// TestProxyLocal: a v2 LOCAL header (a balancer's health check) and a v1
// "PROXY UNKNOWN" header are the proxy's own connections; the PROXY protocol
// specification has the receiver use the real addresses, so they are served
// as coming from the proxy.
func TestProxyLocal(t *testing.T) {
	e := newTestEnv(t, withGuard(guard.Config{}), withProxy("127.0.0.1/32"))
	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	for _, hdr := range [][]byte{local, []byte("PROXY UNKNOWN\r\n")} {
		c := e.session("proxied", hdr)
		sid := matchSID(t, c.cmd(plain("jan@firma.cz", "wrong")), "535 5.1.0 SID authentication failed")
		c.send("QUIT")
		c.conn.Close()
		if rec := e.waitRecord(sid); rec.ClientIP != "127.0.0.1" {
			t.Errorf("client of a LOCAL connection = %s, want the proxy 127.0.0.1", rec.ClientIP)
		}
	}
}

// guardProxyUDP is a v2 header for a UDP client, which SMTP cannot have.
func guardProxyUDP(tb testing.TB) []byte {
	h := proxyproto.HeaderProxyFromAddrs(2, &net.UDPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 2})
	b, err := h.Format()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkRefusal measures the refusal path: a blocked client connects and
// reads the 554 line, over loopback TCP.
func BenchmarkRefusal(b *testing.B) {
	e := newTestEnv(b, withGuard(guard.Config{MaxFailures: 1}))
	c := e.session("plain", nil)
	c.cmd(plain("jan@firma.cz", "wrong"))
	want := "554 5.1.0 "
	buf := make([]byte, 256)
	b.ResetTimer()
	for range b.N {
		nc, err := net.Dial("tcp", e.addrs["plain"])
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.ReadAtLeast(nc, buf, len(want))
		if err != nil || string(buf[:len(want)]) != want {
			b.Fatalf("read %q, %v", buf[:n], err)
		}
		nc.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}

// BenchmarkAuthFailure measures one failed AUTH PLAIN in an open session,
// guard write to SQLite included; the limit is set high so it never blocks.
func BenchmarkAuthFailure(b *testing.B) {
	for _, bc := range []struct{ name, login string }{
		{"unknown-login", "nikdo@firma.cz"},
		{"wrong-password", "jan@firma.cz"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newTestEnv(b, withGuard(guard.Config{MaxFailures: 1 << 30}))
			c := e.session("plain", nil)
			cmd := plain(bc.login, "wrong")
			b.ResetTimer()
			for range b.N {
				if got := c.cmd(cmd); !strings.HasPrefix(got, "535 ") {
					b.Fatal(got)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "failures/s")
		})
	}
}

// gatedVerify is a password check that counts its calls and waits for gate
// to be closed before it answers, so a test can hold many checks in flight
// at once. The password pass, when set, is checked at once and not counted:
// it is the customer's, whose login a test puts in the credential cache.
type gatedVerify struct {
	mu    sync.Mutex
	calls int
	gate  chan struct{}
	pass  string
}

func (g *gatedVerify) verify(hash, pw string) (bool, error) {
	if g.pass != "" && pw == g.pass {
		return password.Verify(hash, pw)
	}
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	<-g.gate
	return password.Verify(hash, pw)
}

func (g *gatedVerify) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

// TestParallelAuthBounded: however many AUTH attempts from one IP run at
// once, at most max_failures passwords are checked (SPEC R11). Attempts past
// the limit get the blocked reply unchecked, and the right password sent
// while the limit is taken by attempts in flight gets no 235 and its
// connection is closed, even when it is in the credential cache: a cache
// lookup tells a right password from a wrong one as a hash does.
func TestParallelAuthBounded(t *testing.T) {
	for _, cached := range []bool{false, true} {
		t.Run(fmt.Sprintf("cached=%v", cached), func(t *testing.T) {
			gv := &gatedVerify{gate: make(chan struct{})}
			if cached {
				gv.pass = testPassword
			}
			e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 10, Window: time.Hour, BlockFor: time.Hour}),
				withParallelChecks(gv.verify, cached))
			const n = 19
			clients := make([]*client, n+1)
			for i := range clients {
				clients[i] = e.open("smtp")
			}
			if cached {
				// The customer's login is checked once and remembered.
				e.login("smtp", "jan@firma.cz").cmd("QUIT")
			}
			replies := make(chan string, n)
			for _, c := range clients[:n] {
				go func() {
					c.send(plain("jan@firma.cz", "wrong"))
					l, err := c.r.ReadString('\n')
					if err != nil {
						l = "closed: " + err.Error()
					}
					replies <- strings.TrimRight(l, "\r\n")
				}()
			}
			// The checks that got a place are all in flight; the rest were
			// refused.
			testutil.WaitFor(t, 10*time.Second, "10 password checks in flight", func() bool { return gv.count() == 10 })
			for range n - 10 {
				matchSID(t, <-replies, blockedLine("127.0.0.1"))
			}
			// The right password now finds the key at its limit.
			right := clients[n]
			matchSID(t, right.cmd(plain("jan@firma.cz", testPassword)), blockedLine("127.0.0.1"))
			expectClosed(t, right)
			close(gv.gate)
			for range 10 {
				matchSID(t, <-replies, "535 5.1.0 SID authentication failed")
			}
			if got := gv.count(); got != 10 {
				t.Fatalf("%d passwords checked, want 10", got)
			}
			e.expectRefused("smtp", "127.0.0.1", nil)
		})
	}
}

// TestParallelAuthSuccessInsideLimit: a right password among wrong ones
// that run at once, inside the limit, logs in.
func TestParallelAuthSuccessInsideLimit(t *testing.T) {
	gv := &gatedVerify{gate: make(chan struct{})}
	e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 10, Window: time.Hour, BlockFor: time.Hour}),
		withParallelChecks(gv.verify, false))
	var wg sync.WaitGroup
	results := make([]string, 6)
	for i := range results {
		c := e.open("smtp")
		pw := "wrong"
		if i == 5 {
			pw = testPassword
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.send(plain("jan@firma.cz", pw))
			l, _ := c.r.ReadString('\n')
			results[i] = l
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "6 checks in flight", func() bool { return gv.count() == 6 })
	close(gv.gate)
	wg.Wait()
	if !strings.HasPrefix(results[5], "235 ") {
		t.Fatalf("right password inside the limit: %q", results[5])
	}
	for _, r := range results[:5] {
		if !strings.HasPrefix(r, "535 ") {
			t.Fatalf("wrong password: %q", r)
		}
	}
}

// TestCachedLoginNeedsNoPlace: a login answered from the credential cache
// hashes no password and takes no guard place (SPEC R11 bounds password
// checks), though it is refused once the key is at its limit
// (TestParallelAuthBounded): while nine wrong passwords from the same IP
// hold nine of its ten places, a customer whose login is cached gets in
// without a hash, the last place is still there for a tenth attempt, and
// the attempt after that is refused unchecked.
func TestCachedLoginNeedsNoPlace(t *testing.T) {
	gv := &gatedVerify{gate: make(chan struct{}), pass: testPassword}
	var opened sync.Once
	e := newTestEnv(t, withGuard(guard.Config{MaxFailures: 10, Window: time.Hour, BlockFor: time.Hour}),
		withParallelChecks(gv.verify, true))
	defer opened.Do(func() { close(gv.gate) })
	// The first login is checked and remembered.
	e.login("smtp", "jan@firma.cz")
	for i := range 9 {
		c := e.open("smtp")
		c.send(plain("eva@jina.cz", fmt.Sprintf("wrong-%d", i)))
	}
	testutil.WaitFor(t, 10*time.Second, "9 checks in flight", func() bool { return gv.count() == 9 })
	e.login("smtp", "jan@firma.cz")
	if got := e.guard.Stats().InFlight; got != 9 {
		t.Fatalf("%d attempts in flight after the cached login, want 9", got)
	}
	e.open("smtp").send(plain("eva@jina.cz", "wrong-9"))
	testutil.WaitFor(t, 10*time.Second, "the tenth check in flight", func() bool { return gv.count() == 10 })
	matchSID(t, e.open("smtp").cmd(plain("petr@příklad.cz", testPassword)), blockedLine("127.0.0.1"))
	opened.Do(func() { close(gv.gate) })
}
