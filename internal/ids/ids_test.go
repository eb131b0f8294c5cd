package ids

import (
	"sort"
	"testing"
	"time"
)

func TestSession(t *testing.T) {
	seen := map[string]bool{}
	counts := map[byte]int{}
	for i := 0; i < 20000; i++ {
		s := Session()
		if !IsSession(s) {
			t.Fatalf("%q is not a session id", s)
		}
		if seen[s] {
			t.Fatalf("duplicate %q", s)
		}
		seen[s] = true
		for j := 0; j < len(s); j++ {
			counts[s[j]]++
		}
	}
	// Every character of [A-Za-z0-9] is used, none far more than another.
	if len(counts) != 62 {
		t.Fatalf("%d distinct characters", len(counts))
	}
	for c, n := range counts {
		if want := 20000 * SessionLen / 62; n < want*8/10 || n > want*12/10 {
			t.Errorf("character %q used %d times, expected about %d", c, n, want)
		}
	}
	for _, bad := range []string{"", "piWs1j0010jifNx01iWsd", "piWs1j0010jifNx01iWsdh1", "piWs1j0010jifNx01iWs-h"} {
		if IsSession(bad) {
			t.Errorf("IsSession(%q)", bad)
		}
	}
}

func TestQueue(t *testing.T) {
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var list []string
	for i := 0; i < 100; i++ {
		q := Queue(base.Add(time.Duration(i) * time.Millisecond))
		if !IsQueue(q) {
			t.Fatalf("%q is not a queue id", q)
		}
		list = append(list, q)
	}
	if !sort.StringsAreSorted(list) {
		t.Fatal("queue ids do not sort by time")
	}
	if a, b := Queue(base), Queue(base); a == b {
		t.Fatal("two ids made at the same instant are equal")
	}
	for _, bad := range []string{"", "../../etc/passwd", "33LRHKJ7B47FAO68FVG29102", "33lrhkj7b47fao68fvg2910z"} {
		if IsQueue(bad) {
			t.Errorf("IsQueue(%q)", bad)
		}
	}
}
