package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad: whatever the file holds, Load never panics, and what it accepts
// passes Validate and keeps durations and networks parseable.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"hostname = \"mail.example.cz\"\n[limits]\ncommand_timeout = \"90s\"\n",
		"[sessionlog]\nretention = \"30d\"\n",
		"[guard]\nexempt_networks = [\"10.0.0.0/8\", \"2001:db8::1\"]\nwindow = \"1h30m\"\n",
		"[queue]\nmax_age = \"999999999999d\"\n",
		"[listen]\nsmtp = \"[::1]:25\"\n",
		"[replies]\nauth_failed = \"{sid} nope\"\n",
		"hostname = 1\n",
		"[[listen]]\n",
		"[ \"limits\" ]  # the line of a refused value is named\nmax_connections_per_ip = 0\n",
		"[limits]\nfoo.bar = 1\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		name := filepath.Join(dir, "submitd.toml")
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(name)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config Validate refuses: %v", err)
		}
		var d Duration
		if err := d.UnmarshalText([]byte(c.Queue.MaxAge.String())); err != nil || d != c.Queue.MaxAge {
			t.Fatalf("duration %v does not round-trip: %v", c.Queue.MaxAge, err)
		}
	})
}
