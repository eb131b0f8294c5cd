package delivery

import (
	"context"
	"testing"

	"submitd/internal/testutil"
)

// RFC 3461: the DSN parameters go on to a next hop that offers DSN; to one
// that does not, nothing is sent of them and a recipient that asked for
// SUCCESS is delivered as "relayed" (§6.2.6).
func TestDSNPassedOn(t *testing.T) {
	for _, offer := range []bool{true, false} {
		w := newWorld(t, map[string]testutil.ReceiverOptions{"127.0.0.2": {DSN: offer}}, "127.0.0.2")
		w.dns.AddA("example.test", "127.0.0.2")
		m := msg("example.test", "x@example.test", "y@example.test")
		m.Ret, m.EnvID = "HDRS", "QQ+1 x"
		m.RcptDSN = map[string]RcptDSN{
			"x@example.test": {Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;orig=x@example.test"},
		}
		res := w.mx(nil).Deliver(context.Background(), m)
		check(t, res, "x@example.test", Delivered, "250")
		check(t, res, "y@example.test", Delivered, "250")
		if res[0].Relayed == offer || res[1].Relayed {
			t.Errorf("DSN offered %v: relayed %v, %v", offer, res[0].Relayed, res[1].Relayed)
		}
		got := w.rx["127.0.0.2"].Messages()[0]
		if !offer {
			if got.Ret != "" || got.EnvID != "" || got.Notify != nil || got.ORcpt != nil {
				t.Errorf("DSN parameters sent to a server without DSN: %+v", got)
			}
			continue
		}
		if got.Ret != "HDRS" || got.EnvID != "QQ+1 x" || got.Notify["x@example.test"] != "SUCCESS,FAILURE" ||
			got.ORcpt["x@example.test"] != "RFC822;orig=x@example.test" || got.Notify["y@example.test"] != "" {
			t.Errorf("received RET %q ENVID %q NOTIFY %v ORCPT %v", got.Ret, got.EnvID, got.Notify, got.ORcpt)
		}
	}
}
