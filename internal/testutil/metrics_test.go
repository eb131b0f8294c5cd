package testutil

import "testing"

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(`# HELP submitd_smtp_auth_total AUTH commands.
# TYPE submitd_smtp_auth_total counter
submitd_smtp_auth_total{outcome="auth_ok"} 3
submitd_smtp_auth_total{outcome="odd value"} 1e+06

go_goroutines 12
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[`submitd_smtp_auth_total{outcome="auth_ok"}`] != 3 ||
		m[`submitd_smtp_auth_total{outcome="odd value"}`] != 1e6 || m["go_goroutines"] != 12 {
		t.Fatalf("parsed %v", m)
	}
	if d := m.Since(Metrics{"go_goroutines": 10}, "go_goroutines"); d != 2 {
		t.Fatalf("Since = %v", d)
	}
	if _, err := ParseMetrics("go_goroutines twelve\n"); err == nil {
		t.Fatal("a bad value parsed")
	}
}
