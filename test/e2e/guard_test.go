package e2e

import (
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"submitd/internal/testutil"
)

// The tests in this file drive the brute-force guard of the built binary
// (SPEC R11, R11a, R11b) with swaks and raw SMTP over loopback.

// guardRefusal is the refusal of SPEC R11 with SID standing for the session id.
func guardRefusal(ip string) string {
	return "554 5.1.0 SID Connection refused from " + ip + ". Too many authorization failures from this IP, try again later."
}

// guardReply finds a server reply in a swaks transcript, whether swaks
// marks it as a reply ("<~ "), an error ("<~* ") or a refused banner
// ("<** "), and returns the session id in it.
func guardReply(t *testing.T, transcript, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^<[~*]* +` + strings.Replace(regexp.QuoteMeta(pattern), "SID", `([A-Za-z0-9]{22})`, 1) + `\r?$`)
	m := re.FindStringSubmatch(transcript)
	if m == nil {
		t.Fatalf("no server reply %q in transcript:\n%s", pattern, transcript)
	}
	if len(m) < 2 {
		return ""
	}
	return m[1]
}

// guardExpectRefused checks the exact refusal line, before any command, then the
// close (SPEC R11).
func guardExpectRefused(t *testing.T, addr, ip string, prefix []byte, implicit bool) {
	t.Helper()
	c := dialRaw(t, addr, "", prefix, implicit)
	l := c.line()
	want := regexp.MustCompile("^" + strings.Replace(regexp.QuoteMeta(guardRefusal(ip)), "SID", "[A-Za-z0-9]{22}", 1) + "\r\n$")
	if !want.MatchString(l) {
		t.Fatalf("refusal line %q, want %q + CRLF", l, guardRefusal(ip))
	}
	c.closed()
}

// TestGuardSwaks: ten wrong passwords from swaks block the client; the
// eleventh connection is refused with the exact reply, also after a crash
// and restart; "submitd blocked" shows why; "submitd unblock" lifts the block
// on the running server (SPEC R11, R11a).
func TestGuardSwaks(t *testing.T) {
	s := newServer(t, "")
	s.setupFirma()
	s.start()
	base := []string{"--server", s.sub, "--tls", "--from", "jan@firma.cz", "--to", "eva@example.org", "--quit-after", "AUTH"}
	var sids []string
	for range 10 {
		out := swaks(t, append(base, "--auth", "PLAIN", "--auth-user", "jan@firma.cz", "--auth-password", "wrong")...)
		sids = append(sids, guardReply(t, out, "535 5.1.0 SID authentication failed"))
	}
	out := swaks(t, base...)
	guardReply(t, out, guardRefusal("127.0.0.1"))
	guardExpectRefused(t, s.smtp, "127.0.0.1", nil, false)
	guardExpectRefused(t, s.subs, "127.0.0.1", nil, true)

	list := s.mustCLI("", "blocked")
	fields := strings.Split(strings.TrimSuffix(list, "\n"), "\t")
	if strings.Count(list, "\n") != 1 || len(fields) != 5 || fields[0] != "127.0.0.1" || fields[1] != "10" ||
		fields[4] != strings.Join(sids, ",") {
		t.Fatalf("submitd blocked:\n%s\nwant 127.0.0.1, 10 failures, sessions %s", list, strings.Join(sids, ","))
	}
	since, err1 := time.Parse(time.RFC3339, fields[2])
	until, err2 := time.Parse(time.RFC3339, fields[3])
	if err1 != nil || err2 != nil || until.Sub(since) != time.Hour || !strings.HasSuffix(fields[2], "Z") {
		t.Fatalf("blocked since %q until %q: want RFC 3339 UTC one hour apart", fields[2], fields[3])
	}
	// The session ids lead to the failures.
	if rec := sessionRecord(t, s, sids[9]); !strings.Contains(rec, "authentication failed") || !strings.Contains(rec, "127.0.0.1") {
		t.Fatalf("submitd session %s:\n%s", sids[9], rec)
	}

	// A crash and restart keep the block.
	s.kill()
	s.start()
	guardReply(t, swaks(t, base...), guardRefusal("127.0.0.1"))

	// A typo is a usage error that names the argument and changes nothing.
	if _, errOut, code := s.cli("", "unblock", "127.0.0.256"); code != 2 || !strings.Contains(errOut, `"127.0.0.256" is not an IP address`) {
		t.Fatalf("submitd unblock 127.0.0.256: exit %d, %q", code, errOut)
	}
	guardExpectRefused(t, s.sub, "127.0.0.1", nil, false)

	// Unblock while the server runs: it notices without a restart.
	start := time.Now()
	if out := s.mustCLI("", "unblock", "127.0.0.1"); out != "unblocked 127.0.0.1\n" {
		t.Fatalf("submitd unblock: %q", out)
	}
	cliDone := time.Since(start)
	for {
		c := dialRaw(t, s.sub, "", nil, false)
		l := c.reply()
		c.nc.Close()
		if strings.HasPrefix(l, "220 ") {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("still refused 20 s after unblock: %q", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the running server served the client %s after \"submitd unblock\" started (the command itself ran %s)",
		time.Since(start).Round(time.Millisecond), cliDone.Round(time.Millisecond))
	out = swaks(t, append(base, "--auth", "PLAIN", "--auth-user", "jan@firma.cz", "--auth-password", e2ePassword)...)
	guardReply(t, out, "235 2.7.0 authentication successful")
	// The count was cleared too: nine more failures do not block.
	c := openRaw(t, s.subs, nil, true)
	for range 9 {
		if got := c.cmd(authPlain("jan@firma.cz", "wrong")); !strings.HasPrefix(got, "535 ") {
			t.Fatalf("AUTH: %q", got)
		}
	}
	if got := c.cmd(authPlain("jan@firma.cz", e2ePassword)); !strings.HasPrefix(got, "235 ") {
		t.Fatalf("unblock did not clear the failure count: %q", got)
	}
	if got := s.mustCLI("", "blocked"); got != "" {
		t.Fatalf("submitd blocked after unblock: %q", got)
	}
	if got := s.mustCLI("", "blocked", "-all"); !strings.HasPrefix(got, "127.0.0.1\t9\t-\t-\t") {
		t.Fatalf("submitd blocked -all: %q, want 127.0.0.1 with 9 failures", got)
	}
}

// guardProxyV2 is a PROXY protocol v2 header for a TCP client at src.
func guardProxyV2(t *testing.T, src string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2,
		net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 40000)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:25")))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGuardProxyProtocol: behind a trusted proxy the client address of a v1
// or v2 PROXY header is what is blocked, refused by name, recorded and put
// into Received:; the proxy itself stays free; a PROXY header from an
// untrusted address is refused (SPEC R11b).
func TestGuardProxyProtocol(t *testing.T) {
	s := newServer(t, `[listener.smtp]
proxy_protocol = true
allow_plaintext_auth = true
[guard]
max_failures = 3
trusted_proxies = ["127.0.0.1/32"]
`)
	s.setupFirma()
	s.start()
	v1 := func(src string) []byte { return []byte("PROXY TCP4 " + src + " 127.0.0.1 5555 25\r\n") }
	session := func(prefix []byte) *rawConn { return openRaw(t, s.smtp, prefix, false) }

	c := session(v1("203.0.113.7"))
	c.cmd(authPlain("jan@firma.cz", "wrong"))
	c.cmd(authPlain("jan@firma.cz", "wrong"))
	c = session(guardProxyV2(t, "203.0.113.7"))
	if got := c.cmd(authPlain("jan@firma.cz", "wrong")); !strings.HasPrefix(got, "535 5.1.0 ") {
		t.Fatalf("third failure: %q", got)
	}
	c.closed()
	guardExpectRefused(t, s.smtp, "203.0.113.7", v1("203.0.113.7"), false)
	guardExpectRefused(t, s.smtp, "203.0.113.7", guardProxyV2(t, "203.0.113.7"), false)
	if got := s.mustCLI("", "blocked"); !strings.HasPrefix(got, "203.0.113.7\t3\t") {
		t.Fatalf("submitd blocked: %q, want 203.0.113.7 with 3 failures", got)
	}

	// Another client behind the proxy sends mail; its address, not the
	// proxy's, is in the session record and the Received: header.
	c = session(guardProxyV2(t, "198.51.100.1"))
	if got := c.cmd(authPlain("jan@firma.cz", e2ePassword)); !strings.HasPrefix(got, "235 ") {
		t.Fatalf("AUTH through the proxy: %q", got)
	}
	c.cmd("MAIL FROM:<jan@firma.cz>")
	c.cmd("RCPT TO:<eva@example.org>")
	c.cmd("DATA")
	m := regexp.MustCompile(`^250 2\.0\.0 ([A-Za-z0-9]{22}) queued as (\S+)$`).FindStringSubmatch(
		c.cmd("From: jan@firma.cz\r\nSubject: proxied\r\n\r\nhello\r\n."))
	if m == nil {
		t.Fatal("message through the proxy not queued")
	}
	msg, err := os.ReadFile(s.spoolFile(m[2]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg), "([198.51.100.1])") {
		t.Fatalf("Received: does not name the proxied client:\n%s", msg)
	}
	c.cmd("QUIT")
	var rec string
	testutil.WaitFor(t, 5*time.Second, "the session record of "+m[1], func() bool {
		var code int
		rec, _, code = s.cli("", "session", m[1])
		return code == 0
	})
	if !strings.Contains(rec, "198.51.100.1 port 40000") {
		t.Fatalf("session record does not name the proxied client:\n%s", rec)
	}

	// The proxy's own address is not blocked on a listener without PROXY.
	if g := dialRaw(t, s.sub, "", nil, false).reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("the proxy address was blocked: %q", g)
	}
	// 127.0.0.2 is not a trusted proxy: its PROXY header is refused.
	for _, hdr := range [][]byte{v1("198.51.100.2"), guardProxyV2(t, "198.51.100.2")} {
		dialRaw(t, s.smtp, "127.0.0.2", hdr, false).closed()
	}
}
