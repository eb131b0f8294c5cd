package node

import (
	"context"
	"log/slog"
	"path/filepath"

	"submitd/internal/certs"
	"submitd/internal/config"
)

// CertsConfig turns [tls] and [acme] into the certificate set's
// configuration; the values were checked by config.Validate.
func CertsConfig(cfg *config.Config, log *slog.Logger) certs.Config {
	c := certs.Config{
		Cert: cfg.TLS.Cert, Key: cfg.TLS.Key,
		DataDir: cfg.DataDir, Hostname: cfg.Hostname,
		ReloadInterval: cfg.TLS.ReloadInterval.D(),
		Log:            log,
		More:           tlsFiles(cfg),
	}
	if a := cfg.ACME; a.Enabled {
		dir := a.CacheDir
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "acme")
		}
		c.ACME = &certs.ACMEConfig{
			Directory: a.Directory, Email: a.Email, Names: a.Names(cfg.Hostname),
			Challenge: a.Challenge, CacheDir: dir, CARoots: a.CARoots,
		}
	}
	return c
}

// ReloadCerts applies cfg's [tls] files to the running node and checks
// every certificate file at once: a configuration reload calls it. A new
// file that is missing or broken leaves the certificates as they were; a
// changed file that is broken keeps its previous certificate. Both are
// logged and counted, and returned. [tls] reload_interval and [acme] take
// effect at the next start.
func (n *Node) ReloadCerts(cfg *config.Config) error {
	c := CertsConfig(cfg, n.Log)
	if err := n.Certs.Configure(c.Cert, c.Key, c.More); err != nil {
		return err
	}
	return n.Certs.Reload()
}

// reloadCerts is the reload step of [tls]: it runs at every reload, since
// a renewed file keeps its name. A changed list of files that does not
// load fails the reload, and nothing changes. The files are served only
// once every step of the reload is prepared. A known file that is broken
// now keeps its previous certificate, which the certificate set
// logs and counts on its own, so that it does not stop the rest of the
// configuration from being reloaded.
func (n *Node) reloadCerts(_ context.Context, cfg *config.Config) (func(), error) {
	c := CertsConfig(cfg, n.Log)
	serve, err := n.Certs.Prepare(c.Cert, c.Key, c.More)
	if err != nil {
		return nil, err
	}
	return func() {
		serve()
		_ = n.Certs.Reload()
	}, nil
}

// tlsFiles lists [[tls.certificate]].
func tlsFiles(cfg *config.Config) []certs.Files {
	var fs []certs.Files
	for _, f := range cfg.TLS.Certificate {
		fs = append(fs, certs.Files{Cert: f.Cert, Key: f.Key})
	}
	return fs
}
