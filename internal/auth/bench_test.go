package auth

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/password"
)

// BenchmarkCheck compares a login answered from the credential cache with
// one that runs the argon2id hash (the default scheme), both with the real
// directory lookup:
//
//	go test -run '^$' -bench Check -benchmem ./internal/auth/
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	dir := testDir(b)
	hash, err := password.Hash(password.Argon2id, testPassword)
	if err != nil {
		b.Fatal(err)
	}
	if err := dir.SetPassword(ctx, "jan@firma.cz", hash); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{
		{"uncached", -1},
		{"cached", 15 * time.Minute},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a, err := New(Config{Directory: dir, CacheTTL: bc.ttl})
			if err != nil {
				b.Fatal(err)
			}
			if r := a.Check(ctx, key1, "jan@firma.cz", testPassword); r.Verdict != OK {
				b.Fatalf("verdict %v", r.Verdict)
			}
			for b.Loop() {
				if r := a.Check(ctx, key1, "jan@firma.cz", testPassword); r.Verdict != OK || r.Cached != (bc.ttl > 0) {
					b.Fatalf("verdict %v cached %v", r.Verdict, r.Cached)
				}
			}
		})
	}
}

// BenchmarkWrongPasswordFlood runs 32 wrong-password checks at once from 32
// client keys against an argon2id hash, per operation, and reports the peak
// heap in use: with 2 workers the pool bounds it; with 32 workers (as many as
// the checks, which is how every connection hashed before there was a pool)
// it grows with the connections:
//
//	go test -run '^$' -bench WrongPasswordFlood ./internal/auth/
func BenchmarkWrongPasswordFlood(b *testing.B) {
	ctx := context.Background()
	dir := testDir(b)
	hash, err := password.Hash(password.Argon2id, testPassword)
	if err != nil {
		b.Fatal(err)
	}
	if err := dir.SetPassword(ctx, "jan@firma.cz", hash); err != nil {
		b.Fatal(err)
	}
	const clients = 32
	for _, workers := range []int{2, clients} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			a, err := New(Config{Directory: dir, CacheTTL: -1, Workers: workers, Queue: clients, Wait: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
				for {
					metrics.Read(s)
					if v := s[0].Value.Uint64(); v > peak.Load() {
						peak.Store(v)
					}
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
				}
			}()
			for b.Loop() {
				var wg sync.WaitGroup
				for i := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						k := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 4, 0, byte(i)}), 32)
						if r := a.Check(ctx, k, "jan@firma.cz", fmt.Sprintf("guess %d", i)); r.Verdict != WrongPassword {
							b.Errorf("verdict %v", r.Verdict)
						}
					}()
				}
				wg.Wait()
			}
			close(stop)
			<-sampled
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		})
	}
}
