package sending

import (
	"strconv"
	"strings"
	"testing"
)

// TestParseSetting pins what the CLI accepts and refuses.
func TestParseSetting(t *testing.T) {
	for in, want := range map[string]string{
		"recipients_per_hour=1000":       "recipients_per_hour 1000",
		" messages_per_hour = 0 ":        "messages_per_hour 0",
		"new_recipients_per_day=1000000": "new_recipients_per_day 1000000",
		"recipients_per_day=10000000":    "recipients_per_day 10000000",
		"recipients_per_day=10000001":    "error",
		"recipients_per_day=-1":          "error",
		"recipients_per_day=+5":          "error",
		"recipients_per_day=1e3":         "error",
		"recipients_per_day=":            "error",
		"recipients_per_day":             "error",
		"Recipients_per_day=5":           "error",
		"=5":                             "error",
	} {
		l, v, err := ParseSetting(in)
		got := "error"
		if err == nil {
			got = l.Key() + " " + strconv.FormatInt(v, 10)
		}
		if got != want {
			t.Errorf("ParseSetting(%q) = %s (%v), want %s", in, got, err, want)
		}
	}
}

// FuzzParseSetting: whatever the CLI is given, a setting parses to a known
// key and a value in range, or to an error that says what is wrong.
func FuzzParseSetting(f *testing.F) {
	for _, s := range []string{"recipients_per_hour=1000", "messages_per_hour=0", "x=1", "=", "a=b=c", "recipients_per_day=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, v, err := ParseSetting(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if l < 0 || l >= NumLimits || v < 0 || v > MaxValue {
			t.Fatalf("ParseSetting(%q) = %d, %d", s, l, v)
		}
		k, _, _ := strings.Cut(s, "=")
		if strings.TrimSpace(k) != l.Key() {
			t.Fatalf("ParseSetting(%q) took key %s", s, l.Key())
		}
	})
}
