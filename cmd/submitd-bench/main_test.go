package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"submitd/internal/password"
)

func TestAccountsSubcommand(t *testing.T) {
	var out strings.Builder
	if err := accountsMain([]string{"-n", "3", "-user", "u%d@x.test", "-password", "s3cret", "-scheme", "bcrypt"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines: %q", len(lines), out.String())
	}
	hashes := map[string]bool{}
	for i, l := range lines {
		addr, hash, ok := strings.Cut(l, "\t")
		if !ok || addr != "u"+string(rune('0'+i))+"@x.test" {
			t.Fatalf("line %d = %q, want address TAB hash", i, l)
		}
		if ok, err := password.Verify(hash, "s3cret"); !ok || err != nil {
			t.Errorf("line %d: the hash does not verify the password: %v", i, err)
		}
		hashes[hash] = true
	}
	if len(hashes) != 3 {
		t.Error("accounts share a hash; each needs its own salt")
	}
}

func TestDrainWaitsForAnEmptyQueue(t *testing.T) {
	queue := t.TempDir()
	marker := filepath.Join(queue, "queued")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(150 * time.Millisecond)
		os.Remove(marker)
	}()
	if _, err := drain(context.Background(), "ls "+queue, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Error("drain returned while the queue was not empty")
	}
	for _, cmd := range []string{"echo still-queued", "exit 1"} {
		if _, err := drain(context.Background(), cmd, 50*time.Millisecond); err == nil {
			t.Errorf("drain with %q returned no error", cmd)
		}
	}
}
