package testutil

import (
	"bytes"
	"encoding/json"
	"testing"
)

// SameJSON fails the test unless got, encoded as JSON, is want with its
// white space taken out: what a client of the encoding reads, byte for
// byte. what names got in the failure.
func SameJSON(t testing.TB, what string, got any, want string) {
	t.Helper()
	js, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(want)); err != nil {
		t.Fatalf("the JSON wanted of %s: %v", what, err)
	}
	if !bytes.Equal(js, compact.Bytes()) {
		t.Errorf("%s\n%s\nwant\n%s", what, js, compact.Bytes())
	}
}
