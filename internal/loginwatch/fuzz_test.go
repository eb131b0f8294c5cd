package loginwatch

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"submitd/internal/testutil"
)

// FuzzWatch runs a sequence of operations read from the input (one per
// three bytes: operation, login, client) against a Watch with small bounds,
// and checks what must hold whatever a client does: a network with a
// success in TrustFor is never refused, the memory bounds hold, a refusal
// says why, and a restart (a flush, and a new Watch restored from the
// store) keeps every login under attack under attack.
func FuzzWatch(f *testing.F) {
	f.Add([]byte{0, 1, 1, 1, 1, 2, 1, 1, 3, 1, 1, 4, 2, 1, 9, 2, 1, 1})
	f.Add([]byte{1, 0, 0, 1, 0, 1, 1, 0, 2, 3, 0, 0, 2, 0, 7, 4, 0, 0, 2, 0, 7})
	f.Add([]byte{1, 1, 1, 1, 1, 2, 1, 1, 3, 4, 0, 1, 2, 1, 9, 3, 0, 30, 4, 0, 1, 2, 1, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		ctx := context.Background()
		clock := testutil.NewClock(time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC))
		st, err := NewSQLite(ctx, testutil.OpenDB(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{MaxFailures: 3, MaxLogins: 4, MaxNetworks: 2, Window: time.Hour, AttackFor: time.Hour, Now: clock.Now}
		w := New(cfg, st)
		if err := w.Restore(ctx, st); err != nil {
			t.Fatal(err)
		}
		// trusted is the last success of each login and network, as the
		// test saw them.
		trusted := map[recentKey]time.Time{}
		networks := map[string]map[netip.Prefix]bool{}
		for i := 0; i+2 < len(ops) && i < 3*200; i += 3 {
			login := fmt.Sprintf("u%d@firma.cz", ops[i+1]%8)
			ip := netip.AddrFrom4([4]byte{10, ops[i+2] % 4, ops[i+2], 1})
			k := recentKey{login, w.NetworkOf(ip)}
			switch ops[i] % 5 {
			case 0:
				w.Succeeded(ctx, login, ip)
				trusted[k] = clock.Now()
				if networks[login] == nil {
					networks[login] = map[netip.Prefix]bool{}
				}
				networks[login][k.network] = true
			case 1:
				w.Failed(ctx, login, ip)
			case 2:
				d := w.Check(ctx, login, ip)
				// Only the latest MaxNetworks of a login are kept, so a
				// network is sure to be trusted only while the login
				// has used at most that many.
				if t0, ok := trusted[k]; ok && d.Refuse && len(networks[login]) <= 2 && clock.Now().Sub(t0) < w.Config().TrustFor {
					t.Fatalf("op %d: trusted network %s refused for %s: %s", i/3, k.network, login, d.Reason)
				}
				if d.Refuse && d.Reason == "" {
					t.Fatalf("op %d: refusal without a reason", i/3)
				}
			case 3:
				clock.Advance(time.Duration(ops[i+2]) * time.Minute)
			case 4:
				if ops[i+2]%2 == 0 {
					w.Clear(login)
					break
				}
				before := w.List(false)
				if err := w.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				w = New(cfg, st)
				if err := w.Restore(ctx, st); err != nil {
					t.Fatal(err)
				}
				after := w.List(false)
				if len(after) != len(before) {
					t.Fatalf("op %d: under attack before a restart %+v, after %+v", i/3, before, after)
				}
				for j := range before {
					if after[j].Login != before[j].Login || after[j].Failures != before[j].Failures || !after[j].Until.Equal(before[j].Until) {
						t.Fatalf("op %d: under attack before a restart %+v, after %+v", i/3, before[j], after[j])
					}
				}
			}
			if s := w.Stats(); s.Tracked > 4 {
				t.Fatalf("op %d: %d logins held, bound 4", i/3, s.Tracked)
			}
			for _, l := range w.List(true) {
				if l.IPs > MaxIPs || l.IPs < 1 {
					t.Fatalf("op %d: %+v", i/3, l)
				}
			}
		}
	})
}
