package smtpd

import (
	"context"

	"github.com/emersion/go-smtp"

	"submitd/internal/scan"
)

// scannerRef holds a scanner given to SetScanner; sc nil scans nothing.
type scannerRef struct{ sc Scanner }

// SetScanner makes sc the scanner of the messages whose content starts
// arriving from now on, nil turning scanning off, as a reload of [scan]
// does; a message under way keeps the scanner it started with.
func (s *Server) SetScanner(sc Scanner) { s.scanSet.Store(&scannerRef{sc}) }

// scanner is the scanner in effect: SetScanner's, else Scanner.
func (s *Server) scanner() Scanner {
	if r := s.scanSet.Load(); r != nil {
		return r.sc
	}
	return s.Scanner
}

// scanVerdict scans the complete message w holds before it is committed
// (SPEC R22) and returns the reply key and reply that refuse it, or "" to
// queue it. The verdict goes into the session record; refused and flagged
// messages go to OnSpam.
//
// The scanner reads the message from w, the spool writer's own copy (in
// memory for a small message, else its file in tmp/), so that a scan costs
// no second copy: otherwise every session receiving a message could hold
// up to max_size more of it in memory. w is committed or aborted only once
// Scan has returned, and Scan reads nothing after that.
func (in *intake) scanVerdict(w MessageWriter) (string, *smtp.SMTPError) {
	sc := in.scanner
	if sc == nil {
		return "", nil
	}
	s := in.s
	content, err := w.Content()
	if err != nil {
		// The message cannot be committed either: it is refused as a
		// failed commit is, without asking the scanner.
		s.c.log.Error("spool write failed", "queue_id", in.env.ID, "err", err)
		return ReplySpoolFailed, s.c.set.Replies.Err(ReplySpoolFailed, s.vars())
	}
	m := &scan.Message{
		Content: content, Size: content.Size(),
		User: s.acct.Address, IP: s.c.client.Addr().String(), Helo: in.tx.helo,
		From: in.tx.from, Rcpts: in.tx.rcpts, QueueID: in.env.ID,
	}
	r := sc.Scan(context.Background(), m)
	v := r.Verdict
	if v == nil {
		s.c.record("scan", in.env.ID+": unscanned ("+r.Unscanned+")", "")
		if r.Err != nil {
			s.c.log.Warn("message not scanned", "queue_id", in.env.ID, "reason", r.Unscanned, "err", r.Err)
		}
		if r.Tempfail {
			return ReplyScanUnavailable, s.c.set.Replies.Err(ReplyScanUnavailable, s.vars())
		}
		return "", nil
	}
	s.c.record("scan", in.env.ID+": "+oneLine(v.String()), "")
	s.c.log.Info("message scanned", "queue_id", in.env.ID, "action", v.Action, "score", v.Score, "required", v.Required, "took", r.Took)
	if (v.Refused() || v.Flagged()) && s.s.OnSpam != nil {
		s.s.OnSpam(s.acct.Address, v.Action, s.s.now())
	}
	key := ""
	switch {
	case v.Refused():
		key = ReplySpam
	case v.Action == scan.ActionSoftReject:
		key = ReplySpamDeferred
	default:
		// add header and rewrite subject are flagged, and the message goes
		// out unchanged: recipients never see rspamd's scores. greylist
		// means nothing to a submission server.
		return "", nil
	}
	e := s.c.set.Replies.Err(key, s.vars())
	if x := v.Explanation(); x != "" {
		e.Message += ": " + oneLine(x)
	}
	return key, e
}
