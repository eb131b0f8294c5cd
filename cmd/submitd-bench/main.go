// Command submitd-bench is a load generator for SMTP submission servers.
//
// It speaks raw SMTP (STARTTLS or implicit TLS, AUTH PLAIN, PIPELINING when
// the server offers it) from many loopback source addresses and measures
// throughput, latency percentiles and errors by reply code, and, given the
// server's PIDs, its CPU time per message and peak resident memory.
//
// Modes:
//
//	send     mail transactions, closed loop, or open loop with -rate
//	idle     -c logged-in sessions held open; memory per session
//	flood    wrong passwords on -c connections from -sources addresses,
//	         with legitimate logins timed alongside
//	refused  connections from an address the server has blocked
//
// "submitd-bench table FILE" turns the JSON lines written with -json into
// the comparison table of BENCHMARKS.md; "submitd-bench accounts" prints
// benchmark accounts for "submitd account import"; "submitd-bench dns"
// answers for the sink's name, for peers that look up the recipient's MX.
// bench/run.sh drives them all.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		sub := map[string]func([]string, io.Writer) error{"table": tableMain, "accounts": accountsMain, "dns": dnsMain}[os.Args[1]]
		if sub != nil {
			if err := sub(os.Args[2:], os.Stdout); err != nil {
				fmt.Fprintf(os.Stderr, "submitd-bench %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "submitd-bench:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
	if res.OK == 0 {
		os.Exit(1)
	}
}

// errUsage marks errors in the command line.
var errUsage = errors.New("usage")

// result is one run's figures, written as one JSON line.
type result struct {
	// Tags are the -tag labels (workload, server, run number).
	Tags map[string]string `json:"tags"`
	// Mode is the workload mode.
	Mode string `json:"mode"`
	// Seconds is the duration of the load.
	Seconds float64 `json:"seconds"`
	// OK counts successes: accepted messages (send), sessions held (idle),
	// rejected wrong passwords (flood), refused connections (refused).
	OK int `json:"ok"`
	// PerSec is OK per second.
	PerSec float64 `json:"per_sec"`
	// MBPerSec is accepted message bytes per second, in 10⁶ bytes.
	MBPerSec float64 `json:"mb_per_sec,omitempty"`
	// Latency is the distribution of the successes' latencies.
	Latency latency `json:"latency"`
	// Setup is the time to connect, set up TLS and log in (send, idle).
	Setup *latency `json:"setup,omitempty"`
	// Errors counts failures by reply key or kind.
	Errors map[string]int `json:"errors"`
	// SetupErrors counts the failures to connect and log in of a send
	// run's connections (each also fails the message it was for).
	SetupErrors map[string]int `json:"setup_errors,omitempty"`
	// Scan is what submitd's content scans did when -scan-metrics was
	// given.
	Scan *scanResult `json:"scan,omitempty"`
	// E2E is the end-to-end figure when -drain-cmd was given.
	E2E *e2eResult `json:"e2e,omitempty"`
	// Server is the server's resource use when -pid was given.
	Server *serverResult `json:"server,omitempty"`
	// FsyncsPerMsg is the server's fsync and fdatasync calls per accepted
	// message, counted by bench/run.sh with strace on a separate run (a
	// count that tracing does not change, unlike the timings).
	FsyncsPerMsg *float64 `json:"fsyncs_per_msg,omitempty"`
	// Cached and Uncached are the legitimate logins during a flood.
	Cached   *loginResult `json:"cached,omitempty"`
	Uncached *loginResult `json:"uncached,omitempty"`
	// OwnerTrusted and OwnerNew are the logins of a flooded account's
	// owner from a network it logged in from before and from a new one.
	OwnerTrusted *loginResult `json:"owner_trusted,omitempty"`
	OwnerNew     *loginResult `json:"owner_new,omitempty"`
	// Unexpected counts, per set of operations ("errors", "setup",
	// "cached", …), the failures not named by -expect.
	Unexpected map[string]map[string]int `json:"unexpected,omitempty"`
	// Missing names the figures the run should have given and did not.
	Missing []string `json:"missing,omitempty"`
}

// e2eResult is accepted-and-delivered throughput.
type e2eResult struct {
	// DrainSeconds is how long the queue took to empty after the load.
	DrainSeconds float64 `json:"drain_seconds"`
	// PerSec is accepted messages over load plus drain time.
	PerSec float64 `json:"per_sec"`
	// CPUPerMsgMs is the server's CPU per message including delivery.
	CPUPerMsgMs float64 `json:"cpu_per_msg_ms,omitempty"`
}

// serverResult is the server's resource use during the load.
type serverResult struct {
	// Procs is the number of processes counted at the end.
	Procs int `json:"procs"`
	// CPUSeconds is the CPU time used during the load.
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPerOpMs is CPUSeconds per success, in milliseconds.
	CPUPerOpMs float64 `json:"cpu_per_op_ms"`
	// CPUPerMiBMs is CPUSeconds per MiB of accepted messages (send).
	CPUPerMiBMs float64 `json:"cpu_per_mib_ms,omitempty"`
	// BaseRSSKiB is the resident memory before the load.
	BaseRSSKiB int64 `json:"base_rss_kib"`
	// PeakRSSKiB is the largest resident memory seen (sampled every
	// 100 ms, and VmHWM for a single process).
	PeakRSSKiB int64 `json:"peak_rss_kib"`
	// HalfRSSKiB and LoadedRSSKiB are the resident memory with half of
	// the idle sessions open and with all of them.
	HalfRSSKiB   int64 `json:"half_rss_kib,omitempty"`
	LoadedRSSKiB int64 `json:"loaded_rss_kib,omitempty"`
	// PerConnKiB is what the second half of the idle sessions added, per
	// session.
	PerConnKiB float64 `json:"per_conn_kib,omitempty"`
}

// loginResult is a set of timed logins.
type loginResult struct {
	// Latency is the time from AUTH to its 235.
	Latency latency `json:"latency"`
	// Errors counts logins that failed.
	Errors map[string]int `json:"errors"`
}

// options are the command-line settings.
type options struct {
	// mode is the workload: send, idle, flood or refused.
	mode string
	// addr is the server's host:port.
	addr string
	// security is starttls, implicit or none.
	security string
	// user is the login format, password every account's password and
	// accounts their number.
	user, password string
	accounts       int
	// to is the recipient of every message.
	to string
	// conns is the number of concurrent connections.
	conns int
	// setupParallel is how many idle sessions are set up at once.
	setupParallel int
	// perConn is messages per connection (0: unlimited).
	perConn int
	// size is the message size in bytes.
	size int
	// duration is the length of the load, limit the most messages.
	duration time.Duration
	limit    int
	// rate is the open-loop arrival rate (0: closed loop).
	rate float64
	// nSources and srcBase choose the source addresses.
	nSources int
	srcBase  string
	// pipelining uses PIPELINING when offered.
	pipelining bool
	// timeout bounds dialing and each reply.
	timeout time.Duration
	// helo is the EHLO name.
	helo string
	// pids and pidTree select the server processes measured.
	pids    string
	pidTree bool
	// scanMetrics is submitd's /metrics URL, read before and after the
	// load for what its content scans did.
	scanMetrics string
	// drainCmd and drainTimeout give the end-to-end figure.
	drainCmd     string
	drainTimeout time.Duration
	// probeEvery and probeSrc time legitimate logins during a flood.
	probeEvery time.Duration
	probeSrc   string
	// probeUser and probeAccounts are the logins of the legitimate
	// logins, ownerNewSrc where the flooded owner's new network is.
	probeUser     string
	probeAccounts int
	ownerNewSrc   string
	// wrongCode is the reply code of a rejected wrong password.
	wrongCode int
	// blockedSrc is the address refused; preblockTries bounds the failed
	// logins spent to get it blocked.
	blockedSrc    string
	preblockTries int
	// tags label the JSON line, jsonPath is where it is appended.
	tags     tagFlags
	jsonPath string
	// expect names the failures the workload expects; strict makes any
	// other failure, or a missing figure, fail the run.
	expect expectFlags
	strict bool
}

// tagFlags collects repeated -tag key=value flags.
type tagFlags map[string]string

func (t tagFlags) String() string { return fmt.Sprint(map[string]string(t)) }

func (t tagFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	t[k] = v
	return nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{tags: tagFlags{}, expect: expectFlags{}}
	fs := flag.NewFlagSet("submitd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: submitd-bench [flags]       a load run (see -mode)
       submitd-bench table FILE         the BENCHMARKS.md table of the -json lines in FILE
       submitd-bench accounts [-n N]    accounts for "submitd account import"
       submitd-bench dns [-listen ADDR] a DNS server for the sink's name (bench/run.sh)

Modes: send (mail; closed loop, or open loop with -rate), idle (-c sessions
held open), flood (wrong passwords, legitimate logins timed alongside),
refused (connections from an address the server has blocked).

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.mode, "mode", "send", "send, idle, flood or refused")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:2587", "server host:port")
	fs.StringVar(&o.security, "tls", "starttls", "starttls, implicit or none")
	fs.StringVar(&o.user, "user", "bench%d@bench.test", "login; %d is replaced by the account number 0…accounts-1")
	fs.StringVar(&o.password, "password", "bench-password", "every account's password")
	fs.IntVar(&o.accounts, "accounts", 1, "number of accounts used in turn")
	fs.StringVar(&o.to, "to", "sink@example.net", "recipient")
	fs.IntVar(&o.conns, "c", 20, "concurrent connections (idle: sessions held open)")
	fs.IntVar(&o.setupParallel, "setup-parallel", 16, "idle: sessions being set up at once")
	fs.IntVar(&o.perConn, "k", 0, "messages per connection; 1: a new connection and login per message; 0: no limit")
	fs.IntVar(&o.size, "size", 4096, "message size in bytes")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of the load")
	fs.IntVar(&o.limit, "n", 0, "stop after this many messages (0: only -duration)")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: messages per second, latency from each message's scheduled time (0: closed loop)")
	fs.IntVar(&o.nSources, "sources", 1, "number of source addresses, counting up from -src")
	fs.StringVar(&o.srcBase, "src", "127.1.0.1", "first source address")
	fs.BoolVar(&o.pipelining, "pipelining", true, "send MAIL, RCPT and DATA together when the server offers PIPELINING")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "limit for dialing and for each reply")
	fs.StringVar(&o.helo, "helo", "bench.client.test", "EHLO name")
	fs.StringVar(&o.pids, "pid", "", "comma-separated PIDs of the server, for its CPU time and memory")
	fs.BoolVar(&o.pidTree, "pid-tree", false, "also count every descendant of -pid (multi-process servers)")
	fs.StringVar(&o.scanMetrics, "scan-metrics", "", "send: submitd's /metrics URL; the content scans during the load, rspamd's own time and what submitd adds to it (with -strict, every accepted message must have been scanned with \"no action\")")
	fs.StringVar(&o.drainCmd, "drain-cmd", "", "shell command printing nothing once the server's queue is empty; gives the end-to-end rate")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 5*time.Minute, "longest wait for -drain-cmd")
	fs.DurationVar(&o.probeEvery, "probe-every", 200*time.Millisecond, "flood: time between the starts of legitimate logins, answered or not (0: none)")
	fs.StringVar(&o.probeSrc, "probe-src", "127.9.0.1", "flood: first of 16 source addresses of legitimate logins, where the flooded owner logged in before")
	fs.StringVar(&o.probeUser, "probe-user", "probe%d@bench.test", "flood: login of the legitimate logins, accounts not flooded; %d as in -user")
	fs.IntVar(&o.probeAccounts, "probe-accounts", 200, "flood: number of -probe-user accounts")
	fs.StringVar(&o.ownerNewSrc, "owner-new-src", "127.10.0.1", "flood: first address of the flooded owner's new networks, one /24 (IPv6: /48) after the other")
	fs.IntVar(&o.wrongCode, "wrong-reply", 535, "flood: the reply code of a rejected wrong password")
	fs.StringVar(&o.blockedSrc, "blocked-src", "127.8.0.1", "refused: the address to have blocked and connect from")
	fs.IntVar(&o.preblockTries, "preblock", 100, "refused: most failed logins spent to get -blocked-src blocked")
	fs.Var(o.tags, "tag", "key=value label for the JSON line (repeatable)")
	fs.StringVar(&o.jsonPath, "json", "", "append the result as one JSON line to this file")
	fs.Var(o.expect, "expect", "a failure the workload expects, by its key (\"454 4.7.0\", \"closed by server\"), of the operations or of a set: setup=KEY, cached=KEY, uncached=KEY, owner-trusted=KEY, owner-new=KEY, scan=KEY (an action, or \"unscanned REASON\") (repeatable)")
	fs.BoolVar(&o.strict, "strict", false, "fail the run on any failure -expect does not name, or on a figure missing")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	switch {
	case !strings.Contains(" send idle flood refused ", " "+o.mode+" "):
		return nil, fmt.Errorf("%w: -mode %q: want send, idle, flood or refused", errUsage, o.mode)
	case !strings.Contains(" starttls implicit none ", " "+o.security+" "):
		return nil, fmt.Errorf("%w: -tls %q: want starttls, implicit or none", errUsage, o.security)
	case o.conns < 1 || o.accounts < 1 || o.probeAccounts < 1 || o.nSources < 1 || o.perConn < 0 || o.limit < 0:
		return nil, fmt.Errorf("%w: -c, -accounts and -sources must be positive, -k and -n not negative", errUsage)
	case o.size < 200:
		return nil, fmt.Errorf("%w: -size %d: at least 200 bytes (the headers)", errUsage, o.size)
	case o.rate < 0:
		return nil, fmt.Errorf("%w: -rate must not be negative", errUsage)
	case o.scanMetrics != "" && o.mode != "send":
		return nil, fmt.Errorf("%w: -scan-metrics is for -mode send", errUsage)
	}
	return o, nil
}

// parsePIDs reads the -pid list.
func parsePIDs(s string) ([]int, error) {
	var pids []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid < 1 {
			return nil, fmt.Errorf("%w: -pid %q", errUsage, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// parseIP reads an IPv4 or IPv6 address flag.
func parseIP(flagName, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("%w: -%s %q: not an IP address", errUsage, flagName, s)
	}
	return a, nil
}

// run carries out one benchmark run, prints its summary to out and appends
// its JSON line to -json.
func run(ctx context.Context, args []string, out io.Writer) (*result, error) {
	o, err := parseFlags(args, out)
	if err != nil {
		return nil, err
	}
	pids, err := parsePIDs(o.pids)
	if err != nil {
		return nil, err
	}
	base, err := parseIP("src", o.srcBase)
	if err != nil {
		return nil, err
	}
	probeSrc, err := parseIP("probe-src", o.probeSrc)
	if err != nil {
		return nil, err
	}
	blockedSrc, err := parseIP("blocked-src", o.blockedSrc)
	if err != nil {
		return nil, err
	}
	ownerNewSrc, err := parseIP("owner-new-src", o.ownerNewSrc)
	if err != nil {
		return nil, err
	}
	cfg := &sendConfig{
		dial:    &dialConfig{addr: o.addr, security: o.security, timeout: o.timeout, pipelining: o.pipelining, heloName: o.helo},
		conns:   o.conns,
		perConn: o.perConn,
		size:    o.size,
		to:      o.to,
		accts:   accounts{format: o.user, n: o.accounts, password: o.password},
		src:     sources{base: base, n: o.nSources},
	}
	var pw *procWatcher
	var before procUsage
	if len(pids) > 0 {
		pw = &procWatcher{root: "/proc", pids: pids, tree: o.pidTree}
		if before, err = pw.sample(); err != nil {
			return nil, fmt.Errorf("server process: %w", err)
		}
		stopWatch := make(chan struct{})
		defer close(stopWatch)
		go pw.watch(100*time.Millisecond, stopWatch)
	}
	res := &result{Tags: o.tags, Mode: o.mode}
	var half, loaded procUsage
	var halfOpen int
	var scanBefore metricsSample
	var scanErr error
	var bytes int64
	start := time.Now()
	switch o.mode {
	case "send":
		l := &sendLoad{cfg: cfg, clk: realClock{}, msgs: newRecorder(), setup: newRecorder()}
		l.run(ctx, func() ticket {
			// The clock and the server's counters start once the
			// connections kept for the run are logged in.
			if o.scanMetrics != "" {
				scanBefore, scanErr = scrapeMetrics(ctx, o.scanMetrics)
			}
			start = time.Now()
			if pw != nil {
				before, _ = pw.sample()
			}
			if o.rate > 0 {
				return openTickets(&schedule{start: start, interval: time.Duration(float64(time.Second) / o.rate),
					end: start.Add(o.duration), limit: int64(o.limit)}, realClock{})
			}
			return closedTickets(&closedLoop{end: start.Add(o.duration), limit: int64(o.limit)}, realClock{})
		})
		res.OK, res.Latency, res.Errors = l.msgs.count(), l.msgs.summary(), l.msgs.errors()
		s := l.setup.summary()
		res.Setup, res.SetupErrors = &s, l.setup.errors()
		bytes = l.bytes.Load()
	case "idle":
		ir := runIdle(ctx, cfg, o.conns, o.setupParallel, o.duration, func(part int) {
			if pw != nil {
				u, _ := pw.sample()
				if part == 0 {
					half = u
				} else {
					loaded = u
				}
			}
		})
		halfOpen = ir.half
		res.OK, res.Errors = ir.open, ir.setup.errors()
		s := ir.setup.summary()
		res.Setup = &s
	case "flood":
		fc := &floodConfig{send: cfg, probeEvery: o.probeEvery, probeSrc: probeSrc, ownerNewSrc: ownerNewSrc, wrongCode: o.wrongCode,
			probeAccts: accounts{format: o.probeUser, n: o.probeAccounts, password: o.password}}
		fr := runFlood(ctx, fc, o.duration, func() {
			start = time.Now()
			if pw != nil {
				before, _ = pw.sample()
			}
		})
		res.OK, res.Latency, res.Errors = fr.attempts.count(), fr.attempts.summary(), fr.attempts.errors()
		res.Cached = &loginResult{fr.cached.summary(), fr.cached.errors()}
		res.Uncached = &loginResult{fr.uncached.summary(), fr.uncached.errors()}
		res.OwnerTrusted = &loginResult{fr.ownerTrusted.summary(), fr.ownerTrusted.errors()}
		res.OwnerNew = &loginResult{fr.ownerNew.summary(), fr.ownerNew.errors()}
	case "refused":
		src := net.IP(blockedSrc.AsSlice())
		rep, err := preblock(ctx, cfg.dial, src, cfg.accts.login(0), o.password, o.preblockTries)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "%s is refused: %s\n", src, rep)
		start = time.Now()
		if pw != nil {
			before, _ = pw.sample()
		}
		rec := runRefused(ctx, cfg.dial, src, o.conns, start.Add(o.duration))
		res.OK, res.Latency, res.Errors = rec.count(), rec.summary(), rec.errors()
	}
	elapsed := time.Since(start)
	if o.scanMetrics != "" {
		var after metricsSample
		if scanErr == nil {
			after, scanErr = scrapeMetrics(ctx, o.scanMetrics)
		}
		if scanErr != nil {
			return nil, fmt.Errorf("-scan-metrics: %w", scanErr)
		}
		res.Scan = scanDelta(scanBefore, after)
	}
	res.Seconds = elapsed.Seconds()
	res.PerSec = float64(res.OK) / res.Seconds
	if bytes > 0 {
		res.MBPerSec = float64(bytes) / 1e6 / res.Seconds
	}
	if pw != nil {
		after, err := pw.sample()
		if err != nil {
			return nil, fmt.Errorf("server process after the load: %w", err)
		}
		sr := &serverResult{Procs: after.procs, CPUSeconds: (after.cpu - before.cpu).Seconds(), BaseRSSKiB: before.rssKiB, PeakRSSKiB: pw.peak()}
		if len(pids) == 1 && !o.pidTree {
			sr.PeakRSSKiB = max(sr.PeakRSSKiB, after.hwmKiB)
		}
		if res.OK > 0 {
			sr.CPUPerOpMs = sr.CPUSeconds * 1000 / float64(res.OK)
		}
		if bytes > 0 {
			sr.CPUPerMiBMs = sr.CPUSeconds * 1000 / (float64(bytes) / (1 << 20))
		}
		if o.mode == "idle" && res.OK > halfOpen {
			sr.HalfRSSKiB, sr.LoadedRSSKiB = half.rssKiB, loaded.rssKiB
			sr.PerConnKiB = float64(loaded.rssKiB-half.rssKiB) / float64(res.OK-halfOpen)
		}
		res.Server = sr
		before = after
	}
	if o.drainCmd != "" && o.mode == "send" {
		d, err := drain(ctx, o.drainCmd, o.drainTimeout)
		if err != nil {
			return nil, err
		}
		res.E2E = &e2eResult{DrainSeconds: d.Seconds(), PerSec: float64(res.OK) / (elapsed + d).Seconds()}
		if pw != nil && res.OK > 0 {
			if after, err := pw.sample(); err == nil {
				cpu := res.Server.CPUSeconds + (after.cpu - before.cpu).Seconds()
				res.E2E.CPUPerMsgMs = cpu * 1000 / float64(res.OK)
			}
		}
	}
	res.Unexpected, res.Missing = o.expect.check(res, o, len(pids) > 0)
	printSummary(out, res)
	if o.jsonPath != "" {
		if err := appendJSON(o.jsonPath, res); err != nil {
			return nil, err
		}
	}
	if err := faults(res); err != nil {
		if o.strict {
			return res, err
		}
		fmt.Fprintln(out, err)
	}
	return res, nil
}

// drain runs cmd every 100 ms until it succeeds and prints nothing (the
// server's queue is empty) and returns how long that took.
func drain(ctx context.Context, cmd string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		out, err := exec.CommandContext(ctx, "sh", "-c", cmd).Output()
		if err == nil && len(strings.TrimSpace(string(out))) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("queue not empty after %v (-drain-cmd %q: %v)", limit, cmd, err)
		}
		realClock{}.sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
}

// appendJSON appends res as one line to path.
func appendJSON(path string, res *result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printSummary writes the figures for a person.
func printSummary(w io.Writer, r *result) {
	what := map[string]string{"send": "messages", "idle": "sessions held", "flood": "wrong passwords rejected", "refused": "connections refused"}[r.Mode]
	fmt.Fprintf(w, "%s: %d %s in %.1fs, %.1f/s", r.Mode, r.OK, what, r.Seconds, r.PerSec)
	if r.MBPerSec > 0 {
		fmt.Fprintf(w, ", %.1f MB/s", r.MBPerSec)
	}
	fmt.Fprintln(w)
	printLatency(w, "latency", r.Latency)
	if r.Setup != nil {
		printLatency(w, "setup", *r.Setup)
	}
	printErrors(w, "errors", r.Errors)
	for _, l := range []struct {
		name string
		r    *loginResult
	}{{"cached login", r.Cached}, {"uncached login", r.Uncached},
		{"flooded owner, trusted network", r.OwnerTrusted}, {"flooded owner, new network", r.OwnerNew}} {
		if l.r != nil {
			printLatency(w, l.name, l.r.Latency)
			printErrors(w, l.name+" errors", l.r.Errors)
		}

	}
	if r.Scan != nil {
		printScan(w, r.Scan)
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server: %d processes, %.2fs CPU, %.3f ms per op", s.Procs, s.CPUSeconds, s.CPUPerOpMs)
		if s.CPUPerMiBMs > 0 {
			fmt.Fprintf(w, ", %.1f ms per MiB", s.CPUPerMiBMs)
		}
		fmt.Fprintf(w, ", RSS %d KiB before, peak %d KiB", s.BaseRSSKiB, s.PeakRSSKiB)
		if s.PerConnKiB != 0 {
			fmt.Fprintf(w, ", %d KiB with half the sessions, %d KiB with all, %.1f KiB per session", s.HalfRSSKiB, s.LoadedRSSKiB, s.PerConnKiB)
		}
		fmt.Fprintln(w)
	}
	if e := r.E2E; e != nil {
		fmt.Fprintf(w, "end to end: queue empty %.1fs after the load, %.1f msgs/s", e.DrainSeconds, e.PerSec)
		if e.CPUPerMsgMs > 0 {
			fmt.Fprintf(w, ", %.3f ms CPU per message", e.CPUPerMsgMs)
		}
		fmt.Fprintln(w)
	}
}

func printLatency(w io.Writer, name string, l latency) {
	if l.N == 0 {
		return
	}
	fmt.Fprintf(w, "%s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (%d)\n", name, l.P50, l.P90, l.P99, l.Max, l.N)
}

func printErrors(w io.Writer, name string, errs map[string]int) {
	if len(errs) == 0 {
		return
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "%s:", name)
	for _, k := range keys {
		fmt.Fprintf(w, " %q×%d", k, errs[k])
	}
	fmt.Fprintln(w)
}
