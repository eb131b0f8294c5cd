package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// scanResult is what submitd's content scans (SPEC R22) did during a send
// run, from the difference of its metrics before and after the load
// (-scan-metrics).
type scanResult struct {
	// Scanned counts the scans with a verdict; Actions counts them by
	// rspamd's action.
	Scanned int            `json:"scanned"`
	Actions map[string]int `json:"actions"`
	// Unscanned counts the messages that went on, or were deferred,
	// without a verdict, by reason (timeout, busy, error, …).
	Unscanned map[string]int `json:"unscanned,omitempty"`
	// MeanMs is the mean time of a scan as submitd waits for it before
	// its 250 (submitd_scan_duration_seconds); RspamdMs the mean of
	// rspamd's own time_real (submitd_scan_rspamd_seconds); BeyondMs
	// their difference, what submitd and the HTTP exchange add to
	// rspamd's work.
	MeanMs   float64 `json:"mean_ms"`
	RspamdMs float64 `json:"rspamd_ms"`
	BeyondMs float64 `json:"beyond_ms"`
}

// The series of submitd's metrics that scanResult is made of.
const (
	seriesScans        = "submitd_scan_total"
	seriesUnscanned    = "submitd_scan_unscanned_total"
	seriesScanSum      = "submitd_scan_duration_seconds_sum"
	seriesScanRspamd   = "submitd_scan_rspamd_seconds_sum"
	actionNoAction     = "no action"
	maxMetricsResponse = 8 << 20
)

// metricsSample is one scrape of a Prometheus text exposition: the value
// of each series by its name and labels as written,
// `submitd_scan_total{action="no action"}`.
type metricsSample map[string]float64

// scrapeMetrics reads the metrics at url.
func scrapeMetrics(ctx context.Context, url string) (metricsSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, maxMetricsResponse))
}

// parseMetrics reads the Prometheus text format: comment lines, and
// `name{labels} value [timestamp]` per series. Label values may hold
// spaces ("no action"), so the series ends at its closing brace.
func parseMetrics(r io.Reader) (metricsSample, error) {
	m := metricsSample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end > 0 && line[end] == '{' {
			end = strings.LastIndexByte(line, '}') + 1
		}
		fields := strings.Fields(line[max(end, 0):])
		if end <= 0 || len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %d: %q is not a series and a value", n, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", n, err)
		}
		m[line[:end]] = v
	}
	return m, sc.Err()
}

// byLabel returns the series of name with one label, by the label's value.
func (m metricsSample) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	prefix := name + "{" + label + `="`
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if value, ok := strings.CutSuffix(rest, `"}`); ok {
				out[value] = v
			}
		}
	}
	return out
}

// scanDelta is what the scans between the samples before and after did.
func scanDelta(before, after metricsSample) *scanResult {
	counts := func(name, label string) map[string]int {
		b, out := before.byLabel(name, label), map[string]int{}
		for k, v := range after.byLabel(name, label) {
			if d := int(v - b[k]); d != 0 {
				out[k] = d
			}
		}
		return out
	}
	s := &scanResult{Actions: counts(seriesScans, "action"), Unscanned: counts(seriesUnscanned, "reason")}
	for _, n := range s.Actions {
		s.Scanned += n
	}
	if len(s.Unscanned) == 0 {
		s.Unscanned = nil
	}
	if s.Scanned > 0 {
		n := float64(s.Scanned)
		s.MeanMs = (after[seriesScanSum] - before[seriesScanSum]) * 1000 / n
		s.RspamdMs = (after[seriesScanRspamd] - before[seriesScanRspamd]) * 1000 / n
		s.BeyondMs = s.MeanMs - s.RspamdMs
	}
	return s
}

// checkScan adds to unexpected the scans a run expects no more of than
// accepted messages each scanned with "no action": any other action (a
// flagged bench message would count towards the account's spam signal)
// and every message unscanned, under the set "scan" (-expect scan=KEY:
// an action, or "unscanned REASON"). It returns what is missing.
func checkScan(s *scanResult, accepted int, expect map[string]bool, unexpected map[string]map[string]int) []string {
	if s == nil {
		return []string{"no scan figures"}
	}
	add := func(key string, n int) {
		if n > 0 && !expect[key] {
			if unexpected[setScan] == nil {
				unexpected[setScan] = map[string]int{}
			}
			unexpected[setScan][key] += n
		}
	}
	for a, n := range s.Actions {
		if a != actionNoAction {
			add(a, n)
		}
	}
	for r, n := range s.Unscanned {
		add("unscanned "+r, n)
	}
	if s.Scanned < accepted {
		return []string{fmt.Sprintf("%d scans for %d accepted messages", s.Scanned, accepted)}
	}
	return nil
}

// printScan writes the scan figures for a person.
func printScan(w io.Writer, s *scanResult) {
	actions := make([]string, 0, len(s.Actions))
	for a, n := range s.Actions {
		actions = append(actions, fmt.Sprintf("%q×%d", a, n))
	}
	sort.Strings(actions)
	fmt.Fprintf(w, "scans: %d (%s), mean %.2f ms as submitd waits, rspamd's time_real %.2f ms, submitd's added time beyond rspamd %.2f ms\n",
		s.Scanned, strings.Join(actions, " "), s.MeanMs, s.RspamdMs, s.BeyondMs)
	printErrors(w, "unscanned", s.Unscanned)
}
