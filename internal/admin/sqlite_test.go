package admin_test

import (
	"context"
	"testing"

	"submitd/internal/admin"
	"submitd/internal/admin/storetest"
	"submitd/internal/testutil"
)

func openSQLite(t *testing.T) *admin.SQLite {
	t.Helper()
	st, err := admin.NewSQLite(context.Background(), testutil.OpenDBIn(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSQLiteStaff(t *testing.T) {
	storetest.Staff(t, func(t *testing.T) admin.StaffStore { return openSQLite(t) })
}

func TestSQLiteAudit(t *testing.T) {
	storetest.Audit(t, func(t *testing.T) admin.AuditLog { return openSQLite(t) })
}
