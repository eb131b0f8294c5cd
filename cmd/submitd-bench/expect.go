package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sets of operations a run counts failures of, the names -expect and the
// "unexpected" figures use.
const (
	setOps          = "errors"
	setSetup        = "setup"
	setCached       = "cached"
	setUncached     = "uncached"
	setOwnerTrusted = "owner-trusted"
	setOwnerNew     = "owner-new"
	// setScan are submitd's content scans (-scan-metrics), by rspamd's
	// action or "unscanned REASON".
	setScan = "scan"
)

var expectSets = []string{setSetup, setCached, setUncached, setOwnerTrusted, setOwnerNew, setScan}

// expectFlags collects -expect: per set of operations, the failure keys
// (errorKey) the workload expects, such as a flood's "454 4.7.0" from a
// full password-check pool. Any other failure means the benchmark no
// longer measures what it says: a limit it runs into, a changed reply, a
// crash.
type expectFlags map[string]map[string]bool

func (e expectFlags) String() string { return fmt.Sprint(map[string]map[string]bool(e)) }

// Set takes "KEY" for the operations themselves or "SET=KEY" for one of
// expectSets.
func (e expectFlags) Set(s string) error {
	set, key := setOps, s
	if k, v, ok := strings.Cut(s, "="); ok {
		for _, name := range expectSets {
			if k == name {
				set, key = k, v
			}
		}
	}
	if key == "" {
		return fmt.Errorf("empty failure key in %q", s)
	}
	if e[set] == nil {
		e[set] = map[string]bool{}
	}
	e[set][key] = true
	return nil
}

// check returns the failures of res that e does not expect, by set, and
// the figures the run should have given and did not. measured says whether
// the server's processes were watched (-pid).
func (e expectFlags) check(res *result, o *options, measured bool) (map[string]map[string]int, []string) {
	unexpected := map[string]map[string]int{}
	add := func(set string, errs map[string]int) {
		for k, n := range errs {
			if !e[set][k] {
				if unexpected[set] == nil {
					unexpected[set] = map[string]int{}
				}
				unexpected[set][k] += n
			}
		}
	}
	add(setOps, res.Errors)
	var missing []string
	if res.OK == 0 {
		missing = append(missing, "no "+map[string]string{"send": "message accepted", "idle": "session held",
			"flood": "wrong password rejected", "refused": "connection refused"}[res.Mode])
	}
	if measured && res.Server == nil {
		missing = append(missing, "no server figures")
	}
	switch res.Mode {
	case "send":
		if res.Setup != nil && res.Setup.N == 0 {
			missing = append(missing, "no login")
		}
		if o.drainCmd != "" && res.E2E == nil {
			missing = append(missing, "no end-to-end figure")
		}
	case "idle":
		if res.OK < o.conns {
			missing = append(missing, fmt.Sprintf("%d of %d sessions held", res.OK, o.conns))
		}
		if measured && (res.Server == nil || res.Server.PerConnKiB == 0) {
			missing = append(missing, "no memory per session")
		}
	case "flood":
		for _, l := range []struct {
			set string
			r   *loginResult
		}{{setCached, res.Cached}, {setUncached, res.Uncached}, {setOwnerTrusted, res.OwnerTrusted}, {setOwnerNew, res.OwnerNew}} {
			if l.r == nil {
				continue
			}
			add(l.set, l.r.Errors)
			n := l.r.Latency.N
			for _, c := range l.r.Errors {
				n += c
			}
			if n == 0 && o.probeEvery > 0 {
				missing = append(missing, "no "+l.set+" login tried")
			}
		}
	}
	add(setSetup, res.SetupErrors)
	if o.scanMetrics != "" {
		missing = append(missing, checkScan(res.Scan, res.OK, e[setScan], unexpected)...)
	}
	if len(unexpected) == 0 {
		unexpected = nil
	}
	return unexpected, missing
}

// errFaults marks a run whose failures or missing figures say that the
// benchmark did not measure what it is meant to.
var errFaults = errors.New("the run is not what the workload measures")

// faults describes res's unexpected failures and missing figures as one
// error, nil when there are none: 'unexpected: errors "451 4.7.1"×4604'.
func faults(res *result) error {
	var parts []string
	sets := make([]string, 0, len(res.Unexpected))
	for set := range res.Unexpected {
		sets = append(sets, set)
	}
	sort.Strings(sets)
	for _, set := range sets {
		keys := make([]string, 0, len(res.Unexpected[set]))
		for k := range res.Unexpected[set] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %q×%d", set, k, res.Unexpected[set][k]))
		}
	}
	var msg []string
	if len(parts) > 0 {
		msg = append(msg, "unexpected replies: "+strings.Join(parts, ", "))
	}
	if len(res.Missing) > 0 {
		msg = append(msg, "missing: "+strings.Join(res.Missing, ", "))
	}
	if len(msg) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", errFaults, strings.Join(msg, "; "))
}
