package smtpd

import (
	"bytes"
	"context"

	"github.com/emersion/go-smtp"

	"submitd/internal/scan"
)

// scanCopy is the spool writer of a message to be scanned: it keeps a copy
// of what is written, the message as it will be queued, up to the
// scanner's MaxSize. Past that the copy is dropped, and the message passes
// unscanned (SPEC R22: messages up to the size limit are scanned), so a
// message costs at most MaxSize of memory for its scan.
type scanCopy struct {
	MessageWriter
	// sc is the scanner the message is for.
	sc Scanner
	// buf is the copy; nil once the message outgrew max, the scanner's
	// MaxSize.
	buf *bytes.Buffer
	max int64
	// n counts the bytes written.
	n int64
}

func (c *scanCopy) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.buf != nil {
		if c.n > c.max {
			c.buf = nil
		} else {
			c.buf.Write(p)
		}
	}
	return c.MessageWriter.Write(p)
}

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

// scanWriter wraps the spool writer w when a scanner is configured.
func (in *intake) scanWriter(w MessageWriter) MessageWriter {
	sc := in.s.s.scanner()
	if sc == nil {
		return w
	}
	c := &scanCopy{MessageWriter: w, sc: sc, max: sc.MaxSize(), buf: &bytes.Buffer{}}
	in.copy = c
	return c
}

// scanVerdict scans the complete message before it is committed (SPEC
// R22) and returns the reply key and reply that refuse it, or "" to queue
// it. The verdict goes into the session record; refused and flagged
// messages go to OnSpam.
func (in *intake) scanVerdict() (string, *smtp.SMTPError) {
	c := in.copy
	if c == nil {
		return "", nil
	}
	s := in.s
	m := &scan.Message{
		User: s.acct.Address, IP: s.c.client.Addr().String(), Helo: in.tx.helo,
		From: in.tx.from, Rcpts: in.tx.rcpts, QueueID: in.env.ID, Size: c.n,
	}
	if c.buf != nil {
		m.Content = c.buf.Bytes()
	}
	r := c.sc.Scan(context.Background(), m)
	c.buf = nil
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
