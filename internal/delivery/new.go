package delivery

import (
	"log/slog"

	"submitd/internal/config"
)

// New returns the Sender that the configuration asks for: a Smarthost when
// [delivery] smarthost is set, else an MX sender.
func New(c *config.Config, log *slog.Logger) (Sender, error) {
	d := c.Delivery
	session := SessionConfig{Hostname: c.Hostname, ConnectTimeout: d.ConnectTimeout.D(), Timeout: d.Timeout.D(), Log: log,
		Pool: PoolConfig{
			MaxMessages: d.MaxMessagesPerConnection, IdleTimeout: d.ConnectionIdleTimeout.D(),
			MaxPerDestination: d.MaxConnectionsPerDestination,
		}}
	if d.Smarthost != "" {
		return NewSmarthost(SmarthostConfig{
			Addr: d.Smarthost, TLS: d.SmarthostTLS,
			User: d.SmarthostUser, Password: d.SmarthostPassword,
			SessionConfig: session,
		})
	}
	return NewMX(MXConfig{
		SessionConfig: session, Resolver: &Resolver{Addr: d.Resolver}, Port: d.Port,
		VerifyTLS: d.TLS == "verify",
	}), nil
}
