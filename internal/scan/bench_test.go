package scan_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"submitd/internal/scan"
	"submitd/internal/testutil"
)

// BenchmarkScan scans a 4 KiB message with a real rspamd, one scan after
// another, and reports the mean time a scan takes as submitd waits for it
// (ns/scan), rspamd's own time_real (ns/rspamd), and the difference
// (ns/beyond-rspamd): connecting, sending, rspamd's HTTP handling outside
// its task, reading and parsing the reply.
//
//	go test -run '^$' -bench BenchmarkScan -benchtime 500x ./internal/scan/
func BenchmarkScan(b *testing.B) {
	rs := testutil.StartRspamd(b)
	c, err := scan.New(scan.Config{URL: rs.URL})
	if err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n", 70)
	m := envelope(message(body))
	var took, inRspamd time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := c.Scan(context.Background(), m)
		if r.Verdict == nil {
			b.Fatalf("unscanned: %v", r.Err)
		}
		took += r.Took
		inRspamd += r.Verdict.TimeReal
	}
	n := float64(b.N)
	b.ReportMetric(float64(took.Nanoseconds())/n, "ns/scan")
	b.ReportMetric(float64(inRspamd.Nanoseconds())/n, "ns/rspamd")
	b.ReportMetric(float64((took-inRspamd).Nanoseconds())/n, "ns/beyond-rspamd")
}
