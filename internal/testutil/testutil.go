package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// NeedTool returns the path of the program name found on PATH. When it is
// missing the test is skipped with a message naming it, except under CI
// (CI=true), where a missing tool is a failure: CI must install what the
// tests need rather than silently test less.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("required tool %s not found on PATH (CI=true): %v", name, err)
	}
	t.Skipf("skipping: tool %s not found on PATH", name)
	return ""
}
