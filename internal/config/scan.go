package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Scan configures content scanning of submitted messages with rspamd (SPEC
// R22). With RspamdURL "" nothing is scanned.
type Scan struct {
	// RspamdURL is rspamd's normal worker, e.g. "http://127.0.0.1:11333";
	// "" turns scanning off.
	RspamdURL string `toml:"rspamd_url"`
	// Timeout bounds one scan, its wait for a free slot included; past it
	// the scanner counts as unavailable (OnError).
	Timeout Duration `toml:"timeout"`
	// MaxSize is the largest message scanned; larger ones pass unscanned
	// and are counted.
	MaxSize Size `toml:"max_size"`
	// MaxConcurrent is how many scans may be in flight; more wait, bounded
	// by Timeout.
	MaxConcurrent int `toml:"max_concurrent"`
	// OnError is what a timeout or an unreachable rspamd means: "accept"
	// (the message goes out unscanned) or "tempfail" (451 4.3.0).
	OnError string `toml:"on_error"`
	// SettingsID is sent to rspamd as Settings-ID; "" sends none.
	SettingsID string `toml:"settings_id"`
	// Password is sent to rspamd as Password, for a worker that asks for
	// one; "" sends none.
	Password string `toml:"password"`
}

// defaultScan is [scan] without a file: off, with the settings it would
// have.
func defaultScan() Scan {
	return Scan{Timeout: Duration(5 * time.Second), MaxSize: 4 << 20, MaxConcurrent: 32, OnError: "accept"}
}

// validate checks [scan].
func (s Scan) validate() error {
	bad := func(key string, val any, why string) error {
		return fmt.Errorf("invalid value %v for scan.%s: %s", quoteIfString(val), key, why)
	}
	if s.RspamdURL != "" {
		u, err := url.Parse(s.RspamdURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return bad("rspamd_url", s.RspamdURL, `must be "" (no scanning) or http://host:port of rspamd's normal worker`)
		}
	}
	switch {
	case s.Timeout <= 0 || s.Timeout > Duration(5*time.Minute):
		return bad("timeout", s.Timeout, "must be positive and at most 5m (the client waits for its reply)")
	case s.MaxSize < 1024 || s.MaxSize > 64<<20:
		// The message is streamed from the spool, not held in memory,
		// but rspamd's time grows with its size, and rspamd refuses
		// messages over its own max_message (50 MB by default).
		return bad("max_size", s.MaxSize, "must be 1KiB to 64MiB")
	case s.MaxConcurrent < 1 || s.MaxConcurrent > 10000:
		return bad("max_concurrent", s.MaxConcurrent, "must be 1 to 10000")
	case s.OnError != "accept" && s.OnError != "tempfail":
		return bad("on_error", s.OnError, `must be "accept" or "tempfail"`)
	case strings.ContainsAny(s.SettingsID, "\r\n"):
		return bad("settings_id", s.SettingsID, "must be one line")
	case strings.ContainsAny(s.Password, "\r\n"):
		return bad("password", "(set)", "must be one line")
	}
	return nil
}

// Size is a number of bytes, written as an integer or with a unit: "4MiB",
// "512KiB", "1GiB", or the decimal "10MB", "500kB".
type Size int64

// sizeUnits are the units Size takes, longest first so that "MiB" is not
// read as "B".
var sizeUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseSize reads a Size.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 4MiB, 512KiB, 1000000)", s)
	}
	return Size(n * mult), nil
}

// UnmarshalTOML takes an integer or a string with a unit.
func (z *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("size %d is negative", v)
		}
		*z = Size(v)
		return nil
	case string:
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*z = n
		return nil
	}
	return fmt.Errorf("size must be a number of bytes or a string like \"4MiB\", not %T", v)
}

// String writes the size with the largest binary unit that divides it.
func (z Size) String() string {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if z != 0 && int64(z)%u.n == 0 {
			return strconv.FormatInt(int64(z)/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(z), 10) + "B"
}
