// Package certs holds the TLS certificates a node serves: the default one
// ([tls] cert and key, or a self-signed one made in data_dir on first run so
// that a fresh install offers TLS at once, SPEC §8), more from
// [[tls.certificate]] chosen by the name the client asks for (SNI,
// RFC 6066 §3), and those obtained and renewed by ACME (RFC 8555). Files are
// checked for changes while the server runs, so a renewed certificate is
// served without a restart, and every certificate's expiry is reported.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WarnBefore is how long before a certificate expires it is warned of in
// the log and on the support web's front page.
const WarnBefore = 14 * 24 * time.Hour

// warnEvery is how often the log repeats the warning of one certificate.
const warnEvery = 24 * time.Hour

// Config is what a Set is made from.
type Config struct {
	// Cert and Key are the default certificate's files. Both empty means
	// the certificate of ACME's first name once there is one, and until
	// then the self-signed one in DataDir/tls, made if absent.
	Cert, Key string
	// More are the files of the other certificates, served by SNI.
	More []Files
	// DataDir is where the self-signed certificate is kept.
	DataDir string
	// Hostname is the name the self-signed certificate is made for.
	Hostname string
	// ReloadInterval is how often Run checks the files; 0 means a minute.
	ReloadInterval time.Duration
	// ACME obtains and renews certificates; nil means no ACME.
	ACME *ACMEConfig
	// Log gets errors and warnings.
	Log *slog.Logger
	// Now is the clock of the expiry warnings; nil means time.Now.
	Now func() time.Time
}

// Files names one certificate's PEM files; both may be one file.
type Files struct {
	// Cert holds the certificate chain, leaf first.
	Cert string
	// Key holds the private key.
	Key string
}

// Set is the certificates a node serves. Its GetCertificate picks one for
// each handshake, so the SMTP listeners and the admin listener share it and
// see a reloaded or renewed certificate at their next handshake, while
// sessions already open keep the one they began with.
type Set struct {
	// Generated says New made the self-signed certificate.
	Generated bool

	// cfg is the configuration.
	cfg Config
	// def is the default pair; selfSigned says it is the generated one,
	// which ACME's certificate replaces.
	def        *pair
	selfSigned bool
	// more are the [[tls.certificate]] pairs, in their order.
	more []*pair
	// acme obtains and renews certificates; nil without ACME.
	acme *acmeManager
	// mu serializes checks of the files and rebuilding the table.
	mu sync.Mutex
	// table is what GetCertificate reads, replaced whole on each change.
	table atomic.Pointer[table]
	// warned is when each certificate's expiry was last warned of in the
	// log, by name; under mu.
	warned map[string]time.Time
	// reloads counts changed pairs loaded; reloadErrors counts changed
	// files that were refused.
	reloads, reloadErrors atomic.Uint64
}

// table is one immutable state of the certificates served.
type table struct {
	// byName has the certificates holding each name, lower case, a
	// wildcard under "*.example.com".
	byName map[string][]*tls.Certificate
	// def is served without SNI or for a name nobody holds.
	def *tls.Certificate
	// served lists every certificate reachable, for the expiry alarms.
	served []Served
}

// Served is one certificate being served.
type Served struct {
	// Name is the certificate's first DNS name (its common name if it has
	// none).
	Name string
	// NotAfter is when it expires.
	NotAfter time.Time
	// Source is the certificate's file, or "acme".
	Source string
}

// New loads every configured file, makes the self-signed certificate if it
// is needed and absent, and reads the certificates ACME obtained before.
// A file missing or wrong is an error here: a server does not start with
// less than it was told to serve.
func New(cfg Config) (*Set, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = time.Minute
	}
	s := &Set{cfg: cfg, warned: map[string]time.Time{}}
	cert, key := cfg.Cert, cfg.Key
	if cert == "" {
		var err error
		if cert, key, s.Generated, err = selfSigned(cfg.DataDir, cfg.Hostname); err != nil {
			return nil, err
		}
		s.selfSigned = true
	}
	s.def = &pair{Files: Files{Cert: cert, Key: key}}
	for _, f := range cfg.More {
		s.more = append(s.more, &pair{Files: f})
	}
	for _, p := range s.pairs() {
		if _, err := p.check(true); err != nil {
			return nil, err
		}
	}
	if cfg.ACME != nil {
		m, err := newACME(*cfg.ACME, cfg.Log, s.rebuild)
		if err != nil {
			return nil, err
		}
		s.acme = m
	}
	s.mu.Lock()
	s.rebuildLocked()
	s.mu.Unlock()
	return s, nil
}

// Load returns a server configuration serving the pair certFile and
// keyFile, or with both empty the self-signed certificate in dataDir/tls,
// made for hostname if absent; generated says it was made now. It is a Set
// that is never reloaded, for tests and benchmarks that need one
// certificate.
func Load(certFile, keyFile, dataDir, hostname string) (conf *tls.Config, generated bool, err error) {
	s, err := New(Config{Cert: certFile, Key: keyFile, DataDir: dataDir, Hostname: hostname})
	if err != nil {
		return nil, false, err
	}
	return s.TLSConfig(), s.Generated, nil
}

// pairs lists the file pairs, the default first.
func (s *Set) pairs() []*pair { return append([]*pair{s.def}, s.more...) }

// TLSConfig returns a server configuration that picks its certificate from
// the set at every handshake.
func (s *Set) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS12}
}

// GetCertificate picks the certificate for a handshake: one holding the
// name the client asks for, an exact name before a wildcard (RFC 6125
// §6.4.3), among several the one the client supports that expires last;
// the default for a client that asks for no name or one nobody holds.
func (s *Set) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	t := s.table.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name != "" {
		if c := pick(hello, t.byName[name]); c != nil {
			return c, nil
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c := pick(hello, t.byName["*"+name[i:]]); c != nil {
				return c, nil
			}
		}
	}
	return t.def, nil
}

// pick returns the first of cands, which are sorted by expiry, latest
// first, that the client can use, else the first.
func pick(hello *tls.ClientHelloInfo, cands []*tls.Certificate) *tls.Certificate {
	for _, c := range cands {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	if len(cands) > 0 {
		return cands[0]
	}
	return nil
}

// Configure replaces the files served, as a configuration reload gives
// them: cert and key the default (both empty: the self-signed one), more
// the others. Pairs whose paths are unchanged keep their state; the new
// ones are loaded first, and if any of them fails nothing changes, and the
// error, naming the file, is logged, counted and returned. The ACME
// configuration stays as New set it.
func (s *Set) Configure(cert, key string, more []Files) error {
	commit, err := s.Prepare(cert, key, more)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Prepare is Configure in two steps, for a reload that puts several
// packages' settings in force at once: it loads the new files, changing
// nothing, and returns the function that serves them. Its error is
// logged and counted as Configure's.
func (s *Set) Prepare(cert, key string, more []Files) (commit func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	def, selfSign, ps, err := s.loadLocked(cert, key, more)
	if err != nil {
		s.reloadErrors.Add(1)
		s.cfg.Log.Error("tls: new certificate files not used; the previous ones are still served", "err", err)
		return nil, err
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.def, s.selfSigned, s.more = def, selfSign, ps
		s.rebuildLocked()
	}, nil
}

// loadLocked returns the pairs of the files named, those already served
// as they are and the new ones loaded, and whether the default is the
// self-signed certificate.
func (s *Set) loadLocked(cert, key string, more []Files) (def *pair, selfSign bool, ps []*pair, err error) {
	known := map[Files]*pair{}
	for _, p := range s.pairs() {
		known[p.Files] = p
	}
	selfSign = cert == ""
	if selfSign {
		if cert, key, _, err = selfSigned(s.cfg.DataDir, s.cfg.Hostname); err != nil {
			return nil, false, nil, err
		}
	}
	get := func(f Files) (*pair, error) {
		if p := known[f]; p != nil {
			return p, nil
		}
		p := &pair{Files: f}
		if _, err := p.check(true); err != nil {
			return nil, err
		}
		return p, nil
	}
	if def, err = get(Files{Cert: cert, Key: key}); err != nil {
		return nil, false, nil, err
	}
	for _, f := range more {
		p, err := get(f)
		if err != nil {
			return nil, false, nil, err
		}
		ps = append(ps, p)
	}
	return def, selfSign, ps, nil
}

// Reload checks every file at once, as Run does every reload interval, and
// returns what is refused as the files are now; each refusal is logged and
// counted too, once for each new problem.
func (s *Set) Reload() error {
	return s.checkFiles(true)
}

// checkFiles checks the files for changes; force reads them even when
// their modification time and size are unchanged.
func (s *Set) checkFiles(force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	changed := false
	for _, p := range s.pairs() {
		ch, err := p.check(force)
		if err != nil {
			errs = append(errs, err)
			// One problem is logged and counted once, not at every
			// check until it is fixed.
			if err.Error() != p.reported {
				p.reported = err.Error()
				s.reloadErrors.Add(1)
				s.cfg.Log.Error("tls: changed certificate not loaded; the previous one is still served", "err", err)
			}
		} else {
			p.reported = ""
		}
		if ch {
			s.reloads.Add(1)
			s.cfg.Log.Info("tls: certificate reloaded", "cert", p.Cert, "names", p.cert.Leaf.DNSNames, "not_after", p.cert.Leaf.NotAfter)
			changed = true
		}
	}
	if changed {
		s.rebuildLocked()
	} else {
		s.warnLocked()
	}
	return errors.Join(errs...)
}

// rebuild makes a new table after ACME obtained or renewed a certificate.
func (s *Set) rebuild() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rebuildLocked()
}

// rebuildLocked makes the table from the pairs and ACME's certificates and
// warns of those expiring soon.
func (s *Set) rebuildLocked() {
	t := &table{byName: map[string][]*tls.Certificate{}, def: s.def.cert}
	type entry struct {
		c      *tls.Certificate
		source string
	}
	var all []entry
	for _, p := range s.more {
		all = append(all, entry{p.cert, p.Cert})
	}
	if s.acme != nil {
		acmeCerts := s.acme.certificates()
		for _, c := range acmeCerts {
			all = append(all, entry{c, "acme"})
		}
		// Without a default file, ACME's first name is the default, as
		// the self-signed certificate names only the hostname.
		if s.selfSigned && len(acmeCerts) > 0 && acmeCerts[0] != nil {
			t.def = acmeCerts[0]
		}
	}
	if t.def == s.def.cert && !s.selfSigned {
		// The default file's names are served by SNI too; the
		// self-signed certificate's are not, lest it win over an ACME
		// certificate for the hostname by its longer life.
		all = append(all, entry{s.def.cert, s.def.Cert})
	}
	for _, e := range all {
		if e.c == nil {
			continue
		}
		for _, n := range names(e.c.Leaf) {
			t.byName[n] = append(t.byName[n], e.c)
		}
	}
	for _, cands := range t.byName {
		slices.SortStableFunc(cands, func(a, b *tls.Certificate) int { return b.Leaf.NotAfter.Compare(a.Leaf.NotAfter) })
	}
	// The expiry of every certificate reachable, once each.
	seen := map[*tls.Certificate]bool{}
	add := func(c *tls.Certificate, source string) {
		if c == nil || seen[c] {
			return
		}
		seen[c] = true
		t.served = append(t.served, Served{Name: label(c.Leaf), NotAfter: c.Leaf.NotAfter, Source: source})
	}
	if t.def == s.def.cert {
		add(t.def, s.def.Cert)
	}
	for _, e := range all {
		add(e.c, e.source)
	}
	s.table.Store(t)
	s.warnLocked()
}

// names lists what a certificate may be served for, lower case.
func names(leaf *x509.Certificate) []string {
	var ns []string
	for _, n := range leaf.DNSNames {
		ns = append(ns, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	for _, ip := range leaf.IPAddresses {
		ns = append(ns, ip.String())
	}
	if len(ns) == 0 && leaf.Subject.CommonName != "" {
		ns = append(ns, strings.ToLower(leaf.Subject.CommonName))
	}
	return ns
}

// label is the name a certificate is reported by.
func label(leaf *x509.Certificate) string {
	if ns := names(leaf); len(ns) > 0 {
		return ns[0]
	}
	return leaf.SerialNumber.String()
}

// warnLocked logs the certificates expiring within WarnBefore, each at most
// once every warnEvery.
func (s *Set) warnLocked() {
	now := s.cfg.Now()
	for _, c := range s.table.Load().served {
		if c.NotAfter.Sub(now) >= WarnBefore {
			continue
		}
		if last, ok := s.warned[c.Name]; ok && now.Sub(last) < warnEvery {
			continue
		}
		s.warned[c.Name] = now
		s.cfg.Log.Warn("tls: certificate expires soon; replace or renew it", "name", c.Name, "source", c.Source,
			"not_after", c.NotAfter, "left", c.NotAfter.Sub(now).Round(time.Minute))
	}
}

// Served lists every certificate being served.
func (s *Set) Served() []Served { return slices.Clone(s.table.Load().served) }

// Warnings are what support should read on the front page: the
// certificates that expire within WarnBefore, or have expired.
func (s *Set) Warnings() []string {
	now := s.cfg.Now()
	var w []string
	for _, c := range s.table.Load().served {
		left := c.NotAfter.Sub(now)
		switch {
		case left <= 0:
			w = append(w, fmt.Sprintf("The TLS certificate for %s (%s) expired on %s: clients refuse it.", c.Name, c.Source, c.NotAfter.UTC().Format("2006-01-02 15:04 UTC")))
		case left < WarnBefore:
			w = append(w, fmt.Sprintf("The TLS certificate for %s (%s) expires on %s, in %d days.", c.Name, c.Source, c.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), int(left.Hours()/24)))
		}
	}
	return w
}

// Stats are the set's counters.
type Stats struct {
	// Reloads counts changed pairs loaded.
	Reloads uint64
	// ReloadErrors counts changed files refused: not parsed, or a key
	// that does not match its certificate.
	ReloadErrors uint64
	// ACMERenewals counts certificates obtained or renewed by ACME.
	ACMERenewals uint64
	// ACMEErrors counts failed attempts to obtain or renew one.
	ACMEErrors uint64
	// Refused is the number of pairs whose files are refused as they are
	// now, the previous certificate served in their place.
	Refused int
	// ACMEFailing is the number of names whose last ACME attempt failed.
	ACMEFailing int
}

// Stats reads the counters.
func (s *Set) Stats() Stats {
	st := Stats{Reloads: s.reloads.Load(), ReloadErrors: s.reloadErrors.Load()}
	s.mu.Lock()
	for _, p := range s.pairs() {
		if p.err != nil {
			st.Refused++
		}
	}
	s.mu.Unlock()
	if s.acme != nil {
		st.ACMERenewals, st.ACMEErrors = s.acme.renewals.Load(), s.acme.errors.Load()
		st.ACMEFailing = s.acme.failingNames()
	}
	return st
}

// Run checks the files every reload interval and runs ACME's obtaining and
// renewals, until ctx ends.
func (s *Set) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if s.acme != nil {
		wg.Go(func() { s.acme.run(ctx) })
	}
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			s.checkFiles(false)
		}
	}
}
