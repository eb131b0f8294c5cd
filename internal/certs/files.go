package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"time"
)

// maxPEM bounds what is read from one certificate or key file: a chain of a
// few certificates is a few kilobytes, and a path pointing at a huge file by
// mistake must not fill the memory at every check.
const maxPEM = 1 << 20

// pair is one certificate's files and what was last loaded from them.
type pair struct {
	Files
	// stamp is the files' modification times and sizes at the last read.
	stamp [2]stamp
	// sum is the hash of the files' contents at the last read, good or
	// refused, so that one bad content is refused and counted once.
	sum [sha256.Size]byte
	// cert is the last pair that loaded, nil before the first.
	cert *tls.Certificate
	// err is why the files as they are now were refused, nil when they
	// loaded; reported is the text of the last error logged and counted.
	err      error
	reported string
}

// stamp is what a stat tells of a file's content cheaply.
type stamp struct {
	mtime time.Time
	size  int64
}

// check reads the files if their stamps changed (or force is set) and
// their content differs from the last read, and loads the pair. It reports
// whether a new certificate was loaded; on an error the previous one stays.
func (p *pair) check(force bool) (changed bool, err error) {
	var st [2]stamp
	for i, path := range []string{p.Cert, p.Key} {
		fi, err := os.Stat(path)
		if err != nil {
			return false, fmt.Errorf("tls: %w", err)
		}
		st[i] = stamp{fi.ModTime(), fi.Size()}
	}
	if !force && st == p.stamp && p.cert != nil {
		return false, p.err
	}
	certPEM, err := readPEM(p.Cert)
	if err != nil {
		return false, err
	}
	keyPEM := certPEM
	if p.Key != p.Cert {
		if keyPEM, err = readPEM(p.Key); err != nil {
			return false, err
		}
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	p.stamp = st
	if sum == p.sum && p.cert != nil {
		return false, p.err
	}
	first := p.cert == nil
	p.sum = sum
	c, err := parsePair(p.Files, certPEM, keyPEM)
	p.err = err
	if err != nil {
		return false, err
	}
	p.cert = c
	return !first, nil
}

// readPEM reads a PEM file of at most maxPEM bytes.
func readPEM(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEM+1))
	if err != nil {
		return nil, fmt.Errorf("tls: read %s: %w", path, err)
	}
	if len(b) > maxPEM {
		return nil, fmt.Errorf("tls: %s is larger than %d bytes; is it a certificate?", path, maxPEM)
	}
	return b, nil
}

// parsePair checks a certificate chain and its key and names the file at
// fault when they are wrong.
func parsePair(f Files, certPEM, keyPEM []byte) (*tls.Certificate, error) {
	var leaf *x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls: certificate file %s: %w", f.Cert, err)
		}
		leaf = c
		break
	}
	if leaf == nil {
		return nil, fmt.Errorf("tls: certificate file %s: no PEM CERTIFICATE block", f.Cert)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: key file %s (for certificate %s): %w", f.Key, f.Cert, err)
	}
	return &c, nil
}
