package delivery

import (
	"crypto/x509"
	"log/slog"
	"net/netip"
	"time"

	"submitd/internal/tlspolicy"
)

// Settings are what New builds a Sender from: the node turns [delivery]
// and the hostname into these plain values, so that this package knows
// nothing of the config file.
type Settings struct {
	// Hostname is this server's name in EHLO.
	Hostname string
	// Resolver is "host:port" of the DNS server; "": the system's.
	Resolver string
	// Port is the remote SMTP port in MX mode.
	Port int
	// VerifyTLS requires a valid certificate in MX mode (MXConfig.VerifyTLS).
	VerifyTLS bool
	// Smarthost is "host:port" of the next hop for everything; "" looks up
	// the MX records of each domain.
	Smarthost string
	// SmarthostTLS, SmarthostUser and SmarthostPassword are those of
	// SmarthostConfig.
	SmarthostTLS, SmarthostUser, SmarthostPassword string
	// ConnectTimeout bounds dialing; Timeout one attempt (SessionConfig).
	ConnectTimeout, Timeout time.Duration
	// Pool bounds and keeps the outbound connections.
	Pool PoolConfig
	// DNSSECResolver is "host:port" of a validating resolver, whose AD
	// bit makes TLSA records count (DANE, RFC 7672); "": no DANE.
	DNSSECResolver string
	// RootCAs verify certificates (the system's roots plus [delivery]
	// ca_roots); nil: the system's roots.
	RootCAs *x509.CertPool
	// SourceIPv4 and SourceIPv6, when valid, are the local addresses of
	// outbound connections of their family.
	SourceIPv4, SourceIPv6 netip.Addr
	// TLSResults, when set, counts the TLS outcomes of MX sessions for
	// the daily TLS reports; the node keeps one over reloads.
	TLSResults *tlspolicy.Results
	// STSCache, when set, keeps the MTA-STS policies fetched; the node
	// keeps one over reloads and saves it over restarts (RFC 8461 §5.1).
	STSCache *tlspolicy.Cache
}

// New returns the Sender that st asks for: a Smarthost when Smarthost is
// set, else an MX sender.
func New(st Settings, log *slog.Logger) (Sender, error) {
	session := SessionConfig{Hostname: st.Hostname, RootCAs: st.RootCAs, ConnectTimeout: st.ConnectTimeout, Timeout: st.Timeout, Log: log, Pool: st.Pool}
	if st.SourceIPv4.IsValid() || st.SourceIPv6.IsValid() {
		session.Dial = sourceDial(st.SourceIPv4, st.SourceIPv6)
	}
	if st.Smarthost != "" {
		return NewSmarthost(SmarthostConfig{
			Addr: st.Smarthost, TLS: st.SmarthostTLS,
			User: st.SmarthostUser, Password: st.SmarthostPassword,
			SessionConfig: session,
		})
	}
	res := &Resolver{Addr: st.Resolver}
	// SPEC R23: MTA-STS is looked up through the ordinary resolver, DANE
	// through the validating one.
	pc := tlspolicy.Config{DNS: res, Roots: st.RootCAs, Log: log, Cache: st.STSCache, Results: st.TLSResults}
	if st.DNSSECResolver != "" {
		pc.SecureDNS = &Resolver{Addr: st.DNSSECResolver}
	}
	return NewMX(MXConfig{
		SessionConfig: session, Resolver: res, Port: st.Port,
		VerifyTLS: st.VerifyTLS, Policy: tlspolicy.New(pc), TLSResults: st.TLSResults,
	}), nil
}
