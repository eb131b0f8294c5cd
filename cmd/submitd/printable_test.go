package main

import "testing"

func TestPrintable(t *testing.T) {
	cases := map[string]string{
		"Subject: hi\tthere":            "Subject: hi\tthere",
		"Subject: \x1b]0;owned\x07":     "Subject: ?]0;owned?",
		"550 5.1.1 no\x00such\x7fuser":  "550 5.1.1 no?such?user",
		"Subject: Příliš žluťoučký kůň": "Subject: Příliš žluťoučký kůň",
		"c1 control \u009b31m":          "c1 control ?31m",
	}
	for in, want := range cases {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
