package admin

import (
	"context"
	"strings"

	"submitd/internal/sessionlog"
)

// scanEventKind is the session record's event of a content scan (SPEC
// R22): its detail is "QUEUEID: VERDICT" or "QUEUEID: unscanned (REASON)".
const scanEventKind = "scan"

// spamReplies tell the replies of SPEC R22 apart, each with the outcome a
// session list shows and the cause's start.
var spamReplies = []struct{ marker, outcome, cause string }{
	{"message refused as spam", "refused as spam", "rspamd refused the message as spam and nothing was queued (R22)"},
	{"deferred by the spam filter", "deferred by the spam filter", "rspamd answered soft reject, usually its rate limits; the client tries again (R22)"},
	{"could not be checked for spam", "spam filter unavailable", "rspamd did not answer in time or could not be reached, and [scan] on_error is tempfail; the client tries again (R22)"},
}

// explainSpam tells a message refused by the content scan, with the
// verdict from the scan event before the refusal; ok is false for other
// refusals.
func explainSpam(r *sessionlog.Record, last *sessionlog.Event) (outcome, cause string, ok bool) {
	for _, s := range spamReplies {
		if !strings.Contains(last.Reply, s.marker) {
			continue
		}
		cause = s.cause
		if v := lastScan(r, last); v != "" {
			cause += "; verdict " + v
		}
		return s.outcome, cause, true
	}
	return "", "", false
}

// lastScan returns the detail of the last scan event before ev.
func lastScan(r *sessionlog.Record, ev *sessionlog.Event) string {
	found := ""
	for i := range r.Events {
		e := &r.Events[i]
		if e == ev {
			break
		}
		if e.Kind == scanEventKind {
			found = e.Detail
		}
	}
	return found
}

// scanOf returns the verdict on the queued message id from its session's
// record, "" when the session recorded none (no scanning, or the record is
// not saved yet while the session goes on).
func (s *Server) scanOf(ctx context.Context, sessionID, id string) string {
	if sessionID == "" || s.cfg.Sessions == nil {
		return ""
	}
	rec, err := s.cfg.Sessions.Get(ctx, sessionID)
	if err != nil {
		return ""
	}
	for _, e := range rec.Events {
		if v, ok := strings.CutPrefix(e.Detail, id+": "); ok && e.Kind == scanEventKind {
			return v
		}
	}
	return ""
}
