package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
)

// ACMEConfig is what the ACME client needs ([acme]).
type ACMEConfig struct {
	// Directory is the CA's directory URL.
	Directory string
	// Email is the contact address given to the CA; "" gives none.
	Email string
	// Names are the names to obtain certificates for, one each; the
	// first is the default certificate when no default file is set.
	Names []string
	// Challenge is "tls-alpn-01" (RFC 8737) or "http-01" (RFC 8555 §8.3).
	Challenge string
	// CacheDir keeps the account key and one file per name, the key and
	// the chain in PEM, which [[tls.certificate]] can read on other nodes.
	CacheDir string
	// CARoots is a PEM file of roots trusted for the CA's HTTPS besides
	// the system's; "" trusts the system's.
	CARoots string
	// RetryMin is the first wait after a failed attempt, doubled at each
	// failure up to RetryMax; 0 means a minute and an hour.
	RetryMin, RetryMax time.Duration
}

// acmeTimeout bounds one attempt to obtain a certificate.
const acmeTimeout = 5 * time.Minute

// acmeManager obtains a certificate for each name from an ACME CA when the
// cache has none, and renews it when a third of its lifetime is left, as
// Let's Encrypt advises (30 days of its 90).
type acmeManager struct {
	// cfg is the configuration.
	cfg ACMEConfig
	// log gets the outcomes.
	log *slog.Logger
	// changed is called after a certificate was obtained or renewed.
	changed func()
	// client speaks to the CA; registered says its account exists.
	client     *acme.Client
	registered bool
	// regMu serializes the registration.
	regMu sync.Mutex

	// mu guards certs and the challenge answers.
	mu sync.Mutex
	// certs are the certificates by name.
	certs map[string]*tls.Certificate
	// alpn are the tls-alpn-01 answers by name (RFC 8737 §3).
	alpn map[string]*tls.Certificate
	// http are the http-01 answers by path (RFC 8555 §8.3).
	http map[string]string
	// failing has the names whose last attempt failed.
	failing map[string]bool

	// renewals counts certificates obtained or renewed; errors counts
	// failed attempts.
	renewals, errors atomic.Uint64
}

// newACME sets up the client and reads the cached certificates.
func newACME(cfg ACMEConfig, log *slog.Logger, changed func()) (*acmeManager, error) {
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Minute
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(time.Hour, cfg.RetryMin)
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("acme.cache_dir: %w", err)
	}
	m := &acmeManager{cfg: cfg, log: log, changed: changed, certs: map[string]*tls.Certificate{},
		alpn: map[string]*tls.Certificate{}, http: map[string]string{}, failing: map[string]bool{}}
	key, err := m.accountKey()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: time.Minute}
	if cfg.CARoots != "" {
		pem, err := os.ReadFile(cfg.CARoots)
		if err != nil {
			return nil, fmt.Errorf("acme.ca_roots: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme.ca_roots: %s holds no PEM certificate", cfg.CARoots)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		hc.Transport = tr
	}
	m.client = &acme.Client{Key: key, DirectoryURL: cfg.Directory, HTTPClient: hc, UserAgent: "submitd"}
	for _, name := range cfg.Names {
		// The name is a file name in the cache (config.Validate allows
		// only host names).
		if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
			return nil, fmt.Errorf("acme: %q is not a host name", name)
		}
		c, err := m.load(name)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			// A damaged cache file is replaced by a new certificate.
			log.Error("acme: cached certificate not used; a new one is obtained", "name", name, "err", err)
		default:
			m.certs[name] = c
		}
	}
	return m, nil
}

// accountKey reads the account's key from the cache, or makes one.
func (m *acmeManager) accountKey() (crypto.Signer, error) {
	path := filepath.Join(m.cfg.CacheDir, "account.key")
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("acme: %s: no PEM key", path)
		}
		k, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("acme: %s: %w", path, err)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("acme: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
		return nil, err
	}
	return k, nil
}

// certPath is the cache file of a name's certificate.
func (m *acmeManager) certPath(name string) string {
	return filepath.Join(m.cfg.CacheDir, name+".pem")
}

// load reads a name's cached certificate.
func (m *acmeManager) load(name string) (*tls.Certificate, error) {
	path := m.certPath(name)
	b, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	return parsePair(Files{Cert: path, Key: path}, b, b)
}

// certificates lists the certificates in the order of the names, nil for
// a name without one yet.
func (m *acmeManager) certificates() []*tls.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	cs := make([]*tls.Certificate, len(m.cfg.Names))
	for i, n := range m.cfg.Names {
		cs[i] = m.certs[n]
	}
	return cs
}

// failingNames counts the names whose last attempt failed.
func (m *acmeManager) failingNames() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.failing)
}

// run keeps every name's certificate current until ctx ends.
func (m *acmeManager) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, name := range m.cfg.Names {
		wg.Go(func() { m.keep(ctx, name) })
	}
	wg.Wait()
}

// keep obtains name's certificate when there is none and renews it when a
// third of its lifetime is left. A failed attempt keeps the certificate in
// use and is tried again after a wait that doubles up to RetryMax.
func (m *acmeManager) keep(ctx context.Context, name string) {
	retry := m.cfg.RetryMin
	for {
		m.mu.Lock()
		c := m.certs[name]
		m.mu.Unlock()
		wait := time.Duration(0)
		if c != nil {
			life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
			wait = time.Until(c.Leaf.NotAfter.Add(-life / 3))
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		actx, cancel := context.WithTimeout(ctx, acmeTimeout)
		nc, err := m.obtain(actx, name)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.errors.Add(1)
			m.mu.Lock()
			m.failing[name] = true
			m.mu.Unlock()
			// A CA that lost the account (a test CA restarted, an
			// account deactivated) is asked to make it again.
			m.regMu.Lock()
			m.registered = false
			m.regMu.Unlock()
			m.log.Error("acme: certificate not obtained; the one in use stays, trying again later", "name", name, "err", err, "retry_in", retry)
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			retry = min(2*retry, m.cfg.RetryMax)
			continue
		}
		retry = m.cfg.RetryMin
		m.renewals.Add(1)
		m.mu.Lock()
		m.certs[name] = nc
		delete(m.failing, name)
		m.mu.Unlock()
		m.log.Info("acme: certificate obtained", "name", name, "serial", nc.Leaf.SerialNumber.Text(16), "not_after", nc.Leaf.NotAfter)
		m.changed()
	}
}

// register makes sure the account exists at the CA (RFC 8555 §7.3).
func (m *acmeManager) register(ctx context.Context) error {
	m.regMu.Lock()
	defer m.regMu.Unlock()
	if m.registered {
		return nil
	}
	acct := &acme.Account{}
	if m.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + m.cfg.Email}
	}
	if _, err := m.client.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return fmt.Errorf("register account at %s: %w", m.cfg.Directory, err)
	}
	m.registered = true
	return nil
}

// obtain orders a certificate for name, answers its challenge, and stores
// the result in the cache (RFC 8555 §7.4).
func (m *acmeManager) obtain(ctx context.Context, name string) (*tls.Certificate, error) {
	if err := m.register(ctx); err != nil {
		return nil, err
	}
	order, err := m.client.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		return nil, fmt.Errorf("new order: %w", err)
	}
	for _, u := range order.AuthzURLs {
		if err := m.authorize(ctx, u); err != nil {
			return nil, err
		}
	}
	if order, err = m.client.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("order: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
	}, key)
	if err != nil {
		return nil, err
	}
	der, _, err := m.client.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("finalize: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	for _, d := range der {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	path := m.certPath(name)
	c, err := parsePair(Files{Cert: path, Key: path}, []byte(b.String()), []byte(b.String()))
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	if err := c.Leaf.VerifyHostname(name); err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	if err := writeFile(path, []byte(b.String())); err != nil {
		return nil, err
	}
	return c, nil
}

// authorize answers the challenge of one authorization and waits for the CA
// to find it valid.
func (m *acmeManager) authorize(ctx context.Context, url string) error {
	z, err := m.client.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == m.cfg.Challenge {
			chal = c
		}
	}
	if chal == nil {
		return fmt.Errorf("the CA offers no %s challenge for %s", m.cfg.Challenge, z.Identifier.Value)
	}
	name := z.Identifier.Value
	switch chal.Type {
	case "tls-alpn-01":
		c, err := m.client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.alpn[name] = &c
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			delete(m.alpn, name)
			m.mu.Unlock()
		}()
	case "http-01":
		resp, err := m.client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return err
		}
		path := m.client.HTTP01ChallengePath(chal.Token)
		m.mu.Lock()
		m.http[path] = resp
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			delete(m.http, path)
			m.mu.Unlock()
		}()
	}
	if _, err := m.client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("accept %s challenge: %w", chal.Type, err)
	}
	if _, err := m.client.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("%s challenge for %s: %w", chal.Type, name, err)
	}
	return nil
}

// alpnProto is the ALPN protocol of tls-alpn-01 (RFC 8737 §6.2).
const alpnProto = "acme-tls/1"

// ServeACME answers the ACME challenges on ln until it is closed: the
// tls-alpn-01 handshake (RFC 8737 §3), or the http-01 resource (RFC 8555
// §8.3). It returns at once when ACME is off.
func (s *Set) ServeACME(ln net.Listener) error {
	m := s.acme
	if m == nil {
		return nil
	}
	if m.cfg.Challenge == "http-01" {
		hs := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
		err := hs.Serve(ln)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
	conf := &tls.Config{NextProtos: []string{alpnProto}, MinVersion: tls.VersionTLS12, GetCertificate: m.alpnCert}
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			// The CA only needs the handshake; nothing is served after it.
			c.SetDeadline(time.Now().Add(10 * time.Second))
			tls.Server(c, conf).Handshake()
		}()
	}
}

// alpnCert answers a tls-alpn-01 validation with the name's challenge
// certificate; other handshakes on the challenge port are refused.
func (m *acmeManager) alpnCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !slices.Contains(hello.SupportedProtos, alpnProto) {
		return nil, errors.New("acme: not an acme-tls/1 handshake")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.alpn[strings.ToLower(hello.ServerName)]; c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("acme: no challenge pending for %q", hello.ServerName)
}

// ServeHTTP answers http-01 validations (RFC 8555 §8.3).
func (m *acmeManager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	resp, ok := m.http[r.URL.Path]
	m.mu.Unlock()
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(resp))
}

// writeFile writes a private file whole: a temporary file renamed over the
// old, so that a reader (another node, a crash) never sees half of one.
func writeFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("acme: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("acme: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("acme: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	return nil
}
