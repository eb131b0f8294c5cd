// Package sending enforces the sending limits of SPEC R19: rolling windows
// of messages and recipients per account and per hosted domain (its aliases
// and all its accounts together), and a budget of first-time recipients, a
// recipient the account has not sent to in the last 30 days. It knows no
// SMTP: the session asks it at MAIL and RCPT and tells it how the message
// ended.
package sending

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"submitd/internal/config"
)

// Limit names one of the four limits.
type Limit int

// The limits, in the order of the [sending] table.
const (
	// MessagesPerHour counts messages, checked at MAIL FROM.
	MessagesPerHour Limit = iota
	// RecipientsPerHour and RecipientsPerDay count recipients, checked at
	// RCPT TO.
	RecipientsPerHour
	RecipientsPerDay
	// NewRecipientsPerDay counts first-time recipients, checked at RCPT TO.
	NewRecipientsPerDay
	// NumLimits is how many limits there are.
	NumLimits
)

// keys are the limits' names in the config file, the CLI and the API.
var keys = [NumLimits]string{"messages_per_hour", "recipients_per_hour", "recipients_per_day", "new_recipients_per_day"}

// phrases are the limits as the refusal reply names them, after the number.
var phrases = [NumLimits]string{"messages per hour", "recipients per hour", "recipients per day", "new recipients per day"}

// HistoryWindow is how long a recipient stays known: one the account has not
// sent to for this long counts as a first-time recipient again (SPEC R19).
const HistoryWindow = 30 * 24 * time.Hour

// MaxValue is the largest limit accepted. It keeps an override's typo (an
// extra zero or three) from turning a limit off in effect, and bounds the
// recipient history a limit lets an account build (HistoryWindow times the
// daily budget).
const MaxValue = config.MaxSendingLimit

// Key is the limit's name in the config file, the CLI and the API.
func (l Limit) Key() string { return keys[l] }

// Phrase is the limit as the refusal reply names it after the number.
func (l Limit) Phrase() string { return phrases[l] }

// Window is the rolling window the limit counts in.
func (l Limit) Window() time.Duration {
	if l == MessagesPerHour || l == RecipientsPerHour {
		return time.Hour
	}
	return 24 * time.Hour
}

// Keys lists the limits' names in order.
func Keys() []string { return keys[:] }

// ParseKey returns the limit named key.
func ParseKey(key string) (Limit, error) {
	for i, k := range keys {
		if k == key {
			return Limit(i), nil
		}
	}
	return 0, fmt.Errorf("unknown sending limit %q (known: %s)", key, strings.Join(keys[:], ", "))
}

// ParseSetting parses "key=value" as the CLI takes it: a known key and a
// whole number from 0 (no limit) to MaxValue.
func ParseSetting(s string) (Limit, int64, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want key=value, like recipients_per_hour=1000", s)
	}
	l, err := ParseKey(strings.TrimSpace(k))
	if err != nil {
		return 0, 0, err
	}
	n, err := CheckValue(l.Key(), strings.TrimSpace(v))
	return l, n, err
}

// CheckValue parses a limit's value for key.
func CheckValue(key, v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > MaxValue || v == "" || v[0] == '+' {
		return 0, fmt.Errorf("%s=%q: must be a whole number from 0 (no limit) to %d", key, v, MaxValue)
	}
	return n, nil
}

// Limits are the four limits of one account or domain; 0 is no limit.
type Limits [NumLimits]int64

// Override is a partial set of limits for one account or domain, by key;
// what it does not name comes from the configuration.
type Override map[string]int64

// Apply returns base with o's values in place.
func (o Override) Apply(base Limits) Limits {
	for k, v := range o {
		if l, err := ParseKey(k); err == nil {
			base[l] = v
		}
	}
	return base
}
