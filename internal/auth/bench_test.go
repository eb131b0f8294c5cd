package auth

import (
	"context"
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
