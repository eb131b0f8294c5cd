package contain

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"submitd/internal/directory"
	"submitd/internal/testutil"
)

// recorder stands in for the SMTP server, the credential cache and the
// queue, which have tests of their own, and notes what it is asked to do.
type recorder struct {
	mu    sync.Mutex
	calls []string
	held  map[string][]string
	// holding, when set, is told of each Hold, which then waits for gate
	// to close: a hold caught under way.
	holding chan<- string
	gate    <-chan struct{}
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recorder) CloseAccount(a string) int      { r.note("close " + a); return 1 }
func (r *recorder) ReopenAccount(a string)         { r.note("reopen " + a) }
func (r *recorder) Forget(a string) int            { r.note("forget " + a); return 1 }
func (r *recorder) HeldMessages(a string) []string { return r.held[a] }
func (r *recorder) Hold(a, reason string) (int, error) {
	r.note("hold " + a + " " + reason)
	if r.holding != nil {
		r.holding <- a
		<-r.gate
	}
	return len(r.held[a]), nil
}
func (r *recorder) Release(a string) (int, error) { r.note("release " + a); return len(r.held[a]), nil }
func (r *recorder) Purge(a string) (int, error)   { r.note("purge " + a); return len(r.held[a]), nil }

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	return out
}

type events struct {
	mu  sync.Mutex
	got []Event
}

func (e *events) Notify(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev)
}

// newTestContainment is a Containment over a real directory and store.
func newTestContainment(t *testing.T) (*Containment, *directory.SQLite, *recorder, *events, *[]string) {
	t.Helper()
	ctx := context.Background()
	db := testutil.OpenDB(t)
	dir, err := directory.NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		dir.AddDomain(ctx, "firma.cz"), dir.AddDomain(ctx, "jina.cz"),
		dir.AddAccount(ctx, "jan@firma.cz", "{BLF-CRYPT}x"), dir.AddAccount(ctx, "eva@jina.cz", "{BLF-CRYPT}x"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{held: map[string][]string{"jan@firma.cz": {"q1", "q2"}}}
	ev := &events{}
	var audit []string
	var audited []time.Time
	c := New(Config{
		Directory: dir, Store: st, Sessions: rec, Credentials: rec, Queue: rec, Notifiers: []Notifier{ev},
		Audit: func(_ context.Context, action, target string, _ any) error {
			audit = append(audit, action+" "+target)
			audited = append(audited, time.Now())
			return nil
		},
		Audited: func(_ context.Context, action, target string, since time.Time) (bool, error) {
			for i := len(audit) - 1; i >= 0; i-- {
				if audit[i] == action+" "+target {
					return !audited[i].Before(since), nil
				}
			}
			return false, nil
		},
	})
	return c, dir, rec, ev, &audit
}

var volumeTrip = Trip{Account: "jan@firma.cz", Signal: SignalVolume, Summary: "200 messages in the last hour",
	Figures: map[string]float64{"last_hour": 200}, Time: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}

// TestActHolds: a trip holds the account in the directory, then drops its
// credentials, closes its sessions and holds its mail, in that order;
// records, audits and notifies with the count of held messages; a second
// trip of a held account does nothing; release undoes it (SPEC R20).
func TestActHolds(t *testing.T) {
	ctx := context.Background()
	c, dir, rec, ev, audit := newTestContainment(t)
	got, err := c.Act(ctx, volumeTrip)
	if err != nil {
		t.Fatal(err)
	}
	if got.Action != ActionHold || got.HeldMessages != 2 || got.ClosedSessions != 1 {
		t.Fatalf("event %+v", got)
	}
	a, _ := dir.Account(ctx, "jan@firma.cz")
	if !a.Held || !strings.HasPrefix(a.HeldReason, "volume: ") {
		t.Fatalf("account %+v", a)
	}
	want := []string{"forget jan@firma.cz", "close jan@firma.cz", "hold jan@firma.cz volume"}
	if calls := rec.take(); strings.Join(calls, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %q, want %q", calls, want)
	}
	if len(ev.got) != 1 || ev.got[0].HeldMessages != 2 || len(*audit) != 1 || (*audit)[0] != "contain.hold account:jan@firma.cz" {
		t.Fatalf("events %+v, audit %q", ev.got, *audit)
	}
	last, err := c.LastTrip(ctx, "jan@firma.cz")
	if err != nil || last == nil || last.Signal != SignalVolume || last.Figures["last_hour"] != 200 {
		t.Fatalf("LastTrip = %+v, %v", last, err)
	}
	if _, err := c.Act(ctx, volumeTrip); err != nil || len(rec.take()) != 0 || len(ev.got) != 1 {
		t.Fatalf("a second trip acted: %v", err)
	}

	n, err := c.Release(ctx, "Jan@firma.cz")
	if err != nil || n != 2 {
		t.Fatalf("Release = %d, %v", n, err)
	}
	if a, _ := dir.Account(ctx, "jan@firma.cz"); a.Held {
		t.Fatal("still held after release")
	}
	if calls := rec.take(); strings.Join(calls, ",") != "forget jan@firma.cz,reopen jan@firma.cz,release jan@firma.cz" {
		t.Fatalf("calls %q", calls)
	}
	if _, err := c.Release(ctx, "jan@firma.cz"); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release of a free account: %v", err)
	}
	if _, err := c.Purge(ctx, "jan@firma.cz"); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("purge of a free account: %v", err)
	}
}

// TestWarnOnly: a domain's "warn" override makes a trip notify and audit
// without holding anything, once per hour and signal however often it
// trips; the account's own "hold" override wins over its domain's.
func TestWarnOnly(t *testing.T) {
	ctx := context.Background()
	c, dir, rec, ev, audit := newTestContainment(t)
	if err := c.SetOverride(ctx, "FIRMA.cz", ActionWarn); err != nil {
		t.Fatal(err)
	}
	got, err := c.Act(ctx, volumeTrip)
	if err != nil || got.Action != ActionWarn || got.HeldMessages != 0 {
		t.Fatalf("event %+v, %v", got, err)
	}
	if a, _ := dir.Account(ctx, "jan@firma.cz"); a.Held {
		t.Fatal("held under warn only")
	}
	if calls := rec.take(); len(calls) != 0 {
		t.Fatalf("calls %q under warn only", calls)
	}
	if len(ev.got) != 1 || ev.got[0].Action != ActionWarn || (*audit)[0] != "contain.warn account:jan@firma.cz" {
		t.Fatalf("events %+v audit %q", ev.got, *audit)
	}
	if _, err := c.Act(ctx, volumeTrip); err != nil || len(ev.got) != 1 || len(*audit) != 1 {
		t.Fatalf("a second warning within the hour was sent: %v, %d events", err, len(ev.got))
	}
	if err := c.SetOverride(ctx, "jan@firma.cz", ActionHold); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Act(ctx, volumeTrip); got.Action != ActionHold {
		t.Fatalf("account override ignored: %+v", got)
	}
	ov, _ := c.Overrides(ctx)
	if len(ov) != 2 || ov["firma.cz"] != ActionWarn || ov["jan@firma.cz"] != ActionHold {
		t.Fatalf("overrides %v", ov)
	}
	if err := c.SetOverride(ctx, "firma.cz", "block"); err == nil {
		t.Fatal("an unknown action was taken")
	}
}

// TestRunActsOncePerAccount: trips queued while the worker is busy are
// acted on once per account.
func TestRunActsOncePerAccount(t *testing.T) {
	c, _, _, ev, _ := newTestContainment(t)
	for range 100 {
		c.Trip(volumeTrip)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	testutil.WaitFor(t, 5*time.Second, "the trip acted on", func() bool {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		return len(ev.got) == 1
	})
	cancel()
	<-done
}

// TestRunFinishesTripAtStop: a trip under way when Run's context ends still
// writes its record and audit entry after the hold, and a trip left waiting
// is acted on too, before Run returns (SPEC R20: no hold support cannot
// see).
func TestRunFinishesTripAtStop(t *testing.T) {
	c, dir, rec, _, audit := newTestContainment(t)
	holding := make(chan string)
	gate := make(chan struct{})
	rec.holding, rec.gate = holding, gate
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	c.Trip(volumeTrip)
	if a := <-holding; a != "jan@firma.cz" {
		t.Fatalf("holding the mail of %s", a)
	}
	// The server stops while jan's mail is being held, and eva trips.
	c.Trip(Trip{Account: "eva@jina.cz", Signal: SignalNetworks, Summary: "5 networks", Time: volumeTrip.Time})
	cancel()
	select {
	case <-done:
		t.Fatal("Run returned while a trip was under way")
	case a := <-holding:
		t.Fatalf("holding the mail of %s before the first hold ended", a)
	default:
	}
	close(gate)
	go func() {
		for range holding {
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the trips")
	}
	close(holding)
	bg := context.Background()
	for _, account := range []string{"jan@firma.cz", "eva@jina.cz"} {
		a, err := dir.Account(bg, account)
		if err != nil || !a.Held {
			t.Fatalf("%s: %+v, %v", account, a, err)
		}
		last, err := c.LastTrip(bg, account)
		if err != nil || last == nil || last.Action != ActionHold {
			t.Fatalf("%s: trip record %+v, %v", account, last, err)
		}
	}
	want := "contain.hold account:jan@firma.cz,contain.hold account:eva@jina.cz"
	if got := strings.Join(*audit, ","); got != want {
		t.Fatalf("audit %q, want %q", got, want)
	}
}

// TestRestoreRecordsHold: a hold whose trip was never recorded (the process
// died after the directory held the account) is recorded, audited and
// notified at the next start, once; a hold with its record is left as it
// is (SPEC R20).
func TestRestoreRecordsHold(t *testing.T) {
	ctx := context.Background()
	c, dir, rec, ev, audit := newTestContainment(t)
	if _, err := c.Act(ctx, volumeTrip); err != nil {
		t.Fatal(err)
	}
	// The first step of eva's hold, and no more.
	if err := dir.SetHeld(ctx, "eva@jina.cz", true, "networks: logins from 5 networks"); err != nil {
		t.Fatal(err)
	}
	ev.got = nil
	for range 2 {
		if err := c.Restore(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(*audit, ","); got != "contain.hold account:jan@firma.cz,contain.hold account:eva@jina.cz" {
		t.Fatalf("audit %q, want jan's hold and then eva's, once", got)
	}
	a, _ := dir.Account(ctx, "eva@jina.cz")
	last, err := c.LastTrip(ctx, "eva@jina.cz")
	if err != nil || last == nil || last.Signal != SignalNetworks || last.Summary != "logins from 5 networks" ||
		last.Action != ActionHold || !last.Time.Equal(a.HeldSince) {
		t.Fatalf("eva's record %+v, %v", last, err)
	}
	if len(ev.got) != 1 || ev.got[0].Account != "eva@jina.cz" {
		t.Fatalf("notified %+v", ev.got)
	}
	if calls := rec.take(); !slices.Contains(calls, "hold eva@jina.cz networks") {
		t.Fatalf("eva's mail not held: calls %q", calls)
	}
}

// TestWebhook: the event is posted as JSON; failures are retried with
// backoff until one succeeds; a full queue drops new events instead of
// waiting.
func TestWebhook(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	fails := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, string(b))
		if r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if fails > 0 {
			fails--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}))
	defer srv.Close()
	wh := NewWebhook(WebhookConfig{URL: srv.URL, Backoff: time.Millisecond, Attempts: 3, Queue: 1})
	wh.Notify(Event{Trip: volumeTrip, Action: ActionHold, HeldMessages: 7})
	wh.Notify(Event{Trip: volumeTrip})
	if _, _, dropped := wh.Counts(); dropped != 1 {
		t.Fatalf("%d dropped, want 1 (queue of 1)", dropped)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go wh.Run(ctx)
	testutil.WaitFor(t, 5*time.Second, "the event sent", func() bool { sent, _, _ := wh.Counts(); return sent == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 3 {
		t.Fatalf("%d posts, want 3 (two failures, one success)", len(bodies))
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(bodies[2]), &got); err != nil {
		t.Fatal(err)
	}
	if got["account"] != "jan@firma.cz" || got["signal"] != "volume" || got["held_messages"] != float64(7) ||
		got["action"] != "hold" || got["time"] != "2026-03-02T09:00:00Z" || got["figures"].(map[string]any)["last_hour"] != float64(200) {
		t.Fatalf("body %s", bodies[2])
	}
}

// TestWebhookSetTarget: an event queued before SetTarget goes to the new
// URL, tried as many times as the new setting says.
func TestWebhookSetTarget(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	handler := func(name string, status int) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits[name]++
			mu.Unlock()
			w.WriteHeader(status)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	old, next := handler("old", http.StatusOK), handler("new", http.StatusServiceUnavailable)
	wh := NewWebhook(WebhookConfig{URL: old.URL, Backoff: time.Millisecond, Attempts: 1})
	wh.Notify(Event{Trip: volumeTrip})
	wh.SetTarget(next.URL, time.Second, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go wh.Run(ctx)
	testutil.WaitFor(t, 5*time.Second, "the event given up", func() bool { _, failed, _ := wh.Counts(); return failed == 1 })
	mu.Lock()
	defer mu.Unlock()
	if hits["old"] != 0 || hits["new"] != 3 {
		t.Errorf("posts: %v, want 3 to the new URL and none to the old", hits)
	}
}
