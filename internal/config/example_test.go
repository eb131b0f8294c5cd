package config

import (
	"fmt"
	"testing"
)

// TestExampleFile: submitd.example.toml is the reference and shows every
// default, so loading it must give exactly the built-in configuration.
func TestExampleFile(t *testing.T) {
	c, err := Load("../../submitd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	// %+v prints an empty list and a nil one alike, as TOML does.
	if d := Default(); fmt.Sprintf("%+v", c) != fmt.Sprintf("%+v", d) {
		t.Fatalf("example file differs from the defaults:\nfile:    %+v\ndefault: %+v", c, d)
	}
}
