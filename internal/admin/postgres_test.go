package admin_test

import (
	"context"
	"testing"

	"submitd/internal/admin"
	"submitd/internal/admin/storetest"
	"submitd/internal/pgdb"
	"submitd/internal/testutil"
)

func openPostgres(t *testing.T) *admin.Postgres {
	t.Helper()
	ctx := context.Background()
	pool, err := pgdb.Open(ctx, pgdb.Options{DSN: testutil.PostgresDSN(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st, err := admin.NewPostgres(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestPostgresStaff(t *testing.T) {
	storetest.Staff(t, func(t *testing.T) admin.StaffStore { return openPostgres(t) })
}

func TestPostgresAudit(t *testing.T) {
	storetest.Audit(t, func(t *testing.T) admin.AuditLog { return openPostgres(t) })
}
