package smtpd

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"submitd/internal/message"
	"submitd/internal/spool"
)

// Content errors found while a message comes in. Each maps to a row of the
// reply table (dataErr).
var (
	errLineTooLong = errors.New("line too long")
	errNUL         = errors.New("NUL byte")
	errTooBig      = errors.New("message too big")
)

// intake takes in one message, from DATA (after dot-stuffing is undone) or
// from BDAT chunks, in whatever pieces the connection delivers. It applies
// every content rule in one pass over the bytes (SPEC R14, R16: line length,
// bare CR or LF, NUL, size, header size), checks the header's senders at the
// end of the header (SPEC R7), and streams the message to the spool. Its
// state carries over from one piece to the next, so the outcome is the same
// however the content is split. The first error sticks: everything after it
// is read and dropped, and finish returns it.
type intake struct {
	// s is the session the message belongs to; tx its transaction.
	s  *session
	tx transaction
	// maxSize, maxLine and maxHeader are the limits in bytes.
	maxSize   int64
	maxLine   int
	maxHeader int

	// n counts content bytes; line the bytes of the current line so far,
	// CRLF included; cr is whether the last byte was a CR.
	n    int64
	line int
	cr   bool
	// inHeader is set until the empty line that ends the header section;
	// hdr holds the header section meanwhile.
	inHeader bool
	hdr      []byte
	// w is the spool file, open once the header has passed; env its
	// envelope.
	w   MessageWriter
	env *spool.Envelope
	// scanner scans the message, the one in effect when its spool file
	// was opened; nil without one.
	scanner Scanner
	// err is the first error.
	err error
}

func (s *session) newIntake(tx transaction) *intake {
	lim := s.c.set.Limits
	return &intake{
		s: s, tx: tx, inHeader: true,
		maxSize: lim.MaxMessageSize, maxLine: lim.MaxLineLength, maxHeader: lim.MaxHeaderSize,
	}
}

// Write takes the next piece of content. It never fails: errors are kept
// for finish, because the client's data must be read to its end anyway.
func (in *intake) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && in.err == nil {
		k, end, err := in.scan(p)
		if err != nil {
			in.fail(err)
			break
		}
		seg := p[:k]
		p = p[k:]
		switch {
		case in.inHeader:
			if len(in.hdr)+len(seg) > in.maxHeader {
				in.fail(message.ErrHeaderTooLarge)
				break
			}
			in.hdr = append(in.hdr, seg...)
			if end {
				in.endHeader()
			}
		case in.w != nil:
			if _, err := in.w.Write(seg); err != nil {
				in.fail(err)
			}
		}
	}
	return n, nil
}

// scan checks the bytes of p and returns how many it took: all of them, or
// those up to the end of the header section (end is then true).
func (in *intake) scan(p []byte) (k int, end bool, err error) {
	line, cr := in.line, in.cr
	defer func() {
		in.line, in.cr = line, cr
		in.n += int64(k)
		if err == nil && in.n > in.maxSize {
			err = errTooBig
		}
	}()
	for i, b := range p {
		switch {
		case b == '\n':
			if !cr {
				return i, false, message.ErrBareLineEnding
			}
			empty := line == 1
			line, cr = 0, false
			if empty && in.inHeader {
				return i + 1, true, nil
			}
			continue
		case cr:
			return i, false, message.ErrBareLineEnding
		case b == '\r':
			cr = true
		case b == 0:
			return i, false, errNUL
		}
		if line++; line >= in.maxLine {
			// The line has maxLine bytes before its LF: with the LF it is
			// longer than the limit, which counts CRLF (RFC 5321
			// §4.5.3.1.6).
			return i, false, errLineTooLong
		}
	}
	return len(p), false, nil
}

// fail records the first error and drops the spool file.
func (in *intake) fail(err error) {
	if in.err != nil {
		return
	}
	in.err = err
	in.hdr = nil
	if in.w != nil {
		in.w.Abort()
		in.w = nil
	}
}

// endHeader checks the header section and opens the spool file: the header
// is checked before the body arrives, and nothing is written for a message
// that is refused (SPEC R8).
func (in *intake) endHeader() {
	in.inHeader = false
	s := in.s
	h, err := message.Parse(in.hdr)
	if err != nil {
		v := s.vars()
		v.Detail = err.Error()
		in.fail(replyError{ReplyBadHeader, v})
		return
	}
	if e := s.checkHeaderSenders(h); e != nil {
		in.fail(e)
		return
	}
	now := s.s.now()
	in.env = &spool.Envelope{
		From: in.tx.from, To: in.tx.rcpts, Account: s.acct.Address, SessionID: s.c.sid,
		ClientIP: s.c.client.Addr().String(), Received: now, DSN: in.tx.dsn,
		RequireTLS: in.tx.requireTLS,
	}
	if !in.tx.requireTLS {
		// RFC 8689 §5: "TLS-Required: No" asks that the recipients'
		// TLS policies be set aside; REQUIRETLS overrides it (§4.1).
		for _, v := range h.Values("TLS-Required") {
			if strings.EqualFold(strings.TrimSpace(v), "No") {
				in.env.TLSOptional = true
			}
		}
	}
	w, err := s.s.Spool.Create(in.env)
	if err != nil {
		s.c.log.Error("spool create failed", "err", err)
		in.fail(replyError{ReplySpoolFailed, s.vars()})
		return
	}
	// A message under way keeps the scanner it started with (SetScanner).
	in.scanner = s.s.scanner()
	io.WriteString(w, s.receivedHeader(now, in.tx))
	// RFC 6409 §8.3, §8.1: a submission server adds what the client left out.
	if !h.Has("Message-ID") {
		fmt.Fprintf(w, "Message-ID: <%s@%s>\r\n", in.env.ID, s.s.Hostname)
	}
	if !h.Has("Date") {
		fmt.Fprintf(w, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	w.Write(in.hdr)
	in.hdr = nil
	in.w = w
}

// finish ends the message: it returns the reply key and the reply, the 250
// (ReplyQueued) only once the message is durable (SPEC R15).
func (in *intake) finish() (string, *smtp.SMTPError) {
	if in.err == nil {
		switch {
		case in.cr:
			// The content ended in a lone CR.
			in.fail(message.ErrBareLineEnding)
		case in.line > 0:
			// BDAT content that does not end with CRLF: the message is
			// stored with its last line ended, as RFC 5321 §2.3.8 wants
			// every line to be.
			in.Write([]byte("\r\n"))
		}
	}
	if in.err == nil && in.inHeader {
		// The content ended inside the header section: all of it is header.
		in.endHeader()
	}
	s := in.s
	if in.err != nil {
		return s.dataErr(in.err)
	}
	w := in.w
	in.w = nil
	// SPEC R22: the scan comes after the whole message and before it is
	// committed, so nothing of a refused message is queued.
	if key, e := in.scanVerdict(w); key != "" {
		w.Abort()
		return key, e
	}
	start := time.Now()
	if err := w.Commit(); err != nil {
		s.c.log.Error("spool commit failed", "queue_id", in.env.ID, "err", err)
		return ReplySpoolFailed, s.c.set.Replies.Err(ReplySpoolFailed, s.vars())
	}
	s.s.observer().Queued(in.env.Size, time.Since(start))
	s.s.activity().Queued(in.env.Account, len(in.env.To), s.s.now())
	v := s.vars()
	v.QueueID = in.env.ID
	ok := s.c.set.Replies.Err(ReplyQueued, v)
	s.c.record("data", fmt.Sprintf("%d bytes", in.env.Size), replyLine(ok))
	s.c.record("queued", in.env.ID, "")
	s.c.log.Info("message queued", "queue_id", in.env.ID, "from", in.tx.from, "rcpts", len(in.tx.rcpts), "size", in.env.Size)
	return ReplyQueued, ok
}

// abort drops the message, for RSET or a connection that ends mid-way.
func (in *intake) abort() {
	if in.w != nil {
		in.w.Abort()
		in.w = nil
	}
	in.hdr = nil
	if in.err == nil {
		in.err = errors.New("aborted")
	}
	in.tx.lim.Abandon()
}
