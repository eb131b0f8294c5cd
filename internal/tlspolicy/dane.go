package tlspolicy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// TLSA is one TLSA record (RFC 6698 §2.1) of an MX host.
type TLSA struct {
	// Usage is the certificate usage: 2 DANE-TA, 3 DANE-EE (RFC 7218).
	Usage uint8
	// Selector says what is matched: 0 the whole certificate, 1 its
	// SubjectPublicKeyInfo.
	Selector uint8
	// MatchingType says how: 0 exact, 1 SHA-256, 2 SHA-512.
	MatchingType uint8
	// Data is the association data.
	Data []byte
}

// Usable reports whether an SMTP client can use the record: RFC 7672
// §3.1.3 makes PKIX-TA(0) and PKIX-EE(1) unusable for SMTP, and a
// selector or matching type not of RFC 6698 is unusable anywhere.
func (r TLSA) Usable() bool {
	return (r.Usage == 2 || r.Usage == 3) && r.Selector <= 1 && r.MatchingType <= 2
}

func (r TLSA) String() string {
	return fmt.Sprintf("%d %d %d %x", r.Usage, r.Selector, r.MatchingType, r.Data)
}

// associationData is what a record of selector sel and matching type mt
// holds for cert (RFC 6698 §2.1); nil for a selector or matching type
// RFC 6698 does not define.
func associationData(cert *x509.Certificate, sel, mt uint8) []byte {
	var b []byte
	switch sel {
	case 0:
		b = cert.Raw
	case 1:
		b = cert.RawSubjectPublicKeyInfo
	default:
		return nil
	}
	switch mt {
	case 0:
		return b
	case 1:
		s := sha256.Sum256(b)
		return s[:]
	case 2:
		s := sha512.Sum512(b)
		return s[:]
	}
	return nil
}

// ErrNoTLSAMatch is the error of VerifyDANE when no usable record matches.
var ErrNoTLSAMatch = errors.New("no TLSA record matches the certificate")

// maxDANEChain bounds the certificates of a presented chain that VerifyDANE
// looks at, the leaf included, as Postfix's smtp_tls_scert_verifydepth
// does. Both the chain (up to 64 KB of certificates) and the TLSA records
// (up to 64 KB of them) are a hostile domain's to write; without the bound
// each record naming a DANE-TA anchor would cost a chain verification for
// each copy of the anchor in the chain. Real chains have three or four.
const maxDANEChain = 10

// VerifyDANE checks the certificate chain a server presented (leaf first)
// against the usable TLSA records of the MX host, as RFC 7672 §3.1 says:
//
//   - DANE-EE(3) matches the leaf alone; its names and validity dates are
//     not looked at (§3.1.1), since the DNS, not a CA, vouches for the key.
//   - DANE-TA(2) matches a certificate of the chain, which becomes the
//     only trust anchor; the leaf must chain to it, be valid now and carry
//     one of the names (§3.1.2, §3.2.2: the MX host name and its
//     validated CNAME expansion, wildcards in the first label allowed by
//     §3.2.3).
//
// It returns nil when one record is satisfied. Only the first maxDANEChain
// certificates of the chain count, and each is verified as an anchor once,
// however many records name it.
func VerifyDANE(chain []*x509.Certificate, recs []TLSA, names []string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("the server sent no certificate")
	}
	chain = chain[:min(len(chain), maxDANEChain)]
	// data keeps the association data of the chain's certificates, so
	// that each is hashed once for each form records ask for, not once
	// for each record.
	type form struct {
		cert    int
		sel, mt uint8
	}
	data := map[form][]byte{}
	matches := func(r TLSA, cert int) bool {
		f := form{cert, r.Selector, r.MatchingType}
		d, ok := data[f]
		if !ok {
			d = associationData(chain[cert], r.Selector, r.MatchingType)
			data[f] = d
		}
		return bytes.Equal(d, r.Data)
	}
	leaf := chain[0]
	for _, r := range recs {
		if r.Usable() && r.Usage == 3 && matches(r, 0) {
			return nil
		}
	}
	var taErr error
	for i, ta := range chain {
		if !slices.ContainsFunc(recs, func(r TLSA) bool { return r.Usable() && r.Usage == 2 && matches(r, i) }) {
			continue
		}
		if err := chainTo(leaf, chain[1:], ta, names, now); err != nil {
			taErr = err
			continue
		}
		return nil
	}
	if taErr != nil {
		return fmt.Errorf("%w: the DANE-TA anchor is in the chain, but %w", ErrNoTLSAMatch, taErr)
	}
	return ErrNoTLSAMatch
}

// chainTo verifies leaf up to the trust anchor ta, with the rest of the
// presented chain as intermediates, for one of names.
func chainTo(leaf *x509.Certificate, rest []*x509.Certificate, ta *x509.Certificate, names []string, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ta)
	inter := x509.NewCertPool()
	for _, c := range rest {
		inter.AddCert(c)
	}
	var err error
	for _, n := range names {
		opts := x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if _, err = leaf.Verify(opts); err == nil {
			return nil
		}
	}
	if err == nil {
		err = errors.New("no name to check the certificate for")
	}
	return err
}

// HostAddrs is what the validating resolver says of an MX host's address
// records.
type HostAddrs struct {
	// Secure: the A and AAAA answers for the host, at the end of its CNAME
	// chain if it is an alias, are DNSSEC-validated; only then does DANE
	// apply to the host (RFC 7672 §2.2).
	Secure bool
	// Expanded is the host name's full CNAME expansion when every link of
	// the chain is validated; "" when the name is no alias or the chain is
	// not validated (RFC 7671 §7).
	Expanded string
}

// dane returns the DANE policy of the MX host named host (lowercase,
// without the final dot) of a domain whose MX records are validated.
// applies is false when DANE does not apply to the host; h.Note then says
// why, unless it simply has no TLSA records. An error means the host must
// not be used.
func (d *Domain) dane(ctx context.Context, host string) (h Host, applies bool, err error) {
	sd := d.c.cfg.SecureDNS
	addrs, err := sd.HostSecure(ctx, host)
	if err != nil {
		// RFC 7672 §2.1.1: a bogus or indeterminate answer is no
		// answer; the host cannot be reached securely, another may.
		return Host{}, false, &HostError{Kind: DANE, Result: ResultDNSSECInvalid, Applied: Applied{PolicyMX: []string{host}}, Err: fmt.Errorf("DANE: the validating resolver failed on the address records of %s: %w", host, err)}
	}
	if !addrs.Secure {
		// RFC 7672 §2.2: the TLSA records of a host whose addresses
		// are not validated are not even looked up (an unsigned zone's
		// servers may mishandle the query); the host gets the policy
		// that comes after DANE.
		return Host{Note: fmt.Sprintf("DANE not applied: the address records of %s are not DNSSEC-validated", host)}, false, nil
	}
	// RFC 7672 §2.2.3 and RFC 7671 §7: the TLSA base domain is the
	// host name's CNAME expansion if it is validated, and, when that has
	// no (validated) TLSA records, the name itself. The certificate may
	// then be for either name (RFC 7672 §3.2.2).
	bases := []string{host}
	if addrs.Expanded != "" && addrs.Expanded != host {
		bases = []string{addrs.Expanded, host}
	}
	note := ""
	for _, base := range bases {
		name := "_25._tcp." + base
		recs, secure, err := sd.LookupTLSA(ctx, name)
		if err != nil {
			// RFC 7672 §2.2.3: a failed TLSA lookup (not "no
			// records") makes the host unusable; another MX host may
			// do.
			return Host{}, false, &HostError{Kind: DANE, Result: ResultDNSSECInvalid, Applied: Applied{PolicyMX: []string{host}}, Err: fmt.Errorf("DANE: TLSA lookup of %s failed: %w", name, err)}
		}
		if len(recs) == 0 {
			continue
		}
		if !secure {
			note = fmt.Sprintf("DANE not applied: the TLSA records of %s are not DNSSEC-validated", name)
			continue
		}
		return d.daneHost(recs, bases), true, nil
	}
	return Host{Note: note}, false, nil
}

// daneHost is the policy of an MX host with the validated TLSA records
// recs, whose certificate may be for any of names, the last of which is
// the MX host name. The TLS reports name the policy by all the records,
// the unusable too: they are the policy the domain published.
func (d *Domain) daneHost(recs []TLSA, names []string) Host {
	host := names[len(names)-1]
	applied := tlsaApplied(host, recs)
	var usable []TLSA
	for _, r := range recs {
		if r.Usable() {
			usable = append(usable, r)
		}
	}
	if len(usable) == 0 {
		// RFC 7672 §2.2: TLSA records, none usable: TLS is still
		// mandatory, unauthenticated.
		return Host{Kind: DANE, Applied: applied}
	}
	now := d.c.cfg.Now
	return Host{Kind: DANE, TLSA: usable, Applied: applied, Verify: func(cs tls.ConnectionState) error {
		if err := VerifyDANE(cs.PeerCertificates, usable, names, now()); err != nil {
			return fmt.Errorf("DANE: %s: %w", host, err)
		}
		return nil
	}}
}
