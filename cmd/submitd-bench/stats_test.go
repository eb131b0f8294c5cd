package main

import (
	"context"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := summarize(ds)
	if l.N != 100 || l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 {
		t.Errorf("1..100 ms: %+v, want p50 50, p90 90, p99 99, max 100", l)
	}
	// Three values: the 50th percentile is the second, the 99th the
	// largest — never a value between two that were measured.
	three := []time.Duration{3 * time.Millisecond, 1 * time.Millisecond, 2 * time.Millisecond}
	if l := summarize(three); l.P50 != 2 || l.P90 != 3 || l.P99 != 3 {
		t.Errorf("{1,2,3} ms: %+v", l)
	}
	if l := summarize([]time.Duration{7 * time.Millisecond}); l.P50 != 7 || l.P99 != 7 || l.Max != 7 {
		t.Errorf("one value: %+v", l)
	}
	if l := summarize(nil); l != (latency{}) {
		t.Errorf("no values: %+v", l)
	}
	if p := percentile([]time.Duration{1, 2}, 0); p != 1 {
		t.Errorf("p0 = %v, want the smallest", p)
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{5, 1, 3}); m != 3 {
		t.Errorf("median(5,1,3) = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median(4,1,3,2) = %v", m)
	}
	if m := median(nil); !math.IsNaN(m) {
		t.Errorf("median() = %v, want NaN", m)
	}
}

// fakeClock is a clock that moves only when told to, or when a worker
// sleeps until a later time.
type fakeClock struct {
	// t holds the current time; the one-slot channel is its lock, as the
	// server goroutine moves the clock while the worker reads it.
	t chan time.Time
}

func newFakeClock(t0 time.Time) *fakeClock {
	c := &fakeClock{t: make(chan time.Time, 1)}
	c.t <- t0
	return c
}

func (c *fakeClock) now() time.Time { t := <-c.t; c.t <- t; return t }

func (c *fakeClock) advance(d time.Duration) { t := <-c.t; c.t <- t.Add(d) }

func (c *fakeClock) sleepUntil(_ context.Context, at time.Time) {
	t := <-c.t
	if at.After(t) {
		t = at
	}
	c.t <- t
}

func TestOpenLoopLatencyFromScheduledTime(t *testing.T) {
	// The server takes 30 ms per message and messages are due every
	// 10 ms: an open loop falls behind, and each message's latency must
	// include the time it waited for its turn (30, 50, 70 … ms), where a
	// closed loop sees 30 ms every time.
	clk := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := startTestServer(t, testServerOptions{onData: func() { clk.advance(30 * time.Millisecond) }})
	for _, tt := range []struct {
		name string
		open bool
		want []float64
	}{
		{"open loop", true, []float64{30, 50, 70, 90, 110}},
		{"closed loop", false, []float64{30, 30, 30, 30, 30}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := srv.sendConfig(1)
			l := &sendLoad{cfg: cfg, clk: clk, msgs: newRecorder(), setup: newRecorder()}
			l.run(context.Background(), func() ticket {
				if tt.open {
					return openTickets(&schedule{start: clk.now(), interval: 10 * time.Millisecond, limit: 5}, clk)
				}
				return closedTickets(&closedLoop{end: clk.now().Add(time.Hour), limit: 5}, clk)
			})
			if errs := l.msgs.errors(); len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			l.msgs.mu.Lock()
			defer l.msgs.mu.Unlock()
			var got []float64
			for _, d := range l.msgs.lat {
				got = append(got, float64(d)/float64(time.Millisecond))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("latencies %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("latencies %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestScheduleStopsAtEndAndLimit(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := &schedule{start: t0, interval: 100 * time.Millisecond, end: t0.Add(250 * time.Millisecond)}
	var got []time.Duration
	for {
		at, ok := s.take()
		if !ok {
			break
		}
		got = append(got, at.Sub(t0))
	}
	if len(got) != 3 || got[0] != 0 || got[2] != 200*time.Millisecond {
		t.Errorf("slots %v, want 0s 100ms 200ms", got)
	}
	s = &schedule{start: t0, interval: time.Millisecond, limit: 2}
	s.take()
	s.take()
	if _, ok := s.take(); ok {
		t.Error("a third slot with limit 2")
	}
}

func TestNewNetwork(t *testing.T) {
	for _, tt := range []struct {
		base string
		i    int
		want string
	}{
		{"127.10.0.1", 0, "127.10.0.1"}, {"127.10.0.1", 3, "127.10.3.1"}, {"127.10.255.1", 1, "127.11.0.1"},
		{"fd00::1", 2, "fd00:0:2::1"},
	} {
		if got := newNetwork(netip.MustParseAddr(tt.base), tt.i); !got.Equal(net.ParseIP(tt.want)) {
			t.Errorf("newNetwork(%s, %d) = %s, want %s", tt.base, tt.i, got, tt.want)
		}
	}
}

func TestSources(t *testing.T) {
	s := sources{base: netip.MustParseAddr("127.1.0.254"), n: 3}
	want := []string{"127.1.0.254", "127.1.0.255", "127.1.1.0", "127.1.0.254"}
	for i, w := range want {
		if got := s.at(i); !got.Equal(net.ParseIP(w)) {
			t.Errorf("at(%d) = %v, want %v", i, got, w)
		}
	}
}

func TestAccounts(t *testing.T) {
	a := accounts{format: "u%d@x.test", n: 3}
	if a.login(4) != "u1@x.test" {
		t.Errorf("login(4) = %q", a.login(4))
	}
	if b := (accounts{format: "one@x.test", n: 5}); b.login(3) != "one@x.test" {
		t.Errorf("fixed login = %q", b.login(3))
	}
}

func TestProcWatcher(t *testing.T) {
	root := t.TempDir()
	write := func(pid, name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat := func(pid, comm, ppid string, utime, stime, cutime, cstime int) string {
		return pid + " (" + comm + ") S " + ppid + " 1 1 0 -1 0 0 0 0 0 " +
			strings.Join([]string{strconv.Itoa(utime), strconv.Itoa(stime), strconv.Itoa(cutime), strconv.Itoa(cstime)}, " ") + " 20 0 1 0 0 0 0\n"
	}
	// A master with two workers, one with a name that looks like the end
	// of the name field, and an unrelated process.
	write("10", "stat", stat("10", "master", "1", 100, 50, 30, 20))
	write("10", "status", "Name:\tmaster\nVmHWM:\t  9000 kB\nVmRSS:\t  4000 kB\n")
	write("11", "stat", stat("11", "smtpd) S 1 (x", "10", 10, 10, 0, 0))
	write("11", "status", "VmHWM:\t 3000 kB\nVmRSS:\t 2000 kB\n")
	write("11", "smaps_rollup", "Rss:\t2000 kB\nPss:\t 500 kB\n")
	write("12", "stat", stat("12", "cleanup", "10", 5, 5, 0, 0))
	write("12", "status", "VmRSS:\t 1000 kB\n")
	write("13", "stat", stat("13", "other", "1", 1000, 1000, 0, 0))
	write("13", "status", "VmRSS:\t 99999 kB\n")

	one := &procWatcher{root: root, pids: []int{10}}
	u, err := one.sample()
	if err != nil {
		t.Fatal(err)
	}
	if u.cpu != 2*time.Second || u.rssKiB != 4000 || u.hwmKiB != 9000 || u.procs != 1 {
		t.Errorf("one process: %+v, want 2s CPU (200 ticks), 4000 KiB, HWM 9000", u)
	}
	tree := &procWatcher{root: root, pids: []int{10}, tree: true}
	u, err = tree.sample()
	if err != nil {
		t.Fatal(err)
	}
	// CPU: 200 + 20 + 10 ticks; memory: 4000 + 500 (Pss) + 1000 (no
	// smaps_rollup: RSS).
	if u.cpu != 2300*time.Millisecond || u.rssKiB != 5500 || u.procs != 3 {
		t.Errorf("tree: %+v, want 2.3s CPU, 5500 KiB, 3 processes", u)
	}
	if tree.peak() != 5500 {
		t.Errorf("peak = %d", tree.peak())
	}
	if _, err := (&procWatcher{root: root, pids: []int{99}}).sample(); err == nil {
		t.Error("a missing main process is no error")
	}
}
