package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"submitd/internal/pgdb/pgtest"
	"submitd/internal/sessionlog"
	"submitd/internal/testutil"
)

// pgCLI is a CLI whose config names the PostgreSQL store at dsn.
func pgCLI(t *testing.T, dsn string) *cli {
	t.Helper()
	dir := t.TempDir()
	c := &cli{t: t, dataDir: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "submitd.toml")}
	body := fmt.Sprintf("data_dir = %q\n[auth]\npassword_scheme = \"bcrypt\"\n[store]\ndriver = \"postgres\"\ndsn = %q\n", c.dataDir, dsn)
	if err := os.WriteFile(c.cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPostgresCLI: two nodes' configs on one PostgreSQL. A domain added with
// node A's CLI is listed by node B's; a session node A recorded is shown by
// "submitd session SID" on node B, whose data_dir holds no database at all.
func TestPostgresCLI(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	a, b := pgCLI(t, dsn), pgCLI(t, dsn)
	if code, _, errOut := a.run("", "domain", "add", "firma.cz"); code != 0 {
		t.Fatalf("domain add on A: %d %s", code, errOut)
	}
	if code, out, errOut := b.run("", "domain", "list"); code != 0 || strings.TrimSpace(out) != "firma.cz" {
		t.Fatalf("domain list on B: %d %q %s", code, out, errOut)
	}

	ctx := context.Background()
	st, err := sessionlog.NewPostgres(ctx, pgtest.PoolOn(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := &sessionlog.Record{ID: "piWs1j0010jifNx01iWsdh", Start: now, End: now.Add(time.Second), Listener: "submission",
		ClientIP: "203.0.113.9", ClientPort: 40000, HELO: "laptop", Account: "jan@firma.cz"}
	rec.Add("auth", "jan@firma.cz", "235 2.7.0 Authentication succeeded")
	if err := st.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := b.run("", "session", rec.ID)
	if code != 0 || !strings.Contains(out, "203.0.113.9") || !strings.Contains(out, "jan@firma.cz") {
		t.Fatalf("session on B: %d\n%s\n%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "submitd.db")); err == nil {
		t.Error("B's CLI created a SQLite database it does not need")
	}
}
