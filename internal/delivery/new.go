package delivery

import (
	"log/slog"
	"time"
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
}

// New returns the Sender that st asks for: a Smarthost when Smarthost is
// set, else an MX sender.
func New(st Settings, log *slog.Logger) (Sender, error) {
	session := SessionConfig{Hostname: st.Hostname, ConnectTimeout: st.ConnectTimeout, Timeout: st.Timeout, Log: log, Pool: st.Pool}
	if st.Smarthost != "" {
		return NewSmarthost(SmarthostConfig{
			Addr: st.Smarthost, TLS: st.SmarthostTLS,
			User: st.SmarthostUser, Password: st.SmarthostPassword,
			SessionConfig: session,
		})
	}
	return NewMX(MXConfig{
		SessionConfig: session, Resolver: &Resolver{Addr: st.Resolver}, Port: st.Port,
		VerifyTLS: st.VerifyTLS,
	}), nil
}
