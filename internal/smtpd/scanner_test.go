package smtpd

import (
	"regexp"
	"testing"
)

var dotCRRe = regexp.MustCompile(`\n\.\r[^\n]`)

// FuzzDotCRScanner: the scanner flags exactly the inputs that hold a line
// starting with ".\r" not followed by "\n", however the input is split.
func FuzzDotCRScanner(f *testing.F) {
	for _, s := range []string{"a\r\n.\rMAIL", "a\r\n.\r\nQUIT", "\n.\r\r", "x\n..\rz", "\n.\r"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		var d dotCRScanner
		n := int(split)%(len(data)+1) + 1
		for i := 0; i < len(data); i += n {
			d.Write(data[i:min(i+n, len(data))])
		}
		if got, want := d.take(), dotCRRe.Match(data); got != want {
			t.Fatalf("%q split %d: scanner %v, want %v", data, n, got, want)
		}
	})
}
