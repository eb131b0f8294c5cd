package main

import (
	"math"
	"strings"
	"testing"
)

func res(w, srv string, perSec, p99 float64) *result {
	return &result{Tags: map[string]string{"w": w, "srv": srv}, OK: 1, PerSec: perSec, Latency: latency{N: 1, P99: p99}}
}

func TestTableMediansAndRatios(t *testing.T) {
	results := []*result{
		// Three runs each; the medians are 600, 1000 and 400 msgs/s.
		res("W1", srvSubmitd, 600, 12), res("W1", srvSubmitd, 100, 30), res("W1", srvSubmitd, 700, 9),
		res("W1", srvCeiling, 1000, 10), res("W1", srvCeiling, 900, 8), res("W1", srvCeiling, 1100, 11),
		res("W1", srvPostfix, 400, 50), res("W1", srvPostfix, 400, 50), res("W1", srvPostfix, 300, 60),
		// W2 STARTTLS: enough against the ceiling, not against Postfix.
		res("W2s", srvSubmitd, 70, 1), res("W2s", srvCeiling, 100, 1), res("W2s", srvPostfix, 50, 1), res("W2s", srvChasquid, 35, 1),
	}
	var b strings.Builder
	if err := writeTable(&b, results); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log(out)
	row := func(prefix string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "| "+prefix) {
				return l
			}
		}
		t.Fatalf("no row %q in\n%s", prefix, out)
		return ""
	}
	if r := row("W1: 20 connections"); !strings.Contains(r, "| 600 msgs/s | 1000 msgs/s | 400 msgs/s | – | – | 0.60 | 1.50 | – | – | ≥ 0.5× ceiling | yes |") {
		t.Errorf("W1 row: %s", r)
	}
	// p99: medians 12 and 10 ms, so 1.2× the ceiling, within 1.5×.
	if r := row("W1: p99"); !strings.Contains(r, "| 12.0 ms | 10.0 ms | 50.0 ms | – | – | 1.20 | 0.24 | – | – | ≤ 1.5× ceiling | yes |") {
		t.Errorf("p99 row: %s", r)
	}
	if r := row("W2: new STARTTLS"); !strings.Contains(r, "| 70.0 msgs/s | 100 msgs/s | 50.0 msgs/s | 35.0 msgs/s | – | 0.70 | 1.40 | 2.00 | – | ≥ 0.6× ceiling, ≥ 1.5× Postfix | no |") {
		t.Errorf("W2 row: %s", r)
	}
	// Not measured: dashes, no verdict; a peer that cannot run a
	// workload has a note saying why.
	if r := row("W3: 1 MiB"); !strings.Contains(r, "| – | – | –<sup>2</sup> | –<sup>2</sup> | –<sup>2</sup> | – | – | – | – | ≥ 0.6× ceiling | – |") {
		t.Errorf("W3 row: %s", r)
	}
	if !strings.Contains(out, "<sup>2</sup> "+whyNot["W3"][srvChasquid]+".") {
		t.Error("no note on why the peers have no W3 figure")
	}
	if !strings.Contains(out, "Medians of up to 3 runs") {
		t.Error("run count missing")
	}
}

func TestVerdict(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		g          target
		v, c, p    float64
		wantTarget string
		wantMet    string
	}{
		{target{absolute: 512, lowerIsBetter: true}, 300, nan, nan, "≤ 512", "yes"},
		{target{absolute: 512, lowerIsBetter: true}, 7000, nan, nan, "≤ 512", "no"},
		{target{vsCeiling: 0.9}, 50, nan, nan, "≥ 0.9× ceiling", "–"},
		{target{vsCeiling: 1.1, lowerIsBetter: true}, 50, 40, nan, "≤ 1.1× ceiling", "no"},
		{target{}, 1, 1, 1, "–", "–"},
	}
	for _, tt := range tests {
		gotT, gotM := verdict(tt.g, tt.v, tt.c, tt.p)
		if gotT != tt.wantTarget || gotM != tt.wantMet {
			t.Errorf("verdict(%+v, %v, %v, %v) = %q, %q; want %q, %q", tt.g, tt.v, tt.c, tt.p, gotT, gotM, tt.wantTarget, tt.wantMet)
		}
	}
}

func TestReadResultsRejectsGarbage(t *testing.T) {
	if _, err := readResults(strings.NewReader("{\"ok\": 1}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err = %v, want one naming line 2", err)
	}
}

func TestScanTable(t *testing.T) {
	scanned := func(w string, perSec, p99, mean, inRspamd float64) *result {
		r := res(w, srvSubmitdScan, perSec, p99)
		r.Scan = &scanResult{Scanned: 1, MeanMs: mean, RspamdMs: inRspamd, BeyondMs: mean - inRspamd}
		return r
	}
	// The closed loop alone: its table, without the comparison with the
	// peers.
	results := []*result{
		res("W1s", srvSubmitd, 1000, 40), res("W1s", srvSubmitd, 1200, 30), res("W1s", srvSubmitd, 800, 50),
		scanned("W1s", 500, 80, 20, 15), scanned("W1s", 600, 60, 10, 8), scanned("W1s", 300, 100, 30, 20),
	}
	var b strings.Builder
	if err := writeTable(&b, results); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log(out)
	if strings.Contains(out, "ceiling") || strings.Contains(out, "open loop") || !strings.Contains(out, "medians of up to 3 runs") {
		t.Errorf("want the closed loop's table only, with its run count:\n%s", out)
	}
	for _, want := range []string{
		"| figure | closed loop: scanning off | closed loop: scanning on | on ÷ off |",
		"| accepted (20 connections, AUTH once, 4 KiB, STARTTLS) | 1000 msgs/s | 500 msgs/s | 0.50 |",
		"| p99 latency | 40.0 ms | 80.0 ms | 2.00 |",
		"| a scan as submitd waits for it, mean | – | 20.0 ms | – |",
		"| rspamd's own time (its time_real), mean | – | 15.0 ms | – |",
		"| submitd's added time beyond rspamd's time_real, mean | – | 5.00 ms | – |",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no row %q", want)
		}
	}
	// With the open loop and W1: both tables, the open loop's columns
	// titled with its rate.
	rate := func(r *result) *result { r.Tags["rate"] = "20"; return r }
	results = append(results, res("W1", srvSubmitd, 900, 40),
		rate(res("W1s-rate", srvSubmitd, 20, 10)), rate(scanned("W1s-rate", 20, 15, 4, 3)))
	b.Reset()
	if err := writeTable(&b, results); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	for _, want := range []string{
		"| W1: 20 connections",
		"| figure | closed loop: scanning off | closed loop: scanning on | on ÷ off | open loop, 20 msgs/s: scanning off | open loop, 20 msgs/s: scanning on | on ÷ off |\n",
		"| p99 latency | 40.0 ms | 80.0 ms | 2.00 | 10.0 ms | 15.0 ms | 1.50 |\n",
		"| submitd's added time beyond rspamd's time_real, mean | – | 5.00 ms | – | – | 1.00 ms | – |\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if err := writeTable(&b, nil); err == nil {
		t.Error("no results gave a table")
	}
}
