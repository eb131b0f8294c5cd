package testutil

import (
	"embed"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Rspamd is an rspamd a test started on loopback ports it chose, with a
// configuration directory of its own: Debian's rules, no Redis, the test
// DNS server as its resolver, and the GTUBE test patterns on. Fault
// tests stop and start it on the same ports.
type Rspamd struct {
	// URL is the normal worker's address, as [scan] rspamd_url takes it.
	URL string
	// dir holds the configuration, the database and the log.
	dir string
	// proc runs the server.
	proc process
}

// GTUBE is the test pattern rspamd rejects when its test patterns are on
// (rspamd's documentation: GTUBE-like test patterns).
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// GTUBEAddHeader is the pattern rspamd answers with "add header".
const GTUBEAddHeader = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// RspamdSoftReject is a Settings-ID the test's rspamd answers with its
// "soft reject" action and the smtp_message RspamdSoftRejectText, as its
// rate limits do (which need Redis).
const RspamdSoftReject = "submitd-test-soft-reject"

// RspamdSoftRejectText is the smtp_message of RspamdSoftReject.
const RspamdSoftRejectText = "Rate limit of the test, try again later"

// rspamdConfig is the configuration of every rspamd the tests start, the
// same files bench/run.sh starts its rspamd with: rspamd.conf, which takes
// its ports, directories and resolver as variables on the command line,
// and local.d. rspamd would sign outbound mail; submitd does that itself.
// The settings profile RspamdSoftReject inserts a symbol that
// force_actions turns into a soft reject with RspamdSoftRejectText.
//
//go:embed rspamd
var rspamdConfig embed.FS

// rspamdOnce makes the compiled-rules cache shared by every rspamd the
// tests start, so that only the first start on a machine compiles them.
var rspamdOnce sync.Once

// StartRspamd starts an rspamd for this test and stops it when the test
// ends. The first start on a machine compiles rspamd's rules, which takes
// tens of seconds; later ones reuse them. The test is skipped when rspamd
// is not installed (failed under CI=true, where .ci/run installs it).
func StartRspamd(t testing.TB) *Rspamd {
	t.Helper()
	bin := NeedTool(t, "rspamd")
	dir, err := os.MkdirTemp("", "submitd-rspamd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cache := filepath.Join(os.TempDir(), "submitd-rspamd-hs-cache")
	rspamdOnce.Do(func() { os.MkdirAll(cache, 0o777); os.Chmod(cache, 0o777) })
	normal, controller := FreePort(t, "127.0.0.1"), FreePort(t, "127.0.0.1")
	// rspamd's DNS checks (reverse DNS, blocklists, SPF, …) ask the test's
	// own DNS server, which answers NXDOMAIN at once: nothing leaves the
	// machine, and no check waits for a timeout.
	resolver := NewDNSServer(t)
	if err := writeRspamdConfig(dir); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o777); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", "-c", filepath.Join(dir, "rspamd.conf"), "--var=LOCAL_CONFDIR=" + dir, "--var=DBDIR=" + db,
		"--var=RUNDIR=" + dir, "--var=LOGDIR=" + dir, "--var=HS_CACHE=" + cache, "--var=NAMESERVER=" + resolver.Addr,
		"--var=NORMAL=127.0.0.1:" + strconv.Itoa(normal), "--var=CONTROLLER=127.0.0.1:" + strconv.Itoa(controller)}
	if os.Geteuid() == 0 {
		// rspamd drops privileges to a user given; Debian's package makes
		// _rspamd, which must be able to write the test's directory.
		name := "_rspamd"
		if _, err := user.Lookup(name); err != nil {
			name = "nobody"
		}
		args = append(args, "-u", name, "-g", groupOf(name))
		for _, p := range []string{dir, db} {
			os.Chmod(p, 0o777)
		}
	}
	r := &Rspamd{URL: "http://127.0.0.1:" + strconv.Itoa(normal), dir: dir}
	r.proc = process{
		name: "rspamd on " + r.URL, logPath: filepath.Join(dir, "rspamd.out"), within: 3 * time.Minute,
		stop:    syscall.SIGTERM,
		command: func() *exec.Cmd { return exec.Command(bin, args...) },
		ready:   r.ping,
	}
	if err := r.Start(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "rspamd.log"))
		t.Fatalf("start rspamd: %v\n%s", err, log)
	}
	t.Cleanup(r.Stop)
	return r
}

// writeRspamdConfig copies rspamdConfig into dir.
func writeRspamdConfig(dir string) error {
	sub, err := fs.Sub(rspamdConfig, "rspamd")
	if err != nil {
		return err
	}
	return os.CopyFS(dir, sub)
}

// groupOf returns the name of the primary group of the user name.
func groupOf(name string) string {
	u, err := user.Lookup(name)
	if err != nil {
		return "nogroup"
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return "nogroup"
	}
	return g.Name
}

// Start starts rspamd (again, after Stop) and waits until it answers ping.
func (r *Rspamd) Start() error { return r.proc.start() }

// Stop ends rspamd and waits until it has gone, its port closed.
func (r *Rspamd) Stop() { r.proc.halt() }

// ping asks the normal worker's /ping.
func (r *Rspamd) ping() error {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(r.URL + "/ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping answered %s: %s", resp.Status, b)
	}
	return nil
}

// Log returns rspamd's log so far, for a failing test to show.
func (r *Rspamd) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "rspamd.log"))
	return string(b)
}
