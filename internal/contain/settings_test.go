package contain

import (
	"testing"
	"time"
)

// SetThresholds judges the next event by the new thresholds on what the
// windows counted: two limit hits trip a lowered limit_hits of two at the
// next hit; a signal turned off (0) no longer trips; rise_days stays.
func TestSetThresholds(t *testing.T) {
	d, tr, clk := newTestDetector(testThresholds)
	d.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now())
	clk.Advance(time.Minute)
	th := testThresholds
	th.LimitHits, th.RiseDays = 2, 1
	d.SetThresholds(th)
	d.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now())
	if trip := wantTrip(t, tr.take(), SignalLimits); trip.Figures["threshold"] != 2 {
		t.Errorf("figures %v", trip.Figures)
	}
	if got := d.th.Load().RiseDays; got != testThresholds.RiseDays {
		t.Errorf("rise_days %d after SetThresholds, want %d as made", got, testThresholds.RiseDays)
	}
	th.LimitHits = 0
	d.SetThresholds(th)
	for range 5 {
		clk.Advance(time.Minute)
		d.LimitHit("eva@firma.cz", "messages_per_hour", clk.Now())
	}
	if got := tr.take(); len(got) != 0 {
		t.Errorf("a signal turned off tripped: %+v", got)
	}
}
