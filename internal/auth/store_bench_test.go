package auth

import (
	"context"
	"testing"
	"time"

	"submitd/internal/directory"
	"submitd/internal/password"
	"submitd/internal/pgdb/pgtest"
)

// BenchmarkStores compares a successful AUTH with the directory in SQLite
// and in PostgreSQL, side by side in one run: "cached" answers from the
// account cache ([store] cache_ttl) and the credential cache, touching no
// database; "lookup" reads the account from the store at every AUTH (the
// account cache off or expired), the password still answered from the
// credential cache; "hash" also runs argon2id every time.
//
//	go test -run '^$' -bench Stores -benchtime 2s ./internal/auth/
func BenchmarkStores(b *testing.B) {
	ctx := context.Background()
	hash, err := password.Hash(password.Argon2id, testPassword)
	if err != nil {
		b.Fatal(err)
	}
	pgDir, err := directory.NewPostgres(ctx, pgtest.Pool(b))
	if err != nil {
		b.Fatal(err)
	}
	stores := []struct {
		name string
		dir  directory.Store
	}{{"sqlite", testDir(b)}, {"postgres", pgDir}}
	if err := pgDir.AddDomain(ctx, "firma.cz"); err != nil {
		b.Fatal(err)
	}
	if err := pgDir.AddAccount(ctx, "jan@firma.cz", hash); err != nil {
		b.Fatal(err)
	}
	if err := stores[0].dir.SetPassword(ctx, "jan@firma.cz", hash); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"cached", "lookup", "hash"} {
		for _, st := range stores {
			b.Run(mode+"/"+st.name, func(b *testing.B) {
				var dir Directory = st.dir
				if mode == "cached" {
					dir = directory.NewCache(st.dir, time.Hour, 0, nil)
				}
				ttl := 15 * time.Minute
				if mode == "hash" {
					ttl = -1
				}
				a, err := New(Config{Directory: dir, CacheTTL: ttl})
				if err != nil {
					b.Fatal(err)
				}
				if r := a.Check(ctx, key1, "jan@firma.cz", testPassword); r.Verdict != OK {
					b.Fatalf("verdict %v %v", r.Verdict, r.Err)
				}
				for b.Loop() {
					if r := a.Check(ctx, key1, "jan@firma.cz", testPassword); r.Verdict != OK {
						b.Fatalf("verdict %v %v", r.Verdict, r.Err)
					}
				}
			})
		}
	}
}
