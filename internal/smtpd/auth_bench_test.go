package smtpd

import (
	"context"
	"testing"
	"time"

	"submitd/internal/auth"
	"submitd/internal/password"
)

// BenchmarkAuthSession measures a client that connects for every message:
// connect, implicit TLS, EHLO, AUTH, QUIT, with the account's password as an
// argon2id hash (the default scheme), with and without the credential cache:
//
//	go test -run '^$' -bench AuthSession ./internal/smtpd/
func BenchmarkAuthSession(b *testing.B) {
	hash, err := password.Hash(password.Argon2id, testPassword)
	if err != nil {
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
			e := newTestEnv(b, withServer(func(s *Server) {
				a, err := auth.New(auth.Config{Directory: s.Directory, CacheTTL: bc.ttl})
				if err != nil {
					b.Fatal(err)
				}
				s.Auth = a
			}))
			if err := e.dir.SetPassword(context.Background(), "jan@firma.cz", hash); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				c := e.dial("submissions")
				c.last()
				c.expect("EHLO bench.example", "250 ")
				c.expect(plain("jan@firma.cz", testPassword), "235 ")
				c.send("QUIT")
				c.last()
				c.conn.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}
