package testutil

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Metrics is one scrape of a /metrics page: each series, written as the
// page writes it (`submitd_smtp_auth_total{outcome="auth_ok"}`, labels in
// name order), to its value.
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format. Comment lines are skipped;
// a sample line that does not parse is an error naming it.
func ParseMetrics(text string) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// The value follows the last space; label values may hold spaces,
		// but never after the closing brace.
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q has no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// Since is how much series grew from before to m; a series missing from a
// scrape counts as zero there.
func (m Metrics) Since(before Metrics, series string) float64 {
	return m[series] - before[series]
}
