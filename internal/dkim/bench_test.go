package dkim

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkSign measures signing a 10 KB message per algorithm, key lookup
// (cached) included.
func BenchmarkSign(b *testing.B) {
	body := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n", 175)
	m := mailFrom("firma.test") + body
	for _, algo := range []string{Ed25519, RSA} {
		b.Run(algo, func(b *testing.B) {
			st := newStoreB(b)
			k, err := Generate("firma.test", "s", algo)
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Put(context.Background(), k, false); err != nil {
				b.Fatal(err)
			}
			s := NewSigner(st, nil)
			b.SetBytes(int64(len(m)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if sig, err := s.Sign(context.Background(), strings.NewReader(m)); err != nil || sig == "" {
					b.Fatal(sig, err)
				}
			}
		})
	}
}
