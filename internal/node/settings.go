package node

import (
	"net/netip"

	"submitd/internal/admin"
	"submitd/internal/auth"
	"submitd/internal/config"
	"submitd/internal/delivery"
	"submitd/internal/dnshealth"
	"submitd/internal/guard"
	"submitd/internal/policy"
	"submitd/internal/queue"
	"submitd/internal/smtpd"
)

// The functions here turn a configuration, already validated, into the
// plain settings of each package. New builds the node with them and Reload
// puts them in force, so a setting means the same after a reload as after a
// start. The engine packages do not read internal/config.

// ServerSettings turns [limits], [policy], [auth] and [guard]
// trusted_proxies into the SMTP server's settings, with the reply table
// replies (smtpd.NewReplies of [replies]) and the authenticator a.
func ServerSettings(cfg *config.Config, replies *smtpd.Replies, a *auth.Authenticator) smtpd.Settings {
	webmail, _ := config.ParsePrefixes(cfg.Policy.WebmailNetworks)
	proxies, _ := config.ParsePrefixes(cfg.Guard.TrustedProxies)
	return smtpd.Settings{
		Policy:  &policy.Policy{Webmail: webmail},
		Replies: replies,
		Auth:    a,
		Limits: smtpd.Limits{
			MaxMessageSize: cfg.Limits.MaxMessageSize,
			MaxRecipients:  cfg.Limits.MaxRecipients,
			MaxLineLength:  cfg.Limits.MaxLineLength,
			// The header section is held in memory while it is checked
			// (SPEC R7); 256 KiB is far above what mail clients send and
			// bounds memory at max_connections.
			MaxHeaderSize:  min(int(cfg.Limits.MaxMessageSize), 256<<10),
			CommandTimeout: cfg.Limits.CommandTimeout.D(),
			SessionTimeout: cfg.Limits.SessionTimeout.D(),
			MaxConnsPerIP:  cfg.Limits.MaxConnectionsPerIP,
			IPv6Prefix:     cfg.Guard.IPv6Prefix,
			MaxConns:       cfg.Limits.MaxConnections,
		},
		MinAuthDuration: cfg.Auth.MinDuration.D(),
		TrustedProxies:  proxies,
	}
}

// DeliverySettings turns [delivery] and the hostname into the outbound
// sender's settings.
func DeliverySettings(cfg *config.Config) delivery.Settings {
	d := cfg.Delivery
	// Validate read the file; should it have gone since, the system's
	// roots remain and a policy host of a private CA fails its check,
	// which defers rather than sends in clear.
	roots, _ := config.LoadCARoots(d.CARoots)
	// Validate checked both; "" gives the zero Addr, the system's choice.
	src4, _ := netip.ParseAddr(d.SourceIPv4)
	src6, _ := netip.ParseAddr(d.SourceIPv6)
	return delivery.Settings{
		DNSSECResolver: d.DNSSECResolver, RootCAs: roots, SourceIPv4: src4, SourceIPv6: src6,
		Hostname: cfg.Hostname, Resolver: d.Resolver, Port: d.Port, VerifyTLS: d.TLS == "verify",
		Smarthost: d.Smarthost, SmarthostTLS: d.SmarthostTLS, SmarthostUser: d.SmarthostUser, SmarthostPassword: d.SmarthostPassword,
		ConnectTimeout: d.ConnectTimeout.D(), Timeout: d.Timeout.D(),
		Pool: delivery.PoolConfig{
			MaxMessages: d.MaxMessagesPerConnection, IdleTimeout: d.ConnectionIdleTimeout.D(),
			MaxPerDestination: d.MaxConnectionsPerDestination,
		},
	}
}

// QueueSettings turns [queue] into the queue's settings over sender.
func QueueSettings(cfg *config.Config, sender delivery.Sender) queue.Settings {
	qc := cfg.Queue
	perDomain := qc.PerDomain
	if cfg.Delivery.Smarthost != "" {
		// Every message has the same next hop, whose connections
		// [delivery] max_connections_per_destination bounds; a limit per
		// recipient domain would only hold a backlog for one domain back.
		perDomain = qc.Workers
	}
	return queue.Settings{
		Sender:   sender,
		RetryMin: qc.RetryMin.D(), RetryMax: qc.RetryMax.D(), MaxAge: qc.MaxAge.D(), WarnAfter: qc.WarnAfter.D(),
		Workers: qc.Workers, PerDomain: perDomain,
	}
}

// AdminSettings turns [admin], [sending] and [auth] password_scheme into
// the admin server's settings.
func AdminSettings(cfg *config.Config) admin.Settings {
	metricsNets, _ := config.ParsePrefixes(cfg.Admin.MetricsNetworks)
	outbound, _ := config.ParsePrefixes(cfg.Delivery.OutboundIPs)
	acct, dom := SendingLimits(cfg)
	return admin.Settings{
		MetricsNetworks: metricsNets,
		SendingAccount:  acct, SendingDomain: dom,
		PasswordScheme: cfg.Auth.PasswordScheme,
		SessionIdle:    cfg.Admin.SessionIdle.D(),
		DNS:            &delivery.Resolver{Addr: cfg.Delivery.Resolver},
		Health: dnshealth.New(dnshealth.Config{Resolver: &delivery.Resolver{Addr: cfg.Delivery.Resolver},
			SPFInclude: cfg.Delivery.SPFInclude, Outbound: outbound}),
	}
}

// AdminLoginConfig turns [admin] login_* into the staff login guard's
// configuration, which counts by [guard]'s prefix lengths.
func AdminLoginConfig(cfg *config.Config) guard.Config {
	return guard.Config{
		MaxFailures: cfg.Admin.LoginMaxFailures,
		Window:      cfg.Admin.LoginWindow.D(),
		BlockFor:    cfg.Admin.LoginBlockFor.D(),
		IPv4Prefix:  cfg.Guard.IPv4Prefix,
		IPv6Prefix:  cfg.Guard.IPv6Prefix,
	}
}
