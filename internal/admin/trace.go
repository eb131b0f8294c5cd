package admin

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"submitd/internal/ids"
	"submitd/internal/queue"
	"submitd/internal/sessionlog"
	"submitd/internal/trace"
)

// The message trace (SPEC R13a): where a customer's message went, found by
// recipient, sender, Message-ID, queue id, session id or client IP.
//
// Who sees the Subject: the admin role only. Support finds and follows a
// message by its recipient, sender, time and ids, which is all the
// question "where did my mail go" needs; the Subject is the customer's
// content, and the least of it is shown to the most people. A support
// agent who needs it to tell two messages apart asks the customer, or an
// admin.

// TraceStore is what the server reads and writes of the delivery history;
// trace.SQLite is one.
type TraceStore interface {
	// Find returns the messages matching q, newest first.
	Find(ctx context.Context, q trace.Query) ([]*trace.Message, error)
	// Message returns one message with its events, or an error wrapping
	// trace.ErrNotFound.
	Message(ctx context.Context, queueID string) (*trace.Message, error)
	// Save writes a batch, here the deletes made by staff.
	Save(ctx context.Context, b *trace.Batch) error
}

// maxTraceMessages bounds the messages one search lists.
const maxTraceMessages = 100

// traceRow is one recipient of one message in a search's list.
type traceRow struct {
	// QueueID is the message.
	QueueID string `json:"queue_id"`
	// Received is when it was accepted.
	Received time.Time `json:"received"`
	// Account is the login that sent it, SessionID the session.
	Account string `json:"account"`
	// SessionID is the session that accepted it.
	SessionID string `json:"session_id"`
	// From is the envelope sender.
	From string `json:"from"`
	// Subject is the Subject:, "" for the support role (SubjectHidden).
	Subject string `json:"subject"`
	// SubjectHidden says the Subject is left out for the caller's role.
	SubjectHidden bool `json:"subject_hidden,omitempty"`
	// Rcpt is the recipient.
	Rcpt string `json:"rcpt"`
	// State is what became of it (trace.State…).
	State string `json:"state"`
	// Reply is the remote's last reply, Host the server that gave it.
	Reply string `json:"reply"`
	// Host is the server that gave Reply.
	Host string `json:"host"`
	// Updated is when State last changed.
	Updated time.Time `json:"updated"`
}

// traceResult is what a trace search answers.
type traceResult struct {
	// Query is the text searched.
	Query string `json:"query"`
	// Terms are what was recognized in it.
	Terms Terms `json:"terms"`
	// From and Until bound when the messages were accepted.
	From *time.Time `json:"from,omitempty"`
	// Until is the end of the range.
	Until *time.Time `json:"until,omitempty"`
	// Rows are the recipients of the messages found, newest message first.
	Rows []traceRow `json:"rows"`
}

// traceRoutes registers the trace's endpoints and pages.
func (s *Server) traceRoutes() {
	s.handle("GET /api/v1/trace", RoleSupport, s.traceSearch)
	s.handle("GET /api/v1/trace/{id}", RoleSupport, s.traceMessage)
	s.webPage("GET /trace", RoleSupport, "trace", "Message trace", s.tracePage)
	s.webPage("GET /trace/{id}", RoleSupport, "message", "Message", s.traceMessage)
}

// traceStore returns the history, or a 503 when the node keeps none.
func (s *Server) traceStore() (TraceStore, error) {
	if s.cfg.Trace == nil {
		return nil, errorf(http.StatusServiceUnavailable, "the delivery history is not available")
	}
	return s.cfg.Trace, nil
}

// parseWhen reads a from= or until= bound: RFC 3339, or a UTC date and
// time to the minute, or a UTC date; a date alone as until= means its end.
func parseWhen(name, v string, end bool) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return &t, nil
	}
	if t, err := time.Parse("2006-01-02T15:04", v); err == nil {
		return &t, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		if end {
			t = t.Add(24*time.Hour - time.Nanosecond)
		}
		return &t, nil
	}
	return nil, badRequest("%s: %q is not a time (2006-01-02, 2006-01-02T15:04 or RFC 3339)", name, v)
}

func (s *Server) traceSearch(r *http.Request, p *principal) (any, error) {
	st, err := s.traceStore()
	if err != nil {
		return nil, err
	}
	v := r.URL.Query()
	q := v.Get("q")
	if strings.TrimSpace(q) == "" {
		return nil, badRequest("q: give a recipient or sender address, a Message-ID, a queue id, a session id or an IP")
	}
	if len(q) > maxFindText {
		return nil, badRequest("q: longer than %d bytes", maxFindText)
	}
	res := traceResult{Query: q, Terms: ParseFind(q), Rows: []traceRow{}}
	if res.From, err = parseWhen("from", v.Get("from"), false); err != nil {
		return nil, err
	}
	if res.Until, err = parseWhen("until", v.Get("until"), true); err != nil {
		return nil, err
	}
	res.Rows, err = s.trace(r.Context(), st, p, res.Terms, res.From, res.Until)
	return res, err
}

// trace finds the messages the terms name, accepted in [from, until], and
// lists their recipients: for a message found by a recipient's address
// only the recipients searched for, else all of them.
func (s *Server) trace(ctx context.Context, st TraceStore, p *principal, t Terms, from, until *time.Time) ([]traceRow, error) {
	var base trace.Query
	if from != nil {
		base.Since = *from
	}
	if until != nil {
		base.Until = *until
	}
	var qs []trace.Query
	add := func(f func(q *trace.Query)) {
		q := base
		f(&q)
		qs = append(qs, q)
	}
	for _, a := range t.Addresses {
		add(func(q *trace.Query) { q.Rcpt = a })
		add(func(q *trace.Query) { q.Sender = a })
	}
	for _, id := range t.MessageIDs {
		add(func(q *trace.Query) { q.MessageID = id })
	}
	for _, id := range t.QueueIDs {
		add(func(q *trace.Query) { q.QueueID = id })
	}
	for _, id := range t.Sessions {
		add(func(q *trace.Query) { q.SessionID = id })
	}
	for _, ip := range t.IPs {
		add(func(q *trace.Query) { q.ClientIP = ip })
	}
	byID := map[string]*trace.Message{}
	// only are the recipients a message was found by, when it was found
	// by recipient alone.
	only := map[string][]string{}
	for _, q := range qs {
		q.Limit = maxTraceMessages
		ms, err := st.Find(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			_, seen := byID[m.QueueID]
			if q.Rcpt != "" && (!seen || only[m.QueueID] != nil) {
				only[m.QueueID] = append(only[m.QueueID], q.Rcpt)
			} else if q.Rcpt == "" {
				delete(only, m.QueueID)
			}
			if !seen {
				byID[m.QueueID] = m
			}
		}
	}
	ms := make([]*trace.Message, 0, len(byID))
	for _, m := range byID {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *trace.Message) int {
		return cmp.Or(b.Received.Compare(a.Received), strings.Compare(b.QueueID, a.QueueID))
	})
	if len(ms) > maxTraceMessages {
		ms = ms[:maxTraceMessages]
	}
	hide := !p.role.may(RoleAdmin)
	rows := []traceRow{}
	for _, m := range ms {
		for _, rc := range m.Rcpts {
			if o := only[m.QueueID]; o != nil && !slices.Contains(o, rc.Addr) {
				continue
			}
			row := traceRow{QueueID: m.QueueID, Received: m.Received, Account: m.Account, SessionID: m.SessionID, From: m.From,
				Subject: m.Subject, Rcpt: rc.Addr, State: rc.State, Reply: rc.Reply, Host: rc.Host, Updated: rc.Updated}
			if hide {
				row.Subject, row.SubjectHidden = "", true
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// tracePage is the search page: empty until something is searched.
func (s *Server) tracePage(r *http.Request, p *principal) (any, error) {
	if strings.TrimSpace(r.URL.Query().Get("q")) == "" {
		return nil, nil
	}
	return s.traceSearch(r, p)
}

// messageView is a message's whole path: the session that accepted it,
// its recipients and every step, what is left of it in the queue, and the
// fixes that apply.
type messageView struct {
	*trace.Message
	// SubjectHidden says the Subject is left out for the caller's role.
	SubjectHidden bool `json:"subject_hidden,omitempty"`
	// Session is the session that accepted the message, nil when its
	// record is gone or it is a report.
	Session *sessionSummary `json:"session"`
	// Queued is the message as the queue holds it now, nil when it left.
	Queued *queueSummary `json:"queued"`
	// Fixes are the actions that apply now: "retry" and "delete" for a
	// queued message, "release" for a held one (of Account).
	Fixes []string `json:"fixes"`
}

func (s *Server) traceMessage(r *http.Request, p *principal) (any, error) {
	st, err := s.traceStore()
	if err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	if !ids.IsQueue(id) {
		return nil, badRequest("%q is not a queue id (24 letters and digits)", id)
	}
	ctx := r.Context()
	m, err := st.Message(ctx, id)
	if err != nil {
		return nil, err
	}
	v := messageView{Message: m, Fixes: []string{}}
	if !p.role.may(RoleAdmin) {
		cp := *m
		cp.Subject, v.Message, v.SubjectHidden = "", &cp, true
	}
	if ids.IsSession(m.SessionID) {
		rec, err := s.cfg.Sessions.Get(ctx, m.SessionID)
		if err == nil {
			sum := s.summarize(ctx, rec)
			v.Session = &sum
		} else if !errors.Is(err, sessionlog.ErrNotFound) {
			return nil, err
		}
	}
	if s.cfg.Queue != nil {
		if it, _, err := s.cfg.Queue.Show(id); err == nil {
			q := summarizeQueued(*it)
			v.Queued = &q
			if q.State == queue.StateHeld {
				v.Fixes = append(v.Fixes, "release")
			} else {
				v.Fixes = append(v.Fixes, "retry")
			}
			v.Fixes = append(v.Fixes, "delete")
		}
	}
	return v, nil
}

// traceDeleted notes in the history who deleted a message from the queue.
// A failure is logged: the delete itself is done and audited.
func (s *Server) traceDeleted(ctx context.Context, p *principal, id string, bounce bool) {
	if s.cfg.Trace == nil {
		return
	}
	detail := "by " + p.actor
	if bounce {
		detail += ", reported to the sender"
	}
	ev := trace.Event{QueueID: id, Time: s.cfg.Now(), Kind: queue.TraceDeleted, Detail: detail}
	if err := s.cfg.Trace.Save(ctx, &trace.Batch{Events: []trace.Event{ev}}); err != nil {
		s.cfg.Log.Error("admin: the delete is not in the delivery history", "queue_id", id, "err", err)
	}
}
