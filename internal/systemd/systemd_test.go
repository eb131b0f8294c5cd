package systemd

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"submitd/internal/testutil"
)

// childEnv makes the test binary act as a service that takes its sockets
// from the environment (TestMain).
const childEnv = "SYSTEMD_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		serveChild()
		return
	}
	os.Exit(m.Run())
}

// serveChild takes the passed sockets, prints their names on one line and
// whether the variables are gone, then answers one connection on each with
// its name.
func serveChild() {
	socks, err := Listeners()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	var names []string
	for _, s := range socks {
		names = append(names, s.Name)
	}
	fmt.Printf("sockets=%s left=%q\n", strings.Join(names, ","), os.Getenv("LISTEN_FDS")+os.Getenv(HandoverEnv))
	for _, s := range socks {
		ln, err := net.FileListener(s.File)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintln(c, s.Name)
		c.Close()
	}
	os.Exit(0)
}

// startChild runs the test binary as a service with the sockets in files
// as descriptors 3 on and env added; script, when not "", is a shell
// command line that execs the binary, given as $0.
func startChild(t *testing.T, files []*os.File, script string, env ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	if script != "" {
		cmd = exec.Command("/bin/sh", "-c", script, bin)
	}
	cmd.Env = append(os.Environ(), append(env, childEnv+"=1")...)
	cmd.ExtraFiles = files
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewReader(out)
}

// answer connects to addr and returns the line the child answers.
func answer(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(l)
}

// TestSocketActivation: a service started as systemd starts it, LISTEN_PID
// its own pid (the shell sets it and execs), takes the passed sockets under
// their names, unsets the variables, and accepts on each socket.
func TestSocketActivation(t *testing.T) {
	smtpAddr, smtpFile := testutil.PassedSocket(t)
	adminAddr, adminFile := testutil.PassedSocket(t)
	_, out := startChild(t, []*os.File{smtpFile, adminFile}, `LISTEN_PID=$$ exec "$0"`, "LISTEN_FDS=2", "LISTEN_FDNAMES=smtp:admin")
	if l, _ := out.ReadString('\n'); l != "sockets=smtp,admin left=\"\"\n" {
		t.Fatalf("child said %q", l)
	}
	if got := answer(t, smtpAddr); got != "smtp" {
		t.Errorf("first socket answered %q, want smtp", got)
	}
	if got := answer(t, adminAddr); got != "admin" {
		t.Errorf("second socket answered %q, want admin", got)
	}
}

// TestHandoverSockets: sockets passed by the parent with HandoverEnv set
// to its pid are taken (Go cannot set LISTEN_PID between fork and exec);
// ListenerEnv writes that environment.
func TestHandoverSockets(t *testing.T) {
	addr, f := testutil.PassedSocket(t)
	env := ListenerEnv([]string{"LISTEN_PID=1", "KEEP=1"}, []Socket{{Name: "submission", File: f}})
	if strings.Contains(strings.Join(env, " "), "LISTEN_PID") {
		t.Errorf("ListenerEnv kept a stale LISTEN_PID: %q", env)
	}
	_, out := startChild(t, []*os.File{f}, "", env...)
	if l, _ := out.ReadString('\n'); l != "sockets=submission left=\"\"\n" {
		t.Fatalf("child said %q", l)
	}
	if got := answer(t, addr); got != "submission" {
		t.Errorf("socket answered %q", got)
	}
}

// TestSocketsForAnotherProcess: sockets whose LISTEN_PID or HandoverEnv
// names another process were inherited by mistake and are not taken
// (sd_listen_fds(3)); a damaged LISTEN_FDS is an error.
func TestSocketsForAnotherProcess(t *testing.T) {
	env := func(kv map[string]string) Environment {
		return Environment{Getenv: func(k string) string { return kv[k] }, Pid: 100, Ppid: 50}
	}
	for _, tc := range []struct {
		name string
		vars map[string]string
		err  string
	}{
		{"none", map[string]string{}, ""},
		{"another pid", map[string]string{"LISTEN_PID": "101", "LISTEN_FDS": "2"}, ""},
		{"another parent", map[string]string{HandoverEnv: "51", "LISTEN_FDS": "2"}, ""},
		{"no pid at all", map[string]string{"LISTEN_FDS": "2"}, ""},
		{"not a number", map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "two"}, "LISTEN_FDS"},
		{"too many", map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "100000"}, "LISTEN_FDS"},
		{"negative", map[string]string{HandoverEnv: "50", "LISTEN_FDS": "-1"}, "LISTEN_FDS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socks, err := ListenersFrom(env(tc.vars))
			if len(socks) != 0 {
				t.Errorf("took %d sockets", len(socks))
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v, want one naming %q", err, tc.err)
			}
		})
	}
}

// listenNotify opens a notification socket as systemd does.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
}

// read returns the next message's assignments.
func read(t *testing.T, c *net.UnixConn) map[string]string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(string(buf[:n]), "\n") {
		k, v, _ := strings.Cut(l, "=")
		kv[k] = v
	}
	return kv
}

// TestNotify: the messages reach a notification socket at a path and at an
// abstract name, with the assignments systemd reads; RELOADING carries
// CLOCK_MONOTONIC in microseconds (required by Type=notify-reload).
func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listenNotify(t, path)
	n := &Notifier{Socket: path}
	if err := n.Ready("serving\nmail"); err != nil {
		t.Fatal(err)
	}
	if kv := read(t, c); kv["READY"] != "1" || kv["MAINPID"] != strconv.Itoa(os.Getpid()) || kv["STATUS"] != "serving mail" {
		t.Errorf("ready: %q", kv)
	}
	var before, after unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &after)
	kv := read(t, c)
	usec, _ := strconv.ParseInt(kv["MONOTONIC_USEC"], 10, 64)
	if kv["RELOADING"] != "1" || usec < before.Nano()/1000 || usec > after.Nano()/1000 {
		t.Errorf("reloading: %q, want MONOTONIC_USEC in [%d, %d]", kv, before.Nano()/1000, after.Nano()/1000)
	}
	n.Stopping("bye")
	if kv := read(t, c); kv["STOPPING"] != "1" || kv["STATUS"] != "bye" {
		t.Errorf("stopping: %q", kv)
	}
	n.MainPID(4242)
	if kv := read(t, c); kv["MAINPID"] != "4242" {
		t.Errorf("main pid: %q", kv)
	}

	abstract := fmt.Sprintf("@submitd-test-%d", os.Getpid())
	ac := listenNotify(t, abstract)
	if err := (&Notifier{Socket: abstract}).Status("abstract"); err != nil {
		t.Fatal(err)
	}
	if kv := read(t, ac); kv["STATUS"] != "abstract" {
		t.Errorf("abstract socket: %q", kv)
	}
}

// TestNotifyWithoutManager: with no $NOTIFY_SOCKET nothing is sent and
// ErrNoSocket says so, for callers that run with or without systemd.
func TestNotifyWithoutManager(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := NewNotifier().Ready("x"); !errors.Is(err, ErrNoSocket) {
		t.Errorf("got %v, want ErrNoSocket", err)
	}
	var none *Notifier
	if err := none.Stopping("x"); !errors.Is(err, ErrNoSocket) {
		t.Errorf("nil notifier: %v", err)
	}
}

// FuzzListenEnv: whatever the environment holds, the sockets it passes are
// at most maxFDs, each with a name free of the list separator, and none
// unless LISTEN_PID is this process or HandoverEnv its parent.
func FuzzListenEnv(f *testing.F) {
	f.Add("100", "", "4", "smtp:submission:submissions:admin")
	f.Add("", "50", "2", "submitd:submitd")
	f.Add("100", "", "3", "smtp::admin:extra")
	f.Add("101", "", "1", "smtp")
	f.Add("", "", "1", "smtp")
	f.Add("100", "", "65", "")
	f.Add("100", "", "-1", "")
	f.Add("100", "", "0x10", "a:b")
	f.Fuzz(func(t *testing.T, pid, ppid, fds, names string) {
		vars := map[string]string{"LISTEN_PID": pid, HandoverEnv: ppid, "LISTEN_FDS": fds, "LISTEN_FDNAMES": names}
		got, err := parseEnv(Environment{Getenv: func(k string) string { return vars[k] }, Pid: 100, Ppid: 50})
		if err != nil && got != nil {
			t.Errorf("names %q with error %v", got, err)
		}
		if len(got) > maxFDs {
			t.Errorf("%d sockets", len(got))
		}
		if len(got) > 0 && pid != "100" && !(pid == "" && ppid == "50") {
			t.Errorf("sockets taken with LISTEN_PID=%q %s=%q", pid, HandoverEnv, ppid)
		}
		for _, n := range got {
			if n == "" || strings.Contains(n, ":") {
				t.Errorf("name %q", n)
			}
		}
	})
}
