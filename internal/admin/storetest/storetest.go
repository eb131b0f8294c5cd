// Package storetest is the suite every admin.StaffStore and admin.AuditLog
// implementation passes, so that another backend behaves as SQLite does.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"submitd/internal/admin"
)

// Staff runs the StaffStore suite; open returns a fresh, empty store.
func Staff(t *testing.T, open func(t *testing.T) admin.StaffStore) {
	ctx := context.Background()
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	t.Run("AddListRemove", func(t *testing.T) {
		st := open(t)
		for _, s := range []admin.Staff{
			{Name: "petra", Role: admin.RoleSupport, PasswordHash: "{X}1", Created: now},
			{Name: "adam", Role: admin.RoleAdmin, PasswordHash: "{X}2", Created: now},
		} {
			if err := st.AddStaff(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.AddStaff(ctx, admin.Staff{Name: "petra", Role: admin.RoleAdmin}); !errors.Is(err, admin.ErrExists) {
			t.Errorf("second petra: %v, want ErrExists", err)
		}
		for _, bad := range []admin.Staff{{Name: "Petra", Role: admin.RoleSupport}, {Name: "", Role: admin.RoleSupport}, {Name: "eva", Role: "root"}} {
			if err := st.AddStaff(ctx, bad); err == nil {
				t.Errorf("AddStaff(%+v) accepted", bad)
			}
		}
		list, err := st.ListStaff(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "adam" || list[1].Name != "petra" || list[1].Role != admin.RoleSupport {
			t.Fatalf("ListStaff = %+v, %v", list, err)
		}
		if !list[0].Created.Equal(now) {
			t.Errorf("Created = %v, want %v", list[0].Created, now)
		}
		if err := st.SetStaffPassword(ctx, "petra", "{X}3"); err != nil {
			t.Fatal(err)
		}
		if err := st.SetStaffRole(ctx, "petra", admin.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		p, err := st.Staff(ctx, "petra")
		if err != nil || p.PasswordHash != "{X}3" || p.Role != admin.RoleAdmin {
			t.Fatalf("Staff(petra) = %+v, %v", p, err)
		}
		if err := st.RemoveStaff(ctx, "petra"); err != nil {
			t.Fatal(err)
		}
		for name, err := range map[string]error{
			"Staff":            func() error { _, err := st.Staff(ctx, "petra"); return err }(),
			"RemoveStaff":      st.RemoveStaff(ctx, "petra"),
			"SetStaffPassword": st.SetStaffPassword(ctx, "petra", "{X}4"),
			"SetStaffRole":     st.SetStaffRole(ctx, "petra", admin.RoleSupport),
		} {
			if !errors.Is(err, admin.ErrNotFound) {
				t.Errorf("%s of a removed user: %v, want ErrNotFound", name, err)
			}
		}
	})
	t.Run("Tokens", func(t *testing.T) {
		st := open(t)
		for _, n := range []string{"petra", "adam"} {
			if err := st.AddStaff(ctx, admin.Staff{Name: n, Role: admin.RoleSupport, Created: now}); err != nil {
				t.Fatal(err)
			}
		}
		var ids []int64
		for i, n := range []string{"petra", "petra", "adam"} {
			tok, err := st.AddToken(ctx, admin.Token{Staff: n, Hash: fmt.Sprintf("h%d", i), Created: now})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, tok.ID)
		}
		if ids[0] == ids[1] || ids[1] == ids[2] {
			t.Errorf("token ids not distinct: %v", ids)
		}
		if _, err := st.AddToken(ctx, admin.Token{Staff: "nobody", Hash: "h9", Created: now}); !errors.Is(err, admin.ErrNotFound) {
			t.Errorf("token of an unknown user: %v, want ErrNotFound", err)
		}
		if ts, err := st.Tokens(ctx, "petra"); err != nil || len(ts) != 2 || ts[0].ID != ids[0] {
			t.Errorf("Tokens(petra) = %+v, %v", ts, err)
		}
		if ts, err := st.Tokens(ctx, ""); err != nil || len(ts) != 3 {
			t.Errorf("Tokens() = %+v, %v", ts, err)
		}
		s, tok, err := st.TokenStaff(ctx, "h1")
		if err != nil || s.Name != "petra" || tok.ID != ids[1] {
			t.Fatalf("TokenStaff(h1) = %+v, %+v, %v", s, tok, err)
		}
		if _, _, err := st.TokenStaff(ctx, "nope"); !errors.Is(err, admin.ErrNotFound) {
			t.Errorf("TokenStaff(unknown) = %v, want ErrNotFound", err)
		}
		rt, err := st.RevokeToken(ctx, ids[1])
		if err != nil || rt.Staff != "petra" {
			t.Fatalf("RevokeToken = %+v, %v", rt, err)
		}
		if _, _, err := st.TokenStaff(ctx, "h1"); !errors.Is(err, admin.ErrNotFound) {
			t.Errorf("revoked token still works: %v", err)
		}
		if _, err := st.RevokeToken(ctx, ids[1]); !errors.Is(err, admin.ErrNotFound) {
			t.Errorf("second revoke: %v, want ErrNotFound", err)
		}
		// Removing a user ends its tokens.
		if err := st.RemoveStaff(ctx, "adam"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.TokenStaff(ctx, "h2"); !errors.Is(err, admin.ErrNotFound) {
			t.Errorf("token of a removed user still works: %v", err)
		}
	})
}

// Audit runs the AuditLog suite; open returns a fresh, empty log.
func Audit(t *testing.T, open func(t *testing.T) admin.AuditLog) {
	ctx := context.Background()
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	l := open(t)
	for i := range 7 {
		actor := "petra"
		if i%2 == 1 {
			actor = "cli:root"
		}
		_, err := l.AddAudit(ctx, admin.Entry{Time: now.Add(time.Duration(i) * time.Minute), Actor: actor,
			Action: "account.disable", Target: fmt.Sprintf("account:a%d@firma.cz", i%3),
			Before: json.RawMessage(`{"smtp_access":true}`), After: json.RawMessage(`{"smtp_access":false}`)})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.AddAudit(ctx, admin.Entry{Time: now, Actor: "adam", Action: "guard.unblock", Target: "ip:192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	es, total, err := l.Audit(ctx, admin.AuditQuery{Limit: 3})
	if err != nil || total != 8 || len(es) != 3 {
		t.Fatalf("Audit(limit 3) = %d entries, total %d, %v", len(es), total, err)
	}
	if es[0].Action != "guard.unblock" || string(es[0].Before) != "null" || es[0].ID <= es[1].ID {
		t.Errorf("newest first: %+v", es[0])
	}
	if string(es[1].After) != `{"smtp_access":false}` || !es[1].Time.Equal(now.Add(6*time.Minute)) {
		t.Errorf("entry = %+v", es[1])
	}
	page2, _, err := l.Audit(ctx, admin.AuditQuery{Limit: 3, Offset: 3})
	if err != nil || len(page2) != 3 || page2[0].ID >= es[2].ID {
		t.Errorf("page 2 = %+v, %v", page2, err)
	}
	for _, c := range []struct {
		q    admin.AuditQuery
		want int
	}{
		{admin.AuditQuery{Actor: "cli:root"}, 3},
		{admin.AuditQuery{Target: "account:a0@firma.cz"}, 3},
		{admin.AuditQuery{Action: "guard.unblock"}, 1},
		{admin.AuditQuery{Actor: "petra", Target: "account:a1@firma.cz"}, 1},
		{admin.AuditQuery{Actor: "nobody"}, 0},
	} {
		es, total, err := l.Audit(ctx, c.q)
		if err != nil || total != c.want || len(es) != c.want {
			t.Errorf("Audit(%+v) = %d entries, total %d, %v; want %d", c.q, len(es), total, err, c.want)
		}
	}
}
