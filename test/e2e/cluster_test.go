package e2e

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"submitd/internal/config"
	"submitd/internal/testutil"
)

// The tests in this file run two built "submitd serve" nodes behind a real
// HAProxy that passes the client address with the PROXY protocol v2, the way
// docs/cluster.md sets a cluster up. Clients connect to HAProxy from several
// loopback source addresses, so each node must see the client's address,
// not the balancer's.

// cluster is two submitd nodes behind one haproxy.
type cluster struct {
	t *testing.T
	// a and b are the nodes.
	a, b *server
	// both spreads connections over both nodes, round robin; toA and toB
	// reach one node each, so a test knows which node serves a connection.
	both, toA, toB string
	// stats is haproxy's stats socket.
	stats string
	// haproxy is the balancer's process.
	haproxy *proc
}

// clusterNode is the part of a node's config that puts it behind the
// balancer: the submission listener expects PROXY headers from 127.0.0.1,
// where haproxy connects from, and takes AUTH in plain text so that the raw
// client of these tests can speak to it. guard holds more [guard] keys and
// extra more tables (the shared stores).
func clusterNode(guard, extra string) string {
	return `[listener.submission]
proxy_protocol = true
allow_plaintext_auth = true
[guard]
trusted_proxies = ["127.0.0.1/32"]
` + guard + extra
}

// haproxyConfig is the balancer of docs/cluster.md, cut down to the
// submission port: every connection to a node starts with a PROXY v2
// header; the health check speaks SMTP (EHLO, expecting 250) and sends the
// header too, as a LOCAL one, since a node closes a connection without one.
const haproxyConfig = `global
    stats socket %[1]s mode 600 level admin
    maxconn 512

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option smtpchk EHLO haproxy.invalid
    default-server send-proxy-v2 check-send-proxy

backend submission
    balance roundrobin
    server a %[2]s check inter 500ms fall 2 rise 1
    server b %[3]s check inter 500ms fall 2 rise 1

backend only_a
    server a %[2]s track submission/a

backend only_b
    server b %[3]s track submission/b

frontend submission
    bind %[4]s
    default_backend submission

frontend to_a
    bind %[5]s
    default_backend only_a

frontend to_b
    bind %[6]s
    default_backend only_b
`

// newCluster starts two nodes with nodeCfg (from clusterNode) and haproxy in
// front of them, and waits until haproxy's health checks find both up.
// setup, when set, runs for each node before it starts (against a shared
// database, the second run finds what the first made).
func newCluster(t *testing.T, nodeCfg string, setup func(*server)) *cluster {
	t.Helper()
	bin := testutil.NeedTool(t, "haproxy")
	c := &cluster{t: t, a: newServer(t, nodeCfg), b: newServer(t, nodeCfg),
		both: freeAddr(t), toA: freeAddr(t), toB: freeAddr(t)}
	for _, s := range []*server{c.a, c.b} {
		if setup != nil {
			setup(s)
		}
		s.start()
	}
	dir := t.TempDir()
	c.stats = filepath.Join(dir, "haproxy.sock")
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(haproxyConfig, c.stats, c.a.sub, c.b.sub, c.both, c.toA, c.toB)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	c.haproxy = startProc(t, bin, dir, nil, "-db", "-f", cfg)
	c.waitUp("a", "b")
	return c
}

// serverStatus returns haproxy's status ("UP", "DOWN", …) of each server of
// the backend submission.
func (c *cluster) serverStatus() map[string]string {
	c.t.Helper()
	conn, err := net.Dial("unix", c.stats)
	if err != nil {
		return nil
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "show stat\n")
	r := csv.NewReader(bufio.NewReader(conn))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil
	}
	col := -1
	for i, h := range recs[0] {
		if h == "status" {
			col = i
		}
	}
	out := map[string]string{}
	for _, rec := range recs[1:] {
		if len(rec) > col && col >= 0 && rec[0] == "submission" {
			out[rec[1]] = rec[col]
		}
	}
	return out
}

// waitUp waits until haproxy's health check finds each named node up.
func (c *cluster) waitUp(nodes ...string) {
	c.t.Helper()
	testutil.WaitFor(c.t, 30*time.Second, "haproxy's health checks to find "+strings.Join(nodes, ", ")+" up", func() bool {
		st := c.serverStatus()
		for _, n := range nodes {
			if !strings.HasPrefix(st[n], "UP") {
				return false
			}
		}
		return true
	})
}

// dial connects to the balancer's frontend addr from the loopback source
// address ip and reads the greeting.
func (c *cluster) dial(addr, ip string) (*rawConn, string) {
	c.t.Helper()
	rc := dialRaw(c.t, addr, ip, nil, false)
	return rc, rc.reply()
}

// login connects from ip through addr, sends EHLO and AUTH PLAIN, and
// returns the reply to AUTH and the connection.
func (c *cluster) login(addr, ip, user, pw string) (string, *rawConn) {
	c.t.Helper()
	rc, greeting := c.dial(addr, ip)
	if !strings.HasPrefix(greeting, "220 ") {
		c.t.Fatalf("greeting through %s from %s: %q", addr, ip, greeting)
	}
	rc.expect("EHLO client.test", "250 ")
	return rc.cmd(authPlain(user, pw)), rc
}

// sidRe finds the session id in a reply.
var sidRe = regexp.MustCompile(`^\d{3} \d\.\d\.\d ([A-Za-z0-9]{22}) `)

// sid returns the session id of a reply.
func sid(t *testing.T, reply string) string {
	t.Helper()
	m := sidRe.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("no session id in %q", reply)
	}
	return m[1]
}

// sessionOn waits up to 10s for session id's record on node s and returns
// it, or "" when s has none.
func sessionOn(t *testing.T, s *server, id string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, _, code := s.cli("", "session", id); code == 0 {
			return out
		}
	}
	return ""
}

// TestClusterPlumbing: two nodes with their own SQLite stores behind
// haproxy. The health checks find both up; the client's own address, not
// haproxy's, reaches the node's session record through PROXY v2; round
// robin spreads consecutive connections over both nodes; and a node that
// stops is taken out by the health check while the other serves on.
func TestClusterPlumbing(t *testing.T) {
	c := newCluster(t, clusterNode("", ""), (*server).setupFirma)
	where := map[string]int{}
	// A failed AUTH is answered with the session id (SPEC R4, R12).
	for i, ip := range []string{"127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10"} {
		reply, rc := c.login(c.both, ip, "jan@firma.cz", "wrong")
		if !strings.HasPrefix(reply, "535 5.1.0 ") {
			t.Fatalf("AUTH %d from %s: %q", i, ip, reply)
		}
		rc.cmd("QUIT")
		id := sid(t, reply)
		ra, rb := sessionOn(t, c.a, id), ""
		if ra == "" {
			rb = sessionOn(t, c.b, id)
		}
		rec := ra + rb
		switch {
		case ra != "":
			where["a"]++
		case rb != "":
			where["b"]++
		default:
			t.Fatalf("session %s is on neither node", id)
		}
		if !strings.Contains(rec, ip+" port ") || strings.Contains(rec, "127.0.0.1 port") {
			t.Errorf("session record of %s does not name the client %s:\n%s", id, ip, rec)
		}
	}
	if where["a"] != 2 || where["b"] != 2 {
		t.Errorf("round robin spread 4 sessions as %v", where)
	}
	// The per-node frontends reach the node they name.
	for _, n := range []struct {
		addr string
		s    *server
	}{{c.toA, c.a}, {c.toB, c.b}} {
		reply, rc := c.login(n.addr, "127.0.0.11", "jan@firma.cz", "wrong")
		rc.cmd("QUIT")
		if sessionOn(t, n.s, sid(t, reply)) == "" {
			t.Errorf("a session through %s is not on its node", n.addr)
		}
	}

	c.b.interrupt()
	testutil.WaitFor(t, 20*time.Second, "haproxy to mark node b down", func() bool {
		return strings.HasPrefix(c.serverStatus()["b"], "DOWN")
	})
	for i := range 3 {
		reply, rc := c.login(c.both, "127.0.0.12", "jan@firma.cz", e2ePassword)
		rc.cmd("QUIT")
		if !strings.HasPrefix(reply, "235 ") {
			t.Fatalf("AUTH %d with node b down: %q", i, reply)
		}
	}
}

// sharedStores returns the node config of a cluster sharing the PostgreSQL
// database dsn and, unless redisURL is "", the guard in that Redis; it
// skips when this build lacks the config keys.
func sharedStores(t *testing.T, dsn, redisURL string) string {
	t.Helper()
	guard, want := "", `[store] driver = "postgres"`
	if redisURL != "" {
		guard, want = fmt.Sprintf("store = \"redis\"\nredis_url = %q\n", redisURL), want+`, [guard] store = "redis"`
	}
	cfg := clusterNode(guard, fmt.Sprintf("[store]\ndriver = \"postgres\"\ndsn = %q\n", dsn))
	probe := newServer(t, cfg)
	if _, errOut, code := probe.cli("", "blocked"); code != 0 && strings.Contains(errOut, "unknown key") {
		t.Skipf("skipping: this build lacks %s: %s", want, strings.TrimSpace(errOut))
	}
	return cfg
}

// newSharedCluster starts a cluster on cfg (from sharedStores) whose shared
// directory has firma.cz with jan@, and more, accounts made once.
func newSharedCluster(t *testing.T, cfg string, more ...string) *cluster {
	t.Helper()
	first := true
	return newCluster(t, cfg, func(s *server) {
		if first {
			s.setupFirma()
			for _, a := range more {
				s.mustCLI(e2ePassword+"\n", "account", "add", a)
			}
			first = false
		}
	})
}

// wrongPasswords makes n failed logins from ip through addr.
func (c *cluster) wrongPasswords(addr, ip string, n int) {
	c.t.Helper()
	for i := range n {
		reply, rc := c.login(addr, ip, "jan@firma.cz", "wrong")
		if !strings.HasPrefix(reply, "535 5.1.0 ") {
			c.t.Fatalf("wrong password %d from %s through %s: %q", i+1, ip, addr, reply)
		}
		// The failure that reaches the limit closes the connection.
		rc.nc.Close()
	}
}

// refused reports whether a connection from ip through addr is refused
// at once with the R11 text naming ip.
func (c *cluster) refused(addr, ip string) bool {
	c.t.Helper()
	rc := dialRaw(c.t, addr, ip, nil, false)
	l := rc.line()
	want := regexp.MustCompile("^" + strings.Replace(regexp.QuoteMeta(guardRefusal(ip)), "SID", "[A-Za-z0-9]{22}", 1) + "\r\n$")
	return want.MatchString(l)
}

// expectRefused checks that a connection from ip through addr is refused
// at once with the exact R11 text naming ip.
func (c *cluster) expectRefused(addr, ip string) {
	c.t.Helper()
	if !c.refused(addr, ip) {
		c.t.Fatalf("through %s from %s: not refused with %q", addr, ip, guardRefusal(ip))
	}
}

// expectRefusedSoon is expectRefused for a node that hears of the block
// from the other through Redis's pub/sub channel, which takes a moment:
// within blockSpread, far less than the nodes' periodic sync would.
func (c *cluster) expectRefusedSoon(addr, ip string) {
	c.t.Helper()
	for deadline := time.Now().Add(blockSpread); !c.refused(addr, ip); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			c.t.Fatalf("through %s from %s: not refused with %q within %v", addr, ip, guardRefusal(ip), blockSpread)
		}
	}
}

// blockSpread bounds how long a block made on one node takes to reach the
// other.
const blockSpread = 2 * time.Second

// TestClusterSharedGuard: the two nodes share one PostgreSQL and one Redis.
// Five wrong passwords on node A and five on node B from one IP block it on
// both, refused with its own address in the reply; twenty wrong attempts at
// once from another IP, spread over both nodes, have exactly ten verified;
// "submitd unblock" run against node A's config lets both accept at once
// (SPEC R11, R11a, R11b).
func TestClusterSharedGuard(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	rd := testutil.StartRedis(t)
	c := newSharedCluster(t, sharedStores(t, dsn, rd.URL()))

	const ip = "127.0.0.20"
	c.wrongPasswords(c.toA, ip, 5)
	c.wrongPasswords(c.toB, ip, 5)
	c.expectRefused(c.toB, ip)
	c.expectRefusedSoon(c.toA, ip)

	// Twenty at once from one IP, over both nodes: the guard lets exactly
	// ten be verified (each a 535 with a session id) and refuses the rest.
	const ip2 = "127.0.0.21"
	var mu sync.Mutex
	verified := 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			rc := dialRaw(t, c.both, ip2, nil, false)
			if !strings.HasPrefix(rc.reply(), "220 ") {
				return
			}
			rc.write("EHLO client.test\r\n")
			if !strings.HasPrefix(rc.reply(), "250 ") {
				return
			}
			rc.write(authPlain("jan@firma.cz", "wrong") + "\r\n")
			l, err := rc.r.ReadString('\n')
			if err == nil && strings.HasPrefix(l, "535 5.1.0 ") && strings.HasSuffix(strings.TrimSpace(l), "authentication failed") {
				mu.Lock()
				verified++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if verified != 10 {
		t.Errorf("%d of 20 simultaneous wrong attempts were verified, want exactly 10", verified)
	}
	c.expectRefusedSoon(c.toA, ip2)
	c.expectRefusedSoon(c.toB, ip2)

	c.a.mustCLI("", "unblock", ip)
	for _, addr := range []string{c.toA, c.toB} {
		if reply, rc := c.login(addr, ip, "jan@firma.cz", e2ePassword); !strings.HasPrefix(reply, "235 ") {
			t.Errorf("AUTH through %s after the unblock on node A: %q", addr, reply)
		} else {
			rc.cmd("QUIT")
		}
	}
}

// TestClusterSharedDirectory: the two nodes share one PostgreSQL. A session
// served by node A is found with "submitd session" on node B, and an account
// disabled through node B is refused as disabled by node A within the
// account cache's TTL (SPEC R12, R13).
func TestClusterSharedDirectory(t *testing.T) {
	c := newSharedCluster(t, sharedStores(t, testutil.PostgresDSN(t), ""))

	// A session served by node A is found on node B.
	reply, rc := c.login(c.toA, "127.0.0.22", "jan@firma.cz", "wrong")
	rc.cmd("QUIT")
	if rec := sessionOn(t, c.b, sid(t, reply)); !strings.Contains(rec, "127.0.0.22 port ") {
		t.Errorf("node A's session %s on node B:\n%s", sid(t, reply), rec)
	}

	// Disabled through node B; node A refuses it as disabled within the
	// directory cache's TTL (5s by default).
	c.b.mustCLI("", "account", "disable", "jan@firma.cz")
	start := time.Now()
	for {
		reply, rc := c.login(c.toA, "127.0.0.23", "jan@firma.cz", e2ePassword)
		rc.cmd("QUIT")
		if strings.HasSuffix(reply, " authentication rejected access disabled") {
			break
		}
		if time.Since(start) > 6*time.Second {
			t.Fatalf("node A still answers %q %v after the disable on node B", reply, time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterRedisDown: with Redis stopped AUTH still works and wrong
// passwords are still limited by each node's own count; when it returns,
// counting is shared again.
func TestClusterRedisDown(t *testing.T) {
	rd := testutil.StartRedis(t)
	c := newSharedCluster(t, sharedStores(t, testutil.PostgresDSN(t), rd.URL()))

	rd.Stop()
	if reply, rc := c.login(c.toA, "127.0.0.30", "jan@firma.cz", e2ePassword); !strings.HasPrefix(reply, "235 ") {
		t.Fatalf("AUTH with Redis down: %q", reply)
	} else {
		rc.cmd("QUIT")
	}
	// The local limit still applies: ten failures on one node block there.
	c.wrongPasswords(c.toA, "127.0.0.31", 10)
	c.expectRefused(c.toA, "127.0.0.31")
	if c.refused(c.toB, "127.0.0.31") {
		t.Error("node B refuses an address only node A counted while Redis was down")
	}
	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	// Shared counting resumes: five and five over the two nodes, from a
	// fresh address each try, block on both.
	next := 40
	testutil.WaitFor(t, 30*time.Second, "shared counting to resume", func() bool {
		ip := fmt.Sprintf("127.0.0.%d", next)
		next++
		c.wrongPasswords(c.toA, ip, 5)
		c.wrongPasswords(c.toB, ip, 5)
		return c.refused(c.toA, ip) && c.refused(c.toB, ip)
	})
}

// TestClusterPostgresDown: with PostgreSQL stopped AUTH answers 454 4.7.0,
// never a false "rejected", and no node crashes; when it returns AUTH works
// again by itself.
func TestClusterPostgresDown(t *testing.T) {
	pg := testutil.StartPostgres(t)
	c := newSharedCluster(t, sharedStores(t, pg.CreateDB(t), ""), "petr@firma.cz", "eva@firma.cz")

	// Accounts the nodes have not looked up yet, so that no cache answers:
	// a known login with its password, with a wrong one, and an unknown
	// login all get the temporary reply, never a "rejected".
	pg.Stop()
	for _, addr := range []string{c.toA, c.toB} {
		for i, try := range [][2]string{{"petr@firma.cz", e2ePassword}, {"eva@firma.cz", "wrong"}, {"nikdo@firma.cz", "x"}} {
			reply, rc := c.login(addr, fmt.Sprintf("127.0.0.%d", 100+i), try[0], try[1])
			rc.cmd("QUIT")
			if !regexp.MustCompile(`^454 4\.7\.0 [A-Za-z0-9]{22} authentication temporarily unavailable, try again later$`).MatchString(reply) {
				t.Errorf("AUTH %s through %s with PostgreSQL down: %q, want 454 4.7.0", try[0], addr, reply)
			}
		}
	}
	for _, s := range []*server{c.a, c.b} {
		select {
		case <-s.exited:
			t.Fatalf("a node exited with PostgreSQL down: %v\n%s", s.err, s.log)
		default:
		}
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "AUTH to work again after PostgreSQL returned", func() bool {
		reply, rc := c.login(c.toB, "127.0.0.33", "petr@firma.cz", e2ePassword)
		rc.cmd("QUIT")
		return strings.HasPrefix(reply, "235 ")
	})
}

// docBlocks returns the fenced blocks of language lang in docs/cluster.md.
func docBlocks(t *testing.T, lang string) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/cluster.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, part := range strings.Split(string(b), "```"+lang+"\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatalf("an unclosed %s block in docs/cluster.md", lang)
		}
		out = append(out, block)
	}
	if len(out) == 0 {
		t.Fatalf("docs/cluster.md has no %s block", lang)
	}
	return out
}

// TestClusterDocExamples: the node config of docs/cluster.md loads, with
// the shared stores and PROXY on every listener, and its HAProxy config
// passes "haproxy -c".
func TestClusterDocExamples(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "node.toml")
	if err := os.WriteFile(name, []byte(docBlocks(t, "toml")[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(name)
	if err != nil {
		t.Fatalf("the node config of docs/cluster.md: %v", err)
	}
	l := cfg.Listener
	if cfg.Store.Driver != "postgres" || cfg.Guard.Store != "redis" || len(cfg.Guard.TrustedProxies) == 0 ||
		!l.SMTP.ProxyProtocol || !l.Submission.ProxyProtocol || !l.Submissions.ProxyProtocol {
		t.Errorf("the node config of docs/cluster.md: store %q, guard store %q, trusted %v, PROXY %v %v %v",
			cfg.Store.Driver, cfg.Guard.Store, cfg.Guard.TrustedProxies, l.SMTP.ProxyProtocol, l.Submission.ProxyProtocol, l.Submissions.ProxyProtocol)
	}

	bin := testutil.NeedTool(t, "haproxy")
	hcfg := strings.ReplaceAll(docBlocks(t, "haproxy")[0], "/run/haproxy/admin.sock", filepath.Join(dir, "admin.sock"))
	hname := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(hname, []byte(hcfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", hname).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c on the config of docs/cluster.md: %v\n%s", err, out)
	}
}
