package tlspolicy

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"submitd/internal/testutil"
)

func sum256(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func TestVerifyDANE(t *testing.T) {
	ca := testutil.NewCA(t)
	c := ca.Issue(t, "mx.example.test")
	leaf := c.Leaf
	chain := []*x509.Certificate{leaf, ca.Cert}
	now := time.Now()
	later := now.Add(48 * time.Hour) // past the certificates' NotAfter
	names := []string{"mx.example.test"}
	ee := TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: sum256(leaf.RawSubjectPublicKeyInfo)}
	eeFull := TLSA{Usage: 3, Selector: 0, MatchingType: 0, Data: leaf.Raw}
	ta := TLSA{Usage: 2, Selector: 0, MatchingType: 1, Data: sum256(ca.Cert.Raw)}
	taSPKI := TLSA{Usage: 2, Selector: 1, MatchingType: 0, Data: ca.Cert.RawSubjectPublicKeyInfo}
	pkixEE := TLSA{Usage: 1, Selector: 1, MatchingType: 1, Data: sum256(leaf.RawSubjectPublicKeyInfo)}
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		recs  []TLSA
		names []string
		now   time.Time
		ok    bool
	}{
		{"DANE-EE SPKI SHA-256", chain, []TLSA{ee}, names, now, true},
		{"DANE-EE full certificate", chain, []TLSA{eeFull}, names, now, true},
		// RFC 7672 §3.1.1: neither names nor dates count with DANE-EE.
		{"DANE-EE ignores the name", chain, []TLSA{ee}, []string{"other.test"}, now, true},
		{"DANE-EE ignores expiry", chain, []TLSA{ee}, names, later, true},
		{"DANE-TA", chain, []TLSA{ta}, names, now, true},
		{"DANE-TA by SPKI", chain, []TLSA{taSPKI}, names, now, true},
		{"DANE-TA checks the name", chain, []TLSA{ta}, []string{"other.test"}, now, false},
		{"DANE-TA checks expiry", chain, []TLSA{ta}, names, later, false},
		{"DANE-TA anchor not sent", chain[:1], []TLSA{ta}, names, now, false},
		// RFC 7672 §3.1.3: PKIX usages are unusable for SMTP.
		{"PKIX-EE is not used", chain, []TLSA{pkixEE}, names, now, false},
		{"one of several records", chain, []TLSA{pkixEE, {Usage: 3, Selector: 1, MatchingType: 2, Data: []byte{1}}, ta}, names, now, true},
		{"bad matching type", chain, []TLSA{{Usage: 3, Selector: 1, MatchingType: 9, Data: ee.Data}}, names, now, false},
		{"no certificate", nil, []TLSA{ee}, names, now, false},
	} {
		err := VerifyDANE(tc.chain, tc.recs, tc.names, tc.now)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && tc.chain != nil && !errors.Is(err, ErrNoTLSAMatch) {
			t.Errorf("%s: err %v is not ErrNoTLSAMatch", tc.name, err)
		}
	}
}

// The chain a server presents is its to make, as the TLSA records are the
// domain's: only its first maxDANEChain certificates are looked at, so an
// anchor past them satisfies no DANE-TA record, and copies of an anchor
// cost no more than one.
func TestVerifyDANEChainBounded(t *testing.T) {
	ca := testutil.NewCA(t)
	leaf := ca.Issue(t, "mx.example.test").Leaf
	filler := testutil.NewCA(t).Cert
	ta := TLSA{Usage: 2, Selector: 0, MatchingType: 1, Data: sum256(ca.Cert.Raw)}
	names := []string{"mx.example.test"}
	chain := []*x509.Certificate{leaf}
	for len(chain) < maxDANEChain-1 {
		chain = append(chain, filler)
	}
	if err := VerifyDANE(append(chain, ca.Cert), []TLSA{ta}, names, time.Now()); err != nil {
		t.Errorf("anchor at the last place looked at: %v", err)
	}
	chain = append(chain, filler, ca.Cert)
	if err := VerifyDANE(chain, []TLSA{ta}, names, time.Now()); !errors.Is(err, ErrNoTLSAMatch) {
		t.Errorf("anchor past the first %d certificates: err %v, want ErrNoTLSAMatch", maxDANEChain, err)
	}
}

// BenchmarkVerifyDANEHostile is the cost of a session with a hostile
// domain and server: a TLSA answer of 1000 records, six of which name the
// CA as DANE-TA in every form, and a chain of 200 copies of that CA behind a
// leaf for another name, so that no record is satisfied.
func BenchmarkVerifyDANEHostile(b *testing.B) {
	ca := testutil.NewCA(b)
	leaf := ca.Issue(b, "other.example.test").Leaf
	chain := []*x509.Certificate{leaf}
	for range 200 {
		chain = append(chain, ca.Cert)
	}
	var recs []TLSA
	for sel := range uint8(2) {
		for mt := range uint8(3) {
			recs = append(recs, TLSA{Usage: 2, Selector: sel, MatchingType: mt, Data: daneData(ca.Cert, sel, mt)})
		}
	}
	for i := range 1000 {
		recs = append(recs, TLSA{Usage: 2, Selector: 1, MatchingType: 1, Data: sum256([]byte{byte(i), byte(i >> 8)})})
	}
	names := []string{"mx.example.test", "mx.provider.test"}
	now := time.Now()
	b.ResetTimer()
	for b.Loop() {
		if err := VerifyDANE(chain, recs, names, now); err == nil {
			b.Fatal("verified")
		}
	}
}

// daneData is the association data of c for a TLSA record of selector sel
// and matching type mt (RFC 6698 §2.1).
func daneData(c *x509.Certificate, sel, mt uint8) []byte {
	d := c.Raw
	if sel == 1 {
		d = c.RawSubjectPublicKeyInfo
	}
	switch mt {
	case 1:
		return sum256(d)
	case 2:
		s := sha512.Sum512(d)
		return s[:]
	}
	return d
}
