package config

import (
	"fmt"
	"net/url"
	"time"

	"submitd/internal/address"
)

// Contain configures the detection and holding of compromised accounts
// (SPEC R20). Each signal trips at its threshold within its rolling window;
// a threshold of 0 turns its signal off.
type Contain struct {
	// Action is what a trip does unless an account or domain override
	// says otherwise: "hold" (SMTP access off, sessions closed, queued
	// mail held, support notified) or "warn" (only the notification).
	Action string `toml:"action"`
	// LimitHits trips when the account's sending is refused by a sending
	// limit in this many different minutes within LimitWindow (refusals in
	// one minute count once).
	LimitHits int `toml:"limit_hits"`
	// LimitWindow is the rolling window of LimitHits.
	LimitWindow Duration `toml:"limit_window"`
	// BounceShare trips when at least this share (0–1) of the account's
	// recipients in BounceWindow were refused for good by the receiving
	// servers, once there are at least BounceMin of them; 0 turns it off.
	BounceShare float64 `toml:"bounce_share"`
	// BounceMin is the fewest recipients BounceShare is judged on.
	BounceMin int `toml:"bounce_min"`
	// BounceWindow is the rolling window of BounceShare.
	BounceWindow Duration `toml:"bounce_window"`
	// Networks trips when the account logs in from this many distinct
	// networks (IPv4 /24, IPv6 /48) within NetworksWindow.
	Networks int `toml:"networks"`
	// NetworksWindow is the rolling window of Networks.
	NetworksWindow Duration `toml:"networks_window"`
	// RiseFactor and RiseFloor trip when the messages of the last hour
	// reach RiseFactor times the account's mean per hour over the last
	// RiseDays days, and at least RiseFloor; RiseFloor 0 turns it off.
	RiseFactor float64 `toml:"rise_factor"`
	// RiseFloor is the fewest messages in an hour that trip the rise.
	RiseFloor int `toml:"rise_floor"`
	// RiseDays is how many days the mean is taken over.
	RiseDays int `toml:"rise_days"`
	// Spam trips when this many of the account's messages are refused or
	// flagged as spam by the content scanner within SpamWindow (SPEC R22);
	// 0 turns it off.
	Spam int `toml:"spam"`
	// SpamWindow is the rolling window of Spam.
	SpamWindow Duration `toml:"spam_window"`
	// MaxAccounts bounds the accounts whose signals are kept in memory.
	MaxAccounts int `toml:"max_accounts"`
	// Webhook receives a POST with a JSON body for every trip; "" sends none.
	Webhook string `toml:"webhook"`
	// WebhookTimeout bounds one POST.
	WebhookTimeout Duration `toml:"webhook_timeout"`
	// WebhookAttempts is how many times an event is tried, with a doubling
	// backoff from 2s.
	WebhookAttempts int `toml:"webhook_attempts"`
	// SupportAddress gets an e-mail for every trip, through this server's
	// own queue; "" sends none.
	SupportAddress string `toml:"support_address"`
}

// defaultContain is [contain] without a file.
func defaultContain() Contain {
	return Contain{
		Action:          "hold",
		LimitHits:       10,
		LimitWindow:     Duration(time.Hour),
		BounceShare:     0.5,
		BounceMin:       20,
		BounceWindow:    Duration(time.Hour),
		Networks:        10,
		NetworksWindow:  Duration(time.Hour),
		RiseFactor:      10,
		RiseFloor:       150,
		RiseDays:        7,
		Spam:            5,
		SpamWindow:      Duration(time.Hour),
		MaxAccounts:     100000,
		WebhookTimeout:  Duration(10 * time.Second),
		WebhookAttempts: 4,
	}
}

// validate checks [contain].
func (c Contain) validate() error {
	bad := func(key string, val any, why string) error {
		return &KeyError{Key: "contain." + key, Err: fmt.Errorf("invalid value %v for contain.%s: %s", quoteIfString(val), key, why)}
	}
	switch {
	case c.Action != "hold" && c.Action != "warn":
		return bad("action", c.Action, `must be "hold" or "warn"`)
	case c.LimitHits < 0:
		return bad("limit_hits", c.LimitHits, "must not be negative (0 turns the signal off)")
	case c.LimitWindow <= 0:
		return bad("limit_window", c.LimitWindow, "must be positive")
	case c.BounceShare < 0 || c.BounceShare > 1:
		return bad("bounce_share", c.BounceShare, "must be between 0 (off) and 1")
	case c.BounceMin < 1:
		return bad("bounce_min", c.BounceMin, "must be at least 1")
	case c.BounceWindow < Duration(12*time.Second):
		return bad("bounce_window", c.BounceWindow, "must be at least 12s")
	case c.Networks < 0 || c.Networks > 1000:
		return bad("networks", c.Networks, "must be 0 (off) to 1000")
	case c.NetworksWindow <= 0:
		return bad("networks_window", c.NetworksWindow, "must be positive")
	case c.RiseFactor < 1:
		return bad("rise_factor", c.RiseFactor, "must be at least 1")
	case c.RiseFloor < 0:
		return bad("rise_floor", c.RiseFloor, "must not be negative (0 turns the signal off)")
	case c.RiseDays < 1 || c.RiseDays > 31:
		return bad("rise_days", c.RiseDays, "must be 1 to 31")
	case c.Spam < 0 || c.Spam > 1000:
		return bad("spam", c.Spam, "must be 0 (off) to 1000")
	case c.SpamWindow <= 0:
		return bad("spam_window", c.SpamWindow, "must be positive")
	case c.MaxAccounts < 1000:
		return bad("max_accounts", c.MaxAccounts, "must be at least 1000")
	case c.WebhookTimeout <= 0:
		return bad("webhook_timeout", c.WebhookTimeout, "must be positive")
	case c.WebhookAttempts < 1 || c.WebhookAttempts > 20:
		return bad("webhook_attempts", c.WebhookAttempts, "must be 1 to 20")
	}
	if c.Webhook != "" {
		u, err := url.Parse(c.Webhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("webhook", c.Webhook, "must be an http:// or https:// URL")
		}
	}
	if c.SupportAddress != "" {
		if _, err := address.Parse(c.SupportAddress); err != nil {
			return bad("support_address", c.SupportAddress, err.Error())
		}
	}
	return nil
}
