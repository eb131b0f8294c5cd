package directory

import (
	"context"
	"errors"
	"maps"
	"testing"
)

// TestSendingLimits: overrides are set, merged, read, cleared by key or
// all at once, logged in the change log, refused for names that are not
// an account or a hosted domain, and go with their account or domain.
func TestSendingLimits(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.AddDomain(ctx, "firma.cz"))
	must(st.AddAlias(ctx, "firma.com", "firma.cz"))
	must(st.AddAccount(ctx, "jan@firma.cz", "{BLF-CRYPT}x"))
	want := func(name string, w map[string]int64) {
		t.Helper()
		got, err := st.SendingLimits(ctx, name)
		if err != nil || !maps.Equal(got, w) {
			t.Fatalf("SendingLimits(%s) = %v, %v; want %v", name, got, err, w)
		}
	}
	want("jan@firma.cz", map[string]int64{})
	seq, _ := st.LastChange(ctx)
	must(st.SetSendingLimits(ctx, "JAN@firma.cz", map[string]int64{"recipients_per_hour": 1000, "messages_per_hour": 0}))
	must(st.SetSendingLimits(ctx, "jan@firma.cz", map[string]int64{"recipients_per_hour": 700}))
	want("jan@firma.cz", map[string]int64{"recipients_per_hour": 700, "messages_per_hour": 0})
	must(st.SetSendingLimits(ctx, "FIRMA.cz", map[string]int64{"recipients_per_day": 5}))
	want("firma.cz", map[string]int64{"recipients_per_day": 5})
	chs, err := st.Changes(ctx, seq, 10)
	if err != nil || len(chs) != 3 || chs[0].Kind != ChangeSendingLimits || chs[0].Name != "jan@firma.cz" || chs[0].Domain != "firma.cz" ||
		chs[2].Name != "firma.cz" || chs[0].IsAccount() {
		t.Fatalf("change log %+v, %v", chs, err)
	}

	must(st.ClearSendingLimits(ctx, "jan@firma.cz", []string{"messages_per_hour", "not_set"}))
	want("jan@firma.cz", map[string]int64{"recipients_per_hour": 700})
	must(st.ClearSendingLimits(ctx, "jan@firma.cz", nil))
	want("jan@firma.cz", map[string]int64{})

	for _, name := range []string{"nikdo@firma.cz", "jina.cz", "nikdo@jina.cz"} {
		if err := st.SetSendingLimits(ctx, name, map[string]int64{"messages_per_hour": 1}); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetSendingLimits(%s) = %v, want ErrNotFound", name, err)
		}
	}
	if err := st.SetSendingLimits(ctx, "firma.com", map[string]int64{"messages_per_hour": 1}); !errors.Is(err, ErrConflict) {
		t.Errorf("alias: %v, want ErrConflict", err)
	}
	if _, err := st.SendingLimits(ctx, "bad..domain"); err == nil {
		t.Error("a malformed name was taken")
	}

	// Removed and added again, an account or domain starts without the
	// overrides of its namesake.
	must(st.SetSendingLimits(ctx, "jan@firma.cz", map[string]int64{"messages_per_hour": 9}))
	must(st.RemoveAccount(ctx, "jan@firma.cz"))
	must(st.AddAccount(ctx, "jan@firma.cz", "{BLF-CRYPT}x"))
	want("jan@firma.cz", map[string]int64{})
	must(st.RemoveDomain(ctx, "firma.cz", true))
	must(st.AddDomain(ctx, "firma.cz"))
	want("firma.cz", map[string]int64{})
}
