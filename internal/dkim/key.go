// Package dkim signs outgoing mail with the key of its From: domain (SPEC
// R17, RFC 6376) and manages those keys: generation (RSA 2048 by default,
// which every receiver verifies, or Ed25519, RFC 8463), storage in the SQLite
// store, and the DNS TXT record each domain must publish.
package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Algorithms a key may use.
const (
	// Ed25519 is ed25519-sha256 (RFC 8463): short keys and signatures.
	Ed25519 = "ed25519"
	// RSA is rsa-sha256 with a 2048-bit key (RFC 8301 §3.2).
	RSA = "rsa"
)

// RSABits is the size of generated RSA keys.
const RSABits = 2048

// Key is one domain's signing key.
type Key struct {
	// Domain is the signing domain (d=), lowercase A-label.
	Domain string
	// Selector names the key under DOMAIN's _domainkey (s=).
	Selector string
	// Algorithm is Ed25519 or RSA.
	Algorithm string
	// Private is the private key.
	Private crypto.Signer
	// Created is when the key was generated.
	Created time.Time
}

// Generate makes a new key for domain with selector and algorithm ("" means
// RSA: an Ed25519 signature alone fails at receivers that do not implement
// RFC 8463 yet, and with it DMARC). It checks the selector but not the
// domain.
func Generate(domain, selector, algorithm string) (*Key, error) {
	if err := CheckSelector(selector); err != nil {
		return nil, err
	}
	k := &Key{Domain: domain, Selector: selector, Algorithm: algorithm, Created: time.Now().UTC()}
	switch algorithm {
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate ed25519 key: %w", err)
		}
		k.Private = priv
	case RSA, "":
		k.Algorithm = RSA
		priv, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return nil, fmt.Errorf("generate rsa key: %w", err)
		}
		k.Private = priv
	default:
		return nil, fmt.Errorf("unknown algorithm %q: want %q or %q", algorithm, Ed25519, RSA)
	}
	return k, nil
}

// CheckSelector accepts a selector that is one or more DNS labels of
// letters, digits and hyphens (RFC 6376 §3.1).
func CheckSelector(s string) error {
	if s == "" || len(s) > 63*3 {
		return fmt.Errorf("invalid selector %q: must be 1 to 189 characters", s)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid selector %q: labels of 1 to 63 letters, digits and inner hyphens", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid selector %q: labels of 1 to 63 letters, digits and inner hyphens", s)
			}
		}
	}
	return nil
}

// marshalPrivate returns the private key as PKCS #8 PEM.
func (k *Key) marshalPrivate() (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return "", fmt.Errorf("encode %s key of %s: %w", k.Algorithm, k.Domain, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// parsePrivate reads a PKCS #8 PEM private key of the given algorithm.
func parsePrivate(algorithm, s string) (crypto.Signer, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		if algorithm == Ed25519 {
			return k, nil
		}
	case *rsa.PrivateKey:
		if algorithm == RSA {
			return k, nil
		}
	}
	return nil, fmt.Errorf("key is %T, not %s", k, algorithm)
}

// TXTValue is the value of the key record (RFC 6376 §3.6.1, RFC 8463 §4.2):
// "v=DKIM1; k=ed25519; p=…". An Ed25519 p= is the raw 32-byte public key; an
// RSA p= is the DER SubjectPublicKeyInfo.
func (k *Key) TXTValue() string {
	var p []byte
	switch pub := k.Private.Public().(type) {
	case ed25519.PublicKey:
		p = pub
	default:
		p, _ = x509.MarshalPKIXPublicKey(pub)
	}
	return fmt.Sprintf("v=DKIM1; k=%s; p=%s", k.Algorithm, base64.StdEncoding.EncodeToString(p))
}

// RecordName is the DNS name the key is published under:
// SELECTOR._domainkey.DOMAIN (RFC 6376 §3.6.2.1).
func (k *Key) RecordName() string {
	return k.Selector + "._domainkey." + k.Domain
}

// DNSRecord is the record to publish, in zone-file syntax:
//
//	SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=ed25519; p=…"
//
// A value longer than 255 bytes (any RSA key) is split into several quoted
// strings, which a TXT record joins (RFC 7208 §3.3 style, RFC 6376 §3.6.2.2).
func (k *Key) DNSRecord() string {
	return FormatTXT(k.RecordName()+".", k.TXTValue())
}

// FormatTXT formats a TXT record for name with value split into quoted
// strings of at most 255 bytes each, escaping quotes and backslashes.
func FormatTXT(name, value string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(" IN TXT")
	for _, s := range SplitTXT(value) {
		b.WriteString(` "`)
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < ' ' || c > '~':
				// Zone files write other bytes as \DDD (RFC 1035 §5.1).
				fmt.Fprintf(&b, "\\%03d", c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}

// SplitTXT cuts value into strings of at most 255 bytes, the most one TXT
// character-string holds (RFC 1035 §3.3.14). An empty value is one empty
// string.
func SplitTXT(value string) []string {
	var out []string
	for len(value) > 255 {
		out = append(out, value[:255])
		value = value[255:]
	}
	return append(out, value)
}
