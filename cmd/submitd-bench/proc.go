package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat. It is
// 100 on every Linux architecture Go runs on; reading it would need cgo.
const clockTicks = 100

// procUsage is the resource use of the server's processes at one moment.
type procUsage struct {
	// cpu is user plus system time of the processes, including what their
	// exited and reaped children used (cutime, cstime), so that work done
	// by short-lived worker processes (Postfix's smtpd, cleanup) is counted.
	cpu time.Duration
	// rssKiB is the sum of the processes' resident sets; for a process
	// tree, of their proportional sets (Pss), which count a page shared by
	// n processes as 1/n in each, since summed RSS would count Postfix's
	// shared libraries once per process.
	rssKiB int64
	// hwmKiB is the largest peak resident set (VmHWM) of one process.
	hwmKiB int64
	// procs is how many processes were counted.
	procs int
}

// procWatcher samples the server's processes: the given PIDs and, with
// tree, all their descendants.
type procWatcher struct {
	// root is the /proc directory, a field so tests can point it elsewhere.
	root string
	// pids are the server's main processes.
	pids []int
	// tree adds every descendant of pids.
	tree bool

	// mu guards peakRSS.
	mu sync.Mutex
	// peakRSS is the largest sum of resident sets seen by sample.
	peakRSS int64
}

// sample reads the current usage and remembers the peak resident set.
func (w *procWatcher) sample() (procUsage, error) {
	pids := w.pids
	if w.tree {
		pids = w.descendants()
	}
	var u procUsage
	for _, pid := range pids {
		cpu, err := w.cpu(pid)
		if err != nil {
			if w.tree && !isMain(pid, w.pids) {
				// A worker process that exited since the listing; its
				// time is in its parent's cutime by the next sample.
				continue
			}
			return u, err
		}
		rss, hwm, err := w.memory(pid)
		if err != nil {
			continue
		}
		if w.tree {
			if pss, err := w.pss(pid); err == nil {
				rss = pss
			}
		}
		u.cpu += cpu
		u.rssKiB += rss
		u.hwmKiB = max(u.hwmKiB, hwm)
		u.procs++
	}
	w.mu.Lock()
	w.peakRSS = max(w.peakRSS, u.rssKiB)
	w.mu.Unlock()
	return u, nil
}

// peak is the largest summed resident set seen so far.
func (w *procWatcher) peak() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peakRSS
}

// watch samples every interval until stop is closed.
func (w *procWatcher) watch(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			w.sample()
		}
	}
}

func isMain(pid int, pids []int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// cpu reads utime+stime+cutime+cstime of pid (proc(5)).
func (w *procWatcher) cpu(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(w.root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	f, err := statFields(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	// Fields 14–17 (utime, stime, cutime, cstime) are 11–14 counted
	// from the state, field 3.
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: field %d: %w", pid, i+3, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// statFields splits /proc/PID/stat after the command name, which is in
// parentheses and may itself contain spaces and parentheses; f[0] is the
// state (field 3), f[1] the parent PID.
func statFields(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("%d fields after the name", len(f))
	}
	return f, nil
}

// pss reads the proportional set size of pid in KiB (smaps_rollup).
func (w *procWatcher) pss(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join(w.root, strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/smaps_rollup: no Pss", pid)
}

// memory reads VmRSS and VmHWM of pid in KiB.
func (w *procWatcher) memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(filepath.Join(w.root, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			rss = n
		} else {
			hwm = n
		}
	}
	return rss, hwm, nil
}

// descendants lists the main PIDs and every process below them.
func (w *procWatcher) descendants() []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir(w.root)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(w.root, e.Name(), "stat"))
		if err != nil {
			continue
		}
		f, err := statFields(b)
		if err != nil {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := append([]int(nil), w.pids...)
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
