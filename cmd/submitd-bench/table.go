package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// Server tags of the systems compared.
const (
	srvSubmitd  = "submitd"
	srvCeiling  = "ceiling"
	srvPostfix  = "postfix"
	srvChasquid = "chasquid"
	srvMaddy    = "maddy"
	// srvSubmitdScan is submitd scanning every message with rspamd
	// ([scan] rspamd_url), in scanWorkloads.
	srvSubmitdScan = "submitd+rspamd"
)

// scanWorkloads are the workload tags of W1 against submitd without
// content scanning (srvSubmitd) and with it (srvSubmitdScan), side by
// side: closed loop, as W1, and open loop at a fixed rate (-rate, its
// result tagged rate=N), a node that is not saturated.
var scanWorkloads = []struct{ w, title string }{{"W1s", "closed loop"}, {"W1s-rate", "open loop"}}

// peers are the servers submitd is compared with, in the table's order,
// with their column titles.
var peers = []struct{ tag, title string }{
	{srvCeiling, "ceiling (go-smtp, discarding)"},
	{srvPostfix, "Postfix"},
	{srvChasquid, "chasquid"},
	{srvMaddy, "maddy"},
}

// whyNot says, per workload tag and server, why the server has no figure
// for it; the table prints these as notes below it.
var whyNot = map[string]map[string]string{
	"W1": {srvCeiling: "the ceiling discards messages: nothing is written or delivered"},
	"W3": {srvPostfix: "W3 compares with the ceiling only", srvChasquid: "W3 compares with the ceiling only",
		srvMaddy: "W3 compares with the ceiling only"},
	"W4": {srvPostfix: "one process per session (smtpd): W4 compares single-process servers with the ceiling",
		srvChasquid: "W4 compares with the ceiling only", srvMaddy: "W4 compares with the ceiling only"},
	"W5": {srvPostfix: "not run: W5 compares with the ceiling and the Go peers"},
	"W6": {srvPostfix: "Postfix's submission smtpd blocks no address after failed logins (anvil only limits rates)",
		srvChasquid: "chasquid blocks no address after failed logins",
		srvMaddy:    "maddy blocks no address after failed logins"},
}

// target is a goal for submitd's figure. Exactly one of the factors or
// the absolute bound is used per comparison.
type target struct {
	// vsCeiling and vsPostfix are the wanted ratio of submitd's figure to
	// the ceiling's and to Postfix's (0: none).
	vsCeiling, vsPostfix float64
	// absolute is a bound on submitd's figure itself (0: none).
	absolute float64
	// lowerIsBetter turns the bounds into upper bounds (latency, memory).
	lowerIsBetter bool
}

// figure is one row of the table: a workload and a figure of it.
type figure struct {
	// w is the workload tag of the runs it is taken from.
	w string
	// name describes the row.
	name string
	// unit is printed after the values.
	unit string
	// get extracts the figure from a run, false when the run lacks it.
	get func(*result) (float64, bool)
	// goal is the target (zero: shown for information).
	goal target
}

// figures are the rows of BENCHMARKS.md, in order, with the targets of the
// performance issue.
var figures = []figure{
	{"W1", "W1: 20 connections, AUTH once, 4 KiB, STARTTLS, accepted", "msgs/s", perSec, target{vsCeiling: 0.5}},
	{"W1", "W1: p99 latency", "ms", func(r *result) (float64, bool) { return r.Latency.P99, r.Latency.N > 0 }, target{vsCeiling: 1.5, lowerIsBetter: true}},
	{"W1", "W1: server CPU per message", "ms", func(r *result) (float64, bool) {
		return serverField(r, func(s *serverResult) float64 { return s.CPUPerOpMs })
	}, target{}},
	{"W1f", "W1: fsync calls per message (strace, 500 messages)", "", func(r *result) (float64, bool) {
		if r.FsyncsPerMsg == nil {
			return 0, false
		}
		return *r.FsyncsPerMsg, true
	}, target{}},
	{"W1", "W1 end to end: accepted and delivered to smtp-sink", "msgs/s", func(r *result) (float64, bool) {
		if r.E2E == nil {
			return 0, false
		}
		return r.E2E.PerSec, true
	}, target{vsPostfix: 2}},
	{"W2s", "W2: new STARTTLS connection + AUTH per message, 20 clients", "msgs/s", perSec, target{vsCeiling: 0.6, vsPostfix: 1.5}},
	{"W2i", "W2: new implicit-TLS connection + AUTH per message, 20 clients", "msgs/s", perSec, target{vsCeiling: 0.6, vsPostfix: 1.5}},
	{"W3", "W3: 1 MiB messages, 10 connections", "MB/s", func(r *result) (float64, bool) { return r.MBPerSec, r.OK > 0 }, target{vsCeiling: 0.6}},
	{"W3", "W3: server CPU per MiB", "ms", func(r *result) (float64, bool) {
		return serverField(r, func(s *serverResult) float64 { return s.CPUPerMiBMs })
	}, target{}},
	{"W4", "W4: memory per idle authenticated TLS session", "KiB", func(r *result) (float64, bool) {
		return serverField(r, func(s *serverResult) float64 { return s.PerConnKiB })
	}, target{vsCeiling: 1.1, lowerIsBetter: true}},
	{"W5", "W5: wrong-password flood, peak RSS", "MiB", func(r *result) (float64, bool) {
		return serverField(r, func(s *serverResult) float64 { return float64(s.PeakRSSKiB) / 1024 })
	}, target{absolute: 512, lowerIsBetter: true}},
	{"W5", "W5: legitimate login during the flood, cached, p99", "ms", func(r *result) (float64, bool) {
		if r.Cached == nil || r.Cached.Latency.N == 0 {
			return 0, false
		}
		return r.Cached.Latency.P99, true
	}, target{absolute: 50, lowerIsBetter: true}},
	{"W5", "W5: uncached legitimate logins served (logins not flooded)", "%", served(func(r *result) *loginResult { return r.Uncached }), target{absolute: 100}},
	{"W5", "W5: flooded login, its owner from a network it logged in from before: served", "%", served(func(r *result) *loginResult { return r.OwnerTrusted }), target{absolute: 100}},
	{"W5", "W5: flooded login, its owner from a new network: served (SPEC R21 refuses)", "%", served(func(r *result) *loginResult { return r.OwnerNew }), target{}},
	{"W6p", "W6: refusals of a blocked IP, STARTTLS port (plain)", "/s", perSec, target{vsCeiling: 0.9}},
	{"W6i", "W6: refusals of a blocked IP, implicit TLS", "/s", perSec, target{vsCeiling: 0.9}},
}

// scanFigures are the rows of the table of scanWorkloads; the columns
// say the workload.
var scanFigures = []figure{
	{"", "accepted (20 connections, AUTH once, 4 KiB, STARTTLS)", "msgs/s", perSec, target{}},
	{"", "p50 latency", "ms", func(r *result) (float64, bool) { return r.Latency.P50, r.Latency.N > 0 }, target{}},
	{"", "p99 latency", "ms", func(r *result) (float64, bool) { return r.Latency.P99, r.Latency.N > 0 }, target{}},
	{"", "submitd's CPU per message (rspamd's not counted)", "ms", func(r *result) (float64, bool) {
		return serverField(r, func(s *serverResult) float64 { return s.CPUPerOpMs })
	}, target{}},
	{"", "a scan as submitd waits for it, mean", "ms", scanField(func(s *scanResult) float64 { return s.MeanMs }), target{}},
	{"", "rspamd's own time (its time_real), mean", "ms", scanField(func(s *scanResult) float64 { return s.RspamdMs }), target{}},
	{"", "submitd's added time beyond rspamd's time_real, mean", "ms", scanField(func(s *scanResult) float64 { return s.BeyondMs }), target{}},
}

func perSec(r *result) (float64, bool) { return r.PerSec, r.OK > 0 }

// scanField is a figure of the scans of a run that scanned.
func scanField(f func(*scanResult) float64) func(*result) (float64, bool) {
	return func(r *result) (float64, bool) {
		if r.Scan == nil || r.Scan.Scanned == 0 {
			return 0, false
		}
		return f(r.Scan), true
	}
}

// served is the share of a set of logins that got 235, in percent.
func served(set func(*result) *loginResult) func(*result) (float64, bool) {
	return func(r *result) (float64, bool) {
		l := set(r)
		if l == nil {
			return 0, false
		}
		failed := 0
		for _, n := range l.Errors {
			failed += n
		}
		all := l.Latency.N + failed
		if all == 0 {
			return 0, false
		}
		return 100 * float64(l.Latency.N) / float64(all), true
	}
}

func serverField(r *result, f func(*serverResult) float64) (float64, bool) {
	if r.Server == nil {
		return 0, false
	}
	return f(r.Server), true
}

// readResults reads JSON lines written by -json.
func readResults(r io.Reader) ([]*result, error) {
	var out []*result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var res result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, &res)
	}
	return out, sc.Err()
}

// medians is the median of each of figs per server: medians[row][server].
// runs is the largest number of runs any value is the median of.
func medians(figs []figure, results []*result) (m []map[string]float64, runs int) {
	m = make([]map[string]float64, len(figs))
	for i, f := range figs {
		vals := map[string][]float64{}
		for _, r := range results {
			if r.Tags["w"] != f.w {
				continue
			}
			if v, ok := f.get(r); ok {
				vals[r.Tags["srv"]] = append(vals[r.Tags["srv"]], v)
			}
		}
		m[i] = map[string]float64{}
		for srv, vs := range vals {
			m[i][srv] = median(vs)
			runs = max(runs, len(vs))
		}
	}
	return m, runs
}

// verdict judges submitd's value v against the goal, given the ceiling's
// and Postfix's medians (NaN when not measured). It returns the target as
// text and "yes", "no" or "–" (no target, or nothing to compare with).
func verdict(g target, v, ceil, pf float64) (string, string) {
	var parts []string
	met, judged := true, false
	check := func(desc string, bound float64) {
		parts = append(parts, desc)
		if math.IsNaN(v) || math.IsNaN(bound) {
			return
		}
		judged = true
		if g.lowerIsBetter {
			met = met && v <= bound
		} else {
			met = met && v >= bound
		}
	}
	cmp := "≥"
	if g.lowerIsBetter {
		cmp = "≤"
	}
	if g.vsCeiling > 0 {
		check(fmt.Sprintf("%s %g× ceiling", cmp, g.vsCeiling), g.vsCeiling*ceil)
	}
	if g.vsPostfix > 0 {
		check(fmt.Sprintf("%s %g× Postfix", cmp, g.vsPostfix), g.vsPostfix*pf)
	}
	if g.absolute > 0 {
		check(fmt.Sprintf("%s %s", cmp, formatValue(g.absolute)), g.absolute)
	}
	if len(parts) == 0 {
		return "–", "–"
	}
	switch {
	case !judged:
		return strings.Join(parts, ", "), "–"
	case met:
		return strings.Join(parts, ", "), "yes"
	}
	return strings.Join(parts, ", "), "no"
}

// formatValue prints a figure with about three significant digits.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// ratio prints a/b, "–" when either is missing.
func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// writeTable prints the Markdown table of the medians, and below it the
// reasons for the figures a server does not have; then the table of
// scanWorkloads, when they ran.
func writeTable(w io.Writer, results []*result) error {
	m, runs := medians(figures, results)
	if runs > 0 {
		writeComparison(w, m, runs)
	}
	scanRuns := writeScanTable(w, results, runs > 0)
	if runs == 0 && scanRuns == 0 {
		return errors.New("no results")
	}
	return nil
}

// writeScanTable prints the medians of scanFigures for each of
// scanWorkloads that ran, a blank line first when after is set: submitd
// without content scanning and with it, and their ratio. It returns the
// largest number of runs a value is the median of, 0 when none ran.
func writeScanTable(w io.Writer, results []*result, after bool) int {
	type column struct {
		title string
		m     []map[string]float64
	}
	var cols []column
	runs := 0
	for _, sw := range scanWorkloads {
		figs := slices.Clone(scanFigures)
		for i := range figs {
			figs[i].w = sw.w
		}
		m, n := medians(figs, results)
		if n == 0 {
			continue
		}
		title := sw.title
		for _, r := range results {
			if r.Tags["w"] == sw.w && r.Tags["rate"] != "" {
				title += ", " + r.Tags["rate"] + " msgs/s"
				break
			}
		}
		cols = append(cols, column{title, m})
		runs = max(runs, n)
	}
	if runs == 0 {
		return 0
	}
	if after {
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Content scanning: W1 against submitd without and with rspamd, medians of up to %d runs.\n\n", runs)
	head, rule := "| figure |", "|---|"
	for _, c := range cols {
		head += fmt.Sprintf(" %s: scanning off | %s: scanning on | on ÷ off |", c.title, c.title)
		rule += "---:|---:|---:|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, rule)
	for i, f := range scanFigures {
		row := "| " + f.name + " |"
		for _, c := range cols {
			off, on := medianOf(c.m[i], srvSubmitd), medianOf(c.m[i], srvSubmitdScan)
			row += fmt.Sprintf(" %s | %s | %s |", f.cell(off), f.cell(on), ratio(on, off))
		}
		fmt.Fprintln(w, row)
	}
	return runs
}

// medianOf is a server's median of a row, NaN when it has none.
func medianOf(row map[string]float64, srv string) float64 {
	if v, ok := row[srv]; ok {
		return v
	}
	return math.NaN()
}

// cell prints a value of the figure with its unit, "–" when missing.
func (f figure) cell(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if f.unit == "%" || f.unit == "/s" || f.unit == "" {
		return formatValue(v) + f.unit
	}
	return formatValue(v) + " " + f.unit
}

// writeComparison prints the table of figures, m and runs from medians.
func writeComparison(w io.Writer, m []map[string]float64, runs int) {
	fmt.Fprintf(w, "Medians of up to %d runs per figure.\n\n", runs)
	head, rule := "| workload and figure | submitd |", "|---|---:|"
	for _, p := range peers {
		head += " " + p.title + " |"
		rule += "---:|"
	}
	for _, p := range peers {
		head += " submitd ÷ " + strings.Fields(p.title)[0] + " |"
		rule += "---:|"
	}
	fmt.Fprintln(w, head+" target | met |")
	fmt.Fprintln(w, rule+"---|---|")
	get := func(i int, srv string) float64 { return medianOf(m[i], srv) }
	var notes []string
	noteNo := map[string]int{}
	for i, f := range figures {
		s := get(i, srvSubmitd)
		goal, met := verdict(f.goal, s, get(i, srvCeiling), get(i, srvPostfix))
		cell := f.cell
		if f.goal.absolute > 0 {
			goal = strings.Replace(goal, formatValue(f.goal.absolute), cell(f.goal.absolute), 1)
		}
		row := fmt.Sprintf("| %s | %s |", f.name, cell(s))
		for _, p := range peers {
			c := cell(get(i, p.tag))
			if why := whyNot[strings.TrimRight(f.w, "spifc")][p.tag]; why != "" && c == "–" {
				if noteNo[why] == 0 {
					notes = append(notes, why)
					noteNo[why] = len(notes)
				}
				c = fmt.Sprintf("–<sup>%d</sup>", noteNo[why])
			}
			row += " " + c + " |"
		}
		for _, p := range peers {
			row += " " + ratio(s, get(i, p.tag)) + " |"
		}
		fmt.Fprintf(w, "%s %s | %s |\n", row, goal, met)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for i, n := range notes {
			fmt.Fprintf(w, "<sup>%d</sup> %s.", i+1, n)
			if i < len(notes)-1 {
				fmt.Fprint(w, " ")
			}
		}
		fmt.Fprintln(w)
	}
}

// tableMain is "submitd-bench table [FILE]": the table of the JSON lines in
// FILE (or standard input).
func tableMain(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("submitd-bench table", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	in := io.Reader(os.Stdin)
	if fs.NArg() > 0 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	results, err := readResults(in)
	if err != nil {
		return err
	}
	return writeTable(out, results)
}
