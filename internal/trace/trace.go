// Package trace keeps the delivery history support searches when a customer
// asks where a message went (SPEC R13a): for every accepted message, who
// sent it from which session, and for each recipient every delivery
// attempt (the server tried, its address, the TLS used, the remote's reply)
// and the outcome (delivered, deferred, bounced with the report made, held,
// released, purged, deleted by whom). It is kept beside the session records,
// in the same store and for as long (sessionlog.retention), and written in
// batches off the delivery path by a Recorder.
//
// It also gives the connections refused at the greeting ids that can be
// looked up (Refusals).
package trace

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"submitd/internal/address"
	"submitd/internal/message"
)

// ErrNotFound means no message has that queue id in the history.
var ErrNotFound = errors.New("no delivery history of this message (it is kept for sessionlog.retention)")

// Recipient states, as a search lists them: the last outcome of the
// recipient's attempts, or what was done to the whole message since.
const (
	// StateQueued: accepted, not tried yet (or released).
	StateQueued = "queued"
	// StateDelivered, StateDeferred and StateFailed are the outcome of the
	// last attempt (queue.TraceDelivered and so on).
	StateDelivered = "delivered"
	StateDeferred  = "deferred"
	StateFailed    = "failed"
	// StateBounced: failed and reported to the sender.
	StateBounced = "bounced"
	// StateHeld, StatePurged and StateDeleted: the message was held,
	// purged or deleted before the recipient was done.
	StateHeld    = "held"
	StatePurged  = "purged"
	StateDeleted = "deleted"
)

// Message is one accepted message.
type Message struct {
	// QueueID is the message's queue id.
	QueueID string `json:"queue_id"`
	// Received is when it was accepted.
	Received time.Time `json:"received"`
	// SessionID is the SMTP session that accepted it ("" for a report the
	// server made).
	SessionID string `json:"session_id"`
	// ClientIP is the submitting client's address.
	ClientIP string `json:"client_ip"`
	// Account is the login that submitted it.
	Account string `json:"account"`
	// From is the envelope sender; "" is <>.
	From string `json:"from"`
	// Subject is the Subject: field, decoded; "" when support may not see
	// it (see the admin server) or there is none.
	Subject string `json:"subject"`
	// MessageID is the Message-ID: field, with its angle brackets.
	MessageID string `json:"message_id"`
	// Size is the message's length in bytes.
	Size int64 `json:"size"`
	// Kind is "" for submitted mail and "dsn" for a report.
	Kind string `json:"kind,omitempty"`
	// Rcpts are the recipients and their states, in envelope order.
	Rcpts []Rcpt `json:"rcpts"`
	// Events are the steps, oldest first; Find leaves them out.
	Events []Event `json:"events,omitempty"`
}

// Rcpt is one recipient and what became of it.
type Rcpt struct {
	// Addr is the address, normalized as Find compares it.
	Addr string `json:"addr"`
	// State is one of the State… constants.
	State string `json:"state"`
	// Reply is the remote's last reply, or the local reason.
	Reply string `json:"reply"`
	// Host is the server that gave Reply.
	Host string `json:"host"`
	// Updated is when State last changed.
	Updated time.Time `json:"updated"`
	// Next is when a deferred recipient is tried again.
	Next time.Time `json:"next,omitzero"`
}

// Event is one step: an attempt for a recipient, or something done to the
// whole message (Rcpt ""). Its kinds are queue.TraceDelivered and the rest.
type Event struct {
	// QueueID is the message.
	QueueID string `json:"queue_id"`
	// Rcpt is the recipient, "" for the whole message.
	Rcpt string `json:"rcpt"`
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Kind says what happened.
	Kind string `json:"kind"`
	// Host is the server that replied, with its address.
	Host string `json:"host,omitempty"`
	// TLS says how the session with Host was protected.
	TLS string `json:"tls,omitempty"`
	// Reply is the remote's reply or the local reason.
	Reply string `json:"reply,omitempty"`
	// Next is when a deferred recipient is due again.
	Next time.Time `json:"next,omitzero"`
	// Detail is the report made, the hold's reason, who deleted.
	Detail string `json:"detail,omitempty"`
}

// Batch is what one save writes: messages first, then events, in order.
type Batch struct {
	// Messages are newly accepted messages, with their recipients.
	Messages []*Message
	// Events are steps of messages, in the order they happened.
	Events []Event
}

// Query selects messages for Find: every field set must match; at least
// one of the strings must be set.
type Query struct {
	// Rcpt matches a recipient address.
	Rcpt string
	// Sender matches the envelope sender or the account.
	Sender string
	// MessageID matches the Message-ID: field, brackets included.
	MessageID string
	// QueueID matches the queue id.
	QueueID string
	// SessionID matches the session that accepted the message.
	SessionID string
	// ClientIP matches the submitting client's address.
	ClientIP string
	// Since and Until bound when the message was accepted; zero: no bound.
	Since, Until time.Time
	// Limit is the most messages returned, newest first; 0 means 50.
	Limit int
}

// empty reports whether q names nothing to look for.
func (q Query) empty() bool {
	return q.Rcpt == "" && q.Sender == "" && q.MessageID == "" && q.QueueID == "" && q.SessionID == "" && q.ClientIP == ""
}

// errNoCriteria is Find's answer to an empty query.
var errNoCriteria = errors.New("trace: find: no recipient, sender, Message-ID, queue id, session id or IP given")

// DefaultLimit is Find's limit when the query sets none.
const DefaultLimit = 50

// Store keeps the history.
type Store interface {
	// Save writes a batch in one transaction.
	Save(ctx context.Context, b *Batch) error
	// Message returns one message with its recipients and events, or an
	// error wrapping ErrNotFound.
	Message(ctx context.Context, queueID string) (*Message, error)
	// Find returns the messages matching q, newest first, without events.
	Find(ctx context.Context, q Query) ([]*Message, error)
	// Prune deletes the messages accepted before t, with their events,
	// and reports how many.
	Prune(ctx context.Context, t time.Time) (int64, error)
}

// NormAddr is an address as the history stores and compares it: the
// normalized form when it parses (SPEC §1), else lowercased.
func NormAddr(s string) string {
	if a, err := address.Parse(s); err == nil {
		return a.String()
	}
	return strings.ToLower(s)
}

// finalStates are the states of a recipient whose message is gone from
// the queue, as an SQL list: no later event changes them. The end of an
// attempt that was under way when support deleted the message is saved
// after the delete, and is kept as an event only.
const finalStates = `('` + StateDeleted + `', '` + StatePurged + `')`

// stateOf is the state an event leaves a recipient in; "" leaves it be.
func stateOf(kind string) string {
	switch kind {
	case StateDelivered, StateDeferred, StateFailed, StateBounced, StateHeld, StatePurged, StateDeleted:
		return kind
	case "released":
		return StateQueued
	}
	return ""
}

// Bounds on what the history keeps of a message's text: the header section
// read for its Subject and Message-ID, and the length of each.
const (
	maxHeader  = 64 << 10
	maxSubject = 256
	maxMsgID   = 998 // RFC 5322 §2.1.1: the longest line
)

// HeaderFacts reads the Subject (decoded, RFC 2047) and Message-ID of the
// message in r, reading at most its first 64 KiB. Whatever cannot be read
// is left "", since the history is kept for every message, well-formed or
// not.
func HeaderFacts(r io.Reader) (subject, msgID string) {
	raw, err := message.ReadHeader(bufio.NewReader(io.LimitReader(r, maxHeader)), maxHeader)
	if err != nil && !errors.Is(err, message.ErrHeaderTooLarge) {
		return "", ""
	}
	h, err := message.Parse(raw)
	if err != nil {
		return "", ""
	}
	if v := h.Values("Subject"); len(v) > 0 {
		dec := &mime.WordDecoder{CharsetReader: func(string, io.Reader) (io.Reader, error) {
			return nil, errors.New("unknown charset")
		}}
		s, err := dec.DecodeHeader(v[0])
		if err != nil {
			s = v[0]
		}
		subject = clip(s, maxSubject)
	}
	if v := h.Values("Message-ID"); len(v) > 0 {
		msgID = clip(strings.TrimSpace(v[0]), maxMsgID)
	}
	return subject, msgID
}

// clip makes s valid UTF-8 without control characters, and at most n
// bytes, cut at a character boundary.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// headerOf is the header section at the start of content, for HeaderFacts.
func headerOf(content []byte) io.Reader {
	if len(content) > maxHeader {
		content = content[:maxHeader]
	}
	return bytes.NewReader(content)
}
