package contain

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/testutil"
)

// trips collects what a detector fires.
type trips struct {
	mu  sync.Mutex
	got []Trip
}

func (t *trips) add(tr Trip) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.got = append(t.got, tr)
}

func (t *trips) take() []Trip {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.got
	t.got = nil
	return out
}

var testThresholds = Thresholds{
	LimitHits: 3, LimitWindow: time.Hour,
	BounceShare: 0.5, BounceMin: 10, BounceWindow: time.Hour,
	Networks: 4, NetworksWindow: time.Hour,
	RiseFactor: 5, RiseFloor: 20, RiseDays: 7,
}

func newTestDetector(th Thresholds) (*Detector, *trips, *testutil.Clock) {
	clk := testutil.NewClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	tr := &trips{}
	return NewDetector(th, 0, clk.Now, tr.add), tr, clk
}

// wantTrip checks that exactly one trip of signal fired.
func wantTrip(t *testing.T, got []Trip, signal string) Trip {
	t.Helper()
	if len(got) != 1 || got[0].Signal != signal || got[0].Account != "jan@firma.cz" {
		t.Fatalf("trips %+v, want one %s of jan@firma.cz", got, signal)
	}
	return got[0]
}

// TestLimitHits: the third limit hit within the hour trips, two do not;
// refusals within one minute are one hit;
// hits older than the window slide out; a trip starts the count afresh.
func TestLimitHits(t *testing.T) {
	d, tr, clk := newTestDetector(testThresholds)
	d.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now())
	clk.Advance(40 * time.Minute)
	d.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now())
	clk.Advance(30 * time.Minute) // the first hit is out of the window now
	d.LimitHit("jan@firma.cz", "messages_per_hour", clk.Now())
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped with two hits in the window: %+v", got)
	}
	d.LimitHit("eva@firma.cz", "recipients_per_hour", clk.Now())
	// A burst of refusals within one minute (one message to too many
	// recipients) counts as one hit.
	for range 50 {
		d.LimitHit("jan@firma.cz", "recipients_per_hour", clk.Now())
	}
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("a burst in one minute tripped: %+v", got)
	}
	clk.Advance(time.Minute)
	d.LimitHit("jan@firma.cz", "recipients_per_day", clk.Now())
	trip := wantTrip(t, tr.take(), SignalLimits)
	if trip.Figures["hits"] != 3 || trip.Figures["threshold"] != 3 {
		t.Fatalf("figures %v", trip.Figures)
	}
	clk.Advance(time.Minute)
	d.LimitHit("jan@firma.cz", "recipients_per_day", clk.Now())
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped again at once: %+v", got)
	}
}

// TestSpam: messages refused or flagged as spam trip within the window
// (SPEC R22), older ones drop out, and a trip starts the count afresh.
func TestSpam(t *testing.T) {
	th := testThresholds
	th.Spam, th.SpamWindow = 3, time.Hour
	d, tr, clk := newTestDetector(th)
	d.Spam("jan@firma.cz", "reject", clk.Now())
	clk.Advance(50 * time.Minute)
	d.Spam("jan@firma.cz", "add header", clk.Now())
	d.Spam("eva@firma.cz", "reject", clk.Now())
	clk.Advance(20 * time.Minute) // the first is out of the window now
	d.Spam("jan@firma.cz", "reject", clk.Now())
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped with two in the window: %+v", got)
	}
	d.Spam("jan@firma.cz", "reject", clk.Now())
	trip := wantTrip(t, tr.take(), SignalSpam)
	if trip.Account != "jan@firma.cz" || trip.Figures["messages"] != 3 || trip.Figures["threshold"] != 3 {
		t.Fatalf("trip %+v", trip)
	}
	d.Spam("jan@firma.cz", "reject", clk.Now())
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped again at once: %+v", got)
	}
	off, tr2, _ := newTestDetector(testThresholds)
	for range 10 {
		off.Spam("jan@firma.cz", "reject", clk.Now())
	}
	if got := tr2.take(); len(got) != 0 {
		t.Fatalf("a signal set to 0 tripped: %+v", got)
	}
}

func results(ok, refused, temp int) []delivery.Result {
	var out []delivery.Result
	for i := range ok {
		out = append(out, delivery.Result{Rcpt: fmt.Sprintf("ok%d@a.test", i), Status: delivery.Delivered})
	}
	for i := range refused {
		out = append(out, delivery.Result{Rcpt: fmt.Sprintf("no%d@a.test", i), Status: delivery.Permanent})
	}
	for i := range temp {
		out = append(out, delivery.Result{Rcpt: fmt.Sprintf("later%d@a.test", i), Status: delivery.Temporary})
	}
	return out
}

// TestBounces: half refused trips only from the minimum count on;
// temporary failures count for nothing; old results slide out.
func TestBounces(t *testing.T) {
	d, tr, clk := newTestDetector(testThresholds)
	d.Delivered("jan@firma.cz", results(4, 5, 50))
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped below the minimum: %+v", got)
	}
	clk.Advance(2 * time.Hour) // those slide out
	d.Delivered("jan@firma.cz", results(5, 4, 0))
	d.Delivered("jan@firma.cz", results(1, 0, 0))
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped at 4 of 10: %+v", got)
	}
	d.Delivered("jan@firma.cz", results(0, 2, 0))
	trip := wantTrip(t, tr.take(), SignalBounces)
	if trip.Figures["recipients"] != 12 || trip.Figures["refused"] != 6 {
		t.Fatalf("figures %v", trip.Figures)
	}
}

// TestNetworks: logins from four /24s within the hour trip; addresses in
// one /24 (or one IPv6 /48) count once; networks older than the hour slide
// out.
func TestNetworks(t *testing.T) {
	d, tr, clk := newTestDetector(testThresholds)
	login := func(ip string) { d.LoggedIn("jan@firma.cz", netip.MustParseAddr(ip), "pc", clk.Now()) }
	login("198.51.100.1")
	login("198.51.100.200")
	login("2001:db8:1:1::1")
	login("2001:db8:1:ffff::2")
	clk.Advance(50 * time.Minute)
	login("203.0.113.5")
	clk.Advance(20 * time.Minute) // the first two networks slide out
	login("192.0.2.9")
	login("198.51.100.7") // back in the window
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped with three networks in the hour: %+v", got)
	}
	login("100.64.0.1")
	trip := wantTrip(t, tr.take(), SignalNetworks)
	if trip.Figures["networks"] != 4 {
		t.Fatalf("figures %v", trip.Figures)
	}
}

// TestVolumeRise: with no history the floor decides; with a week of 10
// messages an hour, 5 times the mean (50) decides, in a rolling hour.
func TestVolumeRise(t *testing.T) {
	d, tr, clk := newTestDetector(testThresholds)
	send := func(n int) {
		for range n {
			d.Queued("jan@firma.cz", 1, clk.Now())
		}
	}
	send(19)
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped below the floor: %+v", got)
	}
	send(1)
	wantTrip(t, tr.take(), SignalVolume)

	d.Forget("jan@firma.cz")
	for range 7 * 24 {
		send(10)
		clk.Advance(time.Hour)
	}
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("a steady 10 an hour tripped: %+v", got)
	}
	send(30)
	clk.Advance(40 * time.Minute) // a new clock hour, the same rolling hour
	send(19)
	if got := tr.take(); len(got) != 0 {
		t.Fatalf("tripped at 49 in the rolling hour: %+v", got)
	}
	send(1)
	trip := wantTrip(t, tr.take(), SignalVolume)
	if trip.Figures["last_hour"] != 50 || trip.Figures["mean_per_hour"] < 9 || trip.Figures["mean_per_hour"] > 11 {
		t.Fatalf("figures %v", trip.Figures)
	}
}

// TestDetectorBounded: 5000 accounts heard of leave at most
// maxAccounts tracked, and one account's logins from 50000 networks at
// most MaxNetworks, the highest threshold.
func TestDetectorBounded(t *testing.T) {
	clk := testutil.NewClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	d := NewDetector(testThresholds, 500, clk.Now, nil)
	for i := range 5000 {
		d.LoggedIn(fmt.Sprintf("u%d@firma.cz", i), netip.MustParseAddr("192.0.2.1"), "", clk.Now())
	}
	if n := d.Tracked(); n > 500 {
		t.Fatalf("%d accounts tracked, bound 500", n)
	}
	th := testThresholds
	th.Networks = MaxNetworks
	d = NewDetector(th, 0, clk.Now, nil)
	for i := range 50000 {
		d.LoggedIn("jan@firma.cz", netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), "", clk.Now())
	}
	d.mu.Lock()
	n := len(d.accounts["jan@firma.cz"].nets)
	d.mu.Unlock()
	if n > MaxNetworks {
		t.Fatalf("%d networks kept", n)
	}
}

// BenchmarkQueued is the detector's cost on the SMTP path for every queued
// message, over 1000 accounts.
func BenchmarkQueued(b *testing.B) {
	d := NewDetector(testThresholds, 0, nil, nil)
	accts := make([]string, 1000)
	for i := range accts {
		accts[i] = fmt.Sprintf("u%d@firma.cz", i)
	}
	at := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Queued(accts[i%len(accts)], 1, at)
	}
}

// BenchmarkLoggedIn is its cost for every successful AUTH.
func BenchmarkLoggedIn(b *testing.B) {
	d := NewDetector(testThresholds, 0, nil, nil)
	ip := netip.MustParseAddr("192.0.2.7")
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		d.LoggedIn("jan@firma.cz", ip, "pc", at)
	}
}

// TestWindowMatchesReference: the ring's sums, its kept total included,
// equal a plain count of the buckets in range, whatever the steps between
// the buckets added to (forward, backward, past the ring's length) and
// with 16-bit counts saturating.
func TestWindowMatchesReference(t *testing.T) {
	w := newWindow[uint16](7)
	ref := map[int64]uint64{}
	rnd := uint64(1)
	next := func(n uint64) uint64 { rnd = rnd*6364136223846793005 + 1442695040888963407; return (rnd >> 33) % n }
	b := int64(100)
	for i := range 5000 {
		switch next(10) {
		case 0:
			b += int64(next(20)) // may jump past the ring
		case 1:
			b -= int64(next(9)) // an older bucket, maybe too old
		default:
			b += int64(next(2))
		}
		n := uint32(next(5))
		if i%1000 == 0 {
			n = 70000 // saturates
		}
		w.add(b, n)
		if b > w.head-7 {
			ref[b] = min(ref[b]+uint64(n), 65535)
		}
		for k := range ref {
			if k <= w.head-7 {
				delete(ref, k)
			}
		}
		var all, older uint64
		for k, v := range ref {
			all += v
			if k < w.head {
				older += v
			}
		}
		if got := w.sum(w.head-6, w.head); got != all {
			t.Fatalf("step %d: sum %d, want %d", i, got, all)
		}
		if got := w.before(); got != older {
			t.Fatalf("step %d: before %d, want %d", i, got, older)
		}
		if got, want := w.sum(w.head-2, w.head-1), ref[w.head-2]+ref[w.head-1]; got != want {
			t.Fatalf("step %d: partial sum %d, want %d", i, got, want)
		}
	}
}
