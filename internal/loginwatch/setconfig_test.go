package loginwatch

import (
	"context"
	"testing"
	"time"
)

// SetConfig puts new limits in force on the failures already counted: a
// login with three failures reaches a lowered threshold of four, or of
// two, at its next failure, and a raised one of eight after five more; the
// network sizes stay.
func TestSetConfig(t *testing.T) {
	for _, tc := range []struct {
		max, more int
	}{{4, 1}, {2, 1}, {8, 5}} {
		ctx := context.Background()
		w, _, clock := newWatch(t, Config{MaxFailures: 5})
		for i := range 3 {
			w.Failed(ctx, jan, ipN(i))
			clock.Advance(time.Minute)
		}
		w.SetConfig(Config{MaxFailures: tc.max, IPv4Prefix: 16})
		if got := w.Config(); got.MaxFailures != tc.max || got.IPv4Prefix != DefaultIPv4Prefix || got.Now == nil {
			t.Fatalf("max %d: config %+v", tc.max, got)
		}
		for i := range tc.more {
			if l, _ := w.Get(jan); l.UnderAttack {
				t.Fatalf("max %d: under attack after %d more failures", tc.max, i)
			}
			w.Failed(ctx, jan, ipN(10+i))
		}
		if l, _ := w.Get(jan); !l.UnderAttack {
			t.Errorf("max %d: not under attack after %d more failures", tc.max, tc.more)
		}
	}
}
