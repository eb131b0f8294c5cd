package admin

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"submitd/internal/contain"
	"submitd/internal/delivery"
	"submitd/internal/queue"
	"submitd/internal/spool"
)

// heldAccount is the account the world holds.
const heldAccount = "held@firma.cz"

// deferAll is a delivery.Sender that defers every recipient.
type deferAll struct{}

func (deferAll) Deliver(_ context.Context, m *delivery.Message) []delivery.Result {
	out := make([]delivery.Result, len(m.Rcpts))
	for i, r := range m.Rcpts {
		out[i] = delivery.Result{Rcpt: r, Status: delivery.Temporary, Reply: "451 later"}
	}
	return out
}

// withHeld gives the world a containment with a queue of its own (the
// world's spool is the offline queue.Admin's, which a running queue would
// lock) and holds heldAccount with one queued message.
func withHeld(t *testing.T, w *world) {
	t.Helper()
	ctx := context.Background()
	sp, err := spool.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(queue.Config{Spool: sp, Sender: deferAll{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	sp.OnCommit = q.Add
	wr, err := sp.Create(&spool.Envelope{From: heldAccount, To: []string{"lead@example.org"}, Account: heldAccount, Received: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(wr, "From: held@firma.cz\r\nSubject: offer\r\n\r\nbuy\r\n")
	must(t, wr.Commit())
	h, _ := fixtureHashes()
	must(t, w.dir.AddAccount(ctx, heldAccount, h))
	st, err := contain.NewSQLite(ctx, w.store.db)
	if err != nil {
		t.Fatal(err)
	}
	c := contain.New(contain.Config{Directory: w.dir, Store: st, Queue: q})
	ev, err := c.Act(ctx, contain.Trip{Account: heldAccount, Signal: contain.SignalNetworks, Summary: "logins from 12 networks",
		Figures: map[string]float64{"networks": 12}, Time: time.Now()})
	if err != nil || ev.HeldMessages != 1 {
		t.Fatalf("hold: %+v, %v", ev, err)
	}
	w.srv.SetHeld(c)
}

func heldEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/held", need: RoleSupport, bad: "/api/v1/held?limit=0", check: func(t *testing.T, w *world, r reply) {
			items, _ := r.body["items"].([]any)
			if r.body["total"] != 1.0 || len(items) != 1 || items[0].(map[string]any)["held_messages"] != 1.0 {
				t.Errorf("held: %s", r.raw)
			}
		}},
		{method: "GET", path: "/api/v1/held/" + heldAccount, need: RoleSupport, unknown: "/api/v1/held/" + testAccount, bad: "/api/v1/held/nobody",
			check: func(t *testing.T, w *world, r reply) {
				trip, _ := r.body["trip"].(map[string]any)
				if r.body["held_messages"] != 1.0 || trip["signal"] != "networks" || trip["figures"].(map[string]any)["networks"] != 12.0 {
					t.Errorf("held detail: %s", r.raw)
				}
			}},
		{method: "POST", path: "/api/v1/held/" + heldAccount + "/release", need: RoleSupport, audit: "held.release", target: "account:" + heldAccount,
			unknown: "/api/v1/held/" + testAccount + "/release", bad: "/api/v1/held/nobody/release", check: func(t *testing.T, w *world, r reply) {
				a, _ := w.dir.Account(context.Background(), heldAccount)
				if r.body["released"] != 1.0 || a.Held {
					t.Errorf("release: %s, held %v", r.raw, a.Held)
				}
			}},
		{method: "POST", path: "/api/v1/held/" + heldAccount + "/purge", need: RoleSupport, audit: "held.purge", target: "account:" + heldAccount,
			unknown: "/api/v1/held/" + testAccount + "/purge", bad: "/api/v1/held/nobody/purge", check: func(t *testing.T, w *world, r reply) {
				a, _ := w.dir.Account(context.Background(), heldAccount)
				if r.body["purged"] != 1.0 || !a.Held {
					t.Errorf("purge: %s, held %v", r.raw, a.Held)
				}
			}},
		{method: "POST", path: "/api/v1/held/overrides", body: `{"target":"Firma.cz","action":"warn"}`, need: RoleSupport, audit: "held.override",
			target: "contain:firma.cz", bad: "/api/v1/held/overrides", badBody: `{"target":"firma.cz","action":"block"}`,
			check: func(t *testing.T, w *world, r reply) {
				if r := w.do("GET", "/api/v1/held/overrides", "", RoleSupport); r.body["firma.cz"] != "warn" {
					t.Errorf("overrides: %s", r.raw)
				}
			}},
	}
}

// TestHeldEndpoints: the held-account endpoints under the same checks as
// every other (TestEndpoints): credentials, roles, CSRF, 404 for an
// account that is not held, 400 for bad input, an audit entry per change.
func TestHeldEndpoints(t *testing.T) {
	for i, ep := range heldEndpoints() {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			w := newWorld(t)
			withHeld(t, w)
			checkEndpoint(t, w, heldEndpoints()[i])
		})
	}
}

// TestHeldWithoutServer: a process without the containment (the CLI with
// no server running) answers 503 with a message, not a false "not held".
func TestHeldWithoutServer(t *testing.T) {
	w := newWorld(t)
	wantError(t, "list", w.do("GET", "/api/v1/held", "", RoleSupport), 503)
	wantError(t, "release", w.do("POST", "/api/v1/held/"+testAccount+"/release", "", RoleSupport), 503)
}

// TestWebHeld: the Held accounts page lists the held account; its page
// shows the signal, its figures and the held mail's sample; Release there,
// confirmed, runs the API's release with its audit entry (SPEC R20).
func TestWebHeld(t *testing.T) {
	w := newWorld(t)
	withHeld(t, w)
	b := w.webClient()
	b.login("petra")
	p := b.get("/held")
	contains(t, p, `href="/held/`+heldAccount+`"`, "networks: logins from 12 networks")
	p = b.get("/held/" + heldAccount)
	contains(t, p, "logins from 12 networks", "<th>networks</th><td>12</td>", `action="/held/`+heldAccount+`/release"`, `action="/held/`+heldAccount+`/purge"`)
	checkLabels(t, "/held/"+heldAccount, p.body)
	p = b.post("/held/"+heldAccount+"/release", url.Values{"csrf_token": {csrf(t, p)}, "back": {"/held"}, "confirmed": {"yes"}})
	contains(t, p, "released "+heldAccount+" and 1 held message(s)", "No account is held.")
	if e := w.lastAudit(); e == nil || e.Action != "held.release" || e.Actor != "petra" {
		t.Fatalf("audit entry %+v", e)
	}
}
