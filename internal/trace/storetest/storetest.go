// Package storetest is the suite every delivery history store passes, so
// that the PostgreSQL history answers support as the SQLite one does.
package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"submitd/internal/trace"
)

// Open returns a fresh, empty store.
type Open func(t *testing.T) trace.Store

// Run runs the suite.
func Run(t *testing.T, open Open) {
	t.Run("PathAndStates", func(t *testing.T) { pathAndStates(t, open) })
	t.Run("Find", func(t *testing.T) { find(t, open) })
	t.Run("Prune", func(t *testing.T) { prune(t, open) })
	t.Run("HostileText", func(t *testing.T) { hostileText(t, open) })
}

const (
	qid1 = "0000000000000000000000a1"
	qid2 = "0000000000000000000000a2"
	qid3 = "0000000000000000000000a3"
)

func message(id string, received time.Time, from string, rcpts ...string) *trace.Message {
	m := &trace.Message{QueueID: id, Received: received, SessionID: "piWs1j0010jifNx01iWsdh", ClientIP: "192.0.2.7",
		Account: "jan@firma.cz", From: from, Subject: "Faktura 42", MessageID: "<" + id + "@firma.cz>", Size: 1234}
	for _, r := range rcpts {
		m.Rcpts = append(m.Rcpts, trace.Rcpt{Addr: r})
	}
	return m
}

// pathAndStates: each recipient's state follows its last attempt, a
// bounce and a message-wide step (held, released, deleted) change only the
// recipients not done yet, and the events come back in order. Deleted
// and purged are final: a later attempt's end does not change them.
func pathAndStates(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	m := message(qid1, t0, "jan@firma.cz", "ok@example.org", "no@example.org", "later@example.net")
	if err := st.Save(ctx, &trace.Batch{Messages: []*trace.Message{m}}); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Minute)
	evs := []trace.Event{
		{QueueID: qid1, Rcpt: "ok@example.org", Time: at, Kind: "delivered", Host: "mx.example.org [192.0.2.25]",
			TLS: "TLS 1.3, certificate verified", Reply: "250 2.0.0 OK 1701 gsmtp"},
		{QueueID: qid1, Rcpt: "no@example.org", Time: at, Kind: "failed", Host: "mx.example.org [192.0.2.25]", Reply: "550 5.1.1 no such user"},
		{QueueID: qid1, Rcpt: "later@example.net", Time: at, Kind: "deferred", Host: "mx.example.net [192.0.2.26]",
			Reply: "451 4.3.0 try later", Next: at.Add(5 * time.Minute)},
		{QueueID: qid1, Rcpt: "no@example.org", Time: at, Kind: "bounced", Detail: "report 0000000000000000000000b1"},
	}
	if err := st.Save(ctx, &trace.Batch{Events: evs}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Message(ctx, qid1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "Faktura 42" || got.Account != "jan@firma.cz" || got.SessionID != m.SessionID || !got.Received.Equal(t0) || len(got.Events) != 4 {
		t.Fatalf("message = %+v", got)
	}
	want := map[string][2]string{
		"ok@example.org":    {"delivered", "250 2.0.0 OK 1701 gsmtp"},
		"no@example.org":    {"bounced", "550 5.1.1 no such user"},
		"later@example.net": {"deferred", "451 4.3.0 try later"},
	}
	for i, r := range got.Rcpts {
		if r.Addr != m.Rcpts[i].Addr || want[r.Addr] != [2]string{r.State, r.Reply} {
			t.Errorf("rcpt %d = %+v, want %s %v", i, r, m.Rcpts[i].Addr, want[m.Rcpts[i].Addr])
		}
	}
	if r := got.Rcpts[2]; !r.Next.Equal(at.Add(5*time.Minute)) || r.Host != "mx.example.net [192.0.2.26]" {
		t.Errorf("deferred rcpt = %+v", r)
	}
	if e := got.Events[0]; e.TLS != "TLS 1.3, certificate verified" || e.Host != "mx.example.org [192.0.2.25]" || !e.Time.Equal(at) {
		t.Errorf("first event = %+v", e)
	}
	for _, k := range []string{"held", "released", "deleted"} {
		if err := st.Save(ctx, &trace.Batch{Events: []trace.Event{{QueueID: qid1, Time: at.Add(time.Minute), Kind: k, Detail: "by petra"}}}); err != nil {
			t.Fatal(err)
		}
		got, _ = st.Message(ctx, qid1)
		wantLater := map[string]string{"held": "held", "released": "queued", "deleted": "deleted"}[k]
		if got.Rcpts[0].State != "delivered" || got.Rcpts[1].State != "bounced" || got.Rcpts[2].State != wantLater {
			t.Errorf("after %s: %+v", k, got.Rcpts)
		}
	}
	// The end of an attempt that was under way when the message was
	// deleted reaches the history after the delete: it is kept as an
	// event, and the recipient stays deleted.
	late := trace.Event{QueueID: qid1, Rcpt: "later@example.net", Time: at.Add(2 * time.Minute), Kind: "deferred",
		Host: "mx.example.net [192.0.2.26]", Reply: "451 4.4.2 delivery interrupted"}
	if err := st.Save(ctx, &trace.Batch{Events: []trace.Event{late}}); err != nil {
		t.Fatal(err)
	}
	got, _ = st.Message(ctx, qid1)
	if r := got.Rcpts[2]; r.State != "deleted" || r.Reply != "451 4.3.0 try later" || len(got.Events) != 8 {
		t.Errorf("after an attempt ended past the delete: %+v, %d events", r, len(got.Events))
	}
	if _, err := st.Message(ctx, qid2); !errors.Is(err, trace.ErrNotFound) {
		t.Errorf("unknown message: %v", err)
	}
	// A message accepted before the history existed is known by its events.
	if err := st.Save(ctx, &trace.Batch{Events: []trace.Event{{QueueID: qid3, Rcpt: "x@example.org", Time: at, Kind: "deferred", Reply: "451 later"}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Message(ctx, qid3); err != nil || len(got.Rcpts) != 1 || got.Rcpts[0].State != "deferred" {
		t.Errorf("message known by events: %+v, %v", got, err)
	}
}

// find: by recipient, sender or account, Message-ID, queue id, session id
// and client IP, newest first, within a time range.
func find(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	t0 := time.Now().Add(-time.Hour)
	m1 := message(qid1, t0, "jan@firma.cz", "friend@example.org")
	m2 := message(qid2, t0.Add(time.Minute), "info@firma.cz", "friend@example.org", "boss@example.org")
	m3 := message(qid3, t0.Add(2*time.Minute), "eva@firma.cz", "boss@example.org")
	m3.Account, m3.SessionID, m3.ClientIP = "eva@firma.cz", "otherotherotherother01", "198.51.100.1"
	if err := st.Save(ctx, &trace.Batch{Messages: []*trace.Message{m1, m2, m3}}); err != nil {
		t.Fatal(err)
	}
	ids := func(q trace.Query) []string {
		t.Helper()
		ms, err := st.Find(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range ms {
			out = append(out, m.QueueID)
		}
		return out
	}
	for _, c := range []struct {
		q    trace.Query
		want []string
	}{
		{trace.Query{Rcpt: "friend@example.org"}, []string{qid2, qid1}},
		{trace.Query{Rcpt: "boss@example.org"}, []string{qid3, qid2}},
		{trace.Query{Rcpt: "boss@example.org", Limit: 1}, []string{qid3}},
		{trace.Query{Sender: "info@firma.cz"}, []string{qid2}},
		{trace.Query{Sender: "jan@firma.cz"}, []string{qid2, qid1}},
		{trace.Query{MessageID: "<" + qid1 + "@firma.cz>"}, []string{qid1}},
		{trace.Query{QueueID: qid3}, []string{qid3}},
		{trace.Query{SessionID: "piWs1j0010jifNx01iWsdh"}, []string{qid2, qid1}},
		{trace.Query{ClientIP: "198.51.100.1"}, []string{qid3}},
		{trace.Query{Rcpt: "friend@example.org", Since: t0.Add(30 * time.Second)}, []string{qid2}},
		{trace.Query{Rcpt: "friend@example.org", Until: t0.Add(30 * time.Second)}, []string{qid1}},
		{trace.Query{Rcpt: "nobody@example.org"}, nil},
	} {
		if got := ids(c.q); !slices.Equal(got, c.want) {
			t.Errorf("Find(%+v) = %v, want %v", c.q, got, c.want)
		}
	}
	ms, _ := st.Find(ctx, trace.Query{QueueID: qid2})
	if len(ms) != 1 || len(ms[0].Rcpts) != 2 || ms[0].Rcpts[1].Addr != "boss@example.org" || ms[0].Events != nil {
		t.Errorf("found message = %+v", ms)
	}
	// Several messages found at once each come with their own recipients.
	ms, _ = st.Find(ctx, trace.Query{Rcpt: "boss@example.org"})
	if len(ms) != 2 || ms[0].From != "eva@firma.cz" || len(ms[0].Rcpts) != 1 || ms[1].From != "info@firma.cz" ||
		len(ms[1].Rcpts) != 2 || ms[1].Rcpts[0].Addr != "friend@example.org" || !ms[1].Received.Equal(m2.Received) {
		t.Errorf("found messages = %+v", ms)
	}
	if _, err := st.Find(ctx, trace.Query{}); err == nil {
		t.Error("Find with no criteria accepted")
	}
}

// prune: messages accepted before the cut go with their recipients and
// events; later ones stay.
func prune(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	now := time.Now()
	old := message(qid1, now.Add(-40*24*time.Hour), "jan@firma.cz", "a@example.org")
	recent := message(qid2, now, "jan@firma.cz", "a@example.org")
	b := &trace.Batch{Messages: []*trace.Message{old, recent}, Events: []trace.Event{
		{QueueID: qid1, Rcpt: "a@example.org", Time: old.Received.Add(time.Minute), Kind: "delivered", Reply: "250 ok"},
		{QueueID: qid2, Rcpt: "a@example.org", Time: now, Kind: "delivered", Reply: "250 ok"},
	}}
	if err := st.Save(ctx, b); err != nil {
		t.Fatal(err)
	}
	n, err := st.Prune(ctx, now.Add(-30*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	if _, err := st.Message(ctx, qid1); !errors.Is(err, trace.ErrNotFound) {
		t.Errorf("pruned message: %v", err)
	}
	if ms, _ := st.Find(ctx, trace.Query{Rcpt: "a@example.org"}); len(ms) != 1 || ms[0].QueueID != qid2 {
		t.Errorf("after prune: %+v", ms)
	}
	if m, err := st.Message(ctx, qid2); err != nil || len(m.Events) != 1 {
		t.Errorf("recent message after prune: %+v, %v", m, err)
	}
}

// hostileText: whatever bytes a message's Subject or a remote's reply
// held, the batch is saved, the others in it too.
func hostileText(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	bad := message(qid1, time.Now(), "a\x00b@\xc3(.cz", "x\x00@example.org")
	bad.Subject = "evil\x00\xff\xfe"
	good := message(qid2, time.Now(), "jan@firma.cz", "ok@example.org")
	b := &trace.Batch{Messages: []*trace.Message{bad, good}, Events: []trace.Event{
		{QueueID: qid1, Rcpt: "x\x00@example.org", Time: time.Now(), Kind: "failed", Reply: "550 \xff\x00 nope"},
	}}
	if err := st.Save(ctx, b); err != nil {
		t.Fatalf("Save with hostile bytes: %v", err)
	}
	for _, id := range []string{qid1, qid2} {
		if m, err := st.Message(ctx, id); err != nil || len(m.Rcpts) != 1 {
			t.Errorf("Message(%s) = %+v, %v", id, m, err)
		}
	}
}
