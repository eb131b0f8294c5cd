package delivery

import (
	"context"
	"testing"

	"submitd/internal/testutil"
)

// BenchmarkDeliver measures whole MX deliveries (DNS lookups, connection,
// EHLO, MAIL, two RCPTs, DATA, QUIT) to a receiver on loopback, without and
// with STARTTLS.
func BenchmarkDeliver(b *testing.B) {
	for _, tlsOn := range []bool{false, true} {
		name := "plain"
		if tlsOn {
			name = "starttls"
		}
		b.Run(name, func(b *testing.B) {
			srv := testutil.NewDNSServer(b)
			rx := testutil.NewReceiver(b, testutil.ReceiverOptions{STARTTLS: tlsOn})
			srv.AddMX("example.test", 10, "mx.example.test")
			srv.AddA("mx.example.test", "127.0.0.1")
			x := NewMX(MXConfig{SessionConfig: SessionConfig{Hostname: "bench.test"}, Resolver: &Resolver{Addr: srv.Addr}, Port: rx.Port})
			m := msg("example.test", "a@example.test", "b@example.test")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if res := x.Deliver(context.Background(), m); res[0].Status != Delivered {
					b.Fatalf("%+v", res)
				}
			}
		})
	}
}
