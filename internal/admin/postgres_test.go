package admin_test

import (
	"context"
	"testing"

	"submitd/internal/admin"
	"submitd/internal/admin/storetest"
	"submitd/internal/pgdb/pgtest"
)

func openPostgres(t *testing.T) *admin.Postgres {
	t.Helper()
	st, err := admin.NewPostgres(context.Background(), pgtest.Pool(t))
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
