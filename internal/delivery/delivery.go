// Package delivery sends a queued message to the recipients' mail servers
// (SPEC R17): MX lookup with A/AAAA fallback (RFC 5321 §5.1), opportunistic or
// verified STARTTLS, or everything through one smarthost. Each recipient's
// result says whether the failure is permanent or temporary, which is all the
// queue needs to decide between a retry and a bounce.
package delivery

import (
	"context"
	"io"
)

// Status is the outcome for one recipient.
type Status int

const (
	// Delivered: the remote server accepted the message for the recipient.
	Delivered Status = iota
	// Temporary: try again later (4xx, connection trouble, DNS SERVFAIL…).
	Temporary
	// Permanent: do not retry (5xx, null MX, NXDOMAIN…); the sender gets a DSN.
	Permanent
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Temporary:
		return "deferred"
	case Permanent:
		return "failed"
	}
	return "unknown"
}

// Result is the outcome of one delivery attempt for one recipient.
type Result struct {
	// Rcpt is the recipient address as given.
	Rcpt string
	// Status says delivered, temporary or permanent failure.
	Status Status
	// Reply is the remote server's reply ("550 5.1.1 no such user") or a
	// local description of what failed ("no MX or address records").
	Reply string
	// Host is the server that gave the reply, when one did.
	Host string
	// Relayed says the recipient asked to hear of its delivery (RFC 3461
	// NOTIFY=SUCCESS) but the server that took it does not offer DSN, so
	// no such notice will come from further on: the report says
	// "relayed" (RFC 3461 §6.2.6).
	Relayed bool
	// Code is the RFC 3463 status code of a failure found locally, with no
	// remote reply to carry one: "5.1.10" for a null MX (RFC 7505 §4.2),
	// "5.1.2" for a domain that does not exist. "" otherwise.
	Code string
	// TLS says how the session with Host was protected, for the delivery
	// history (SPEC R13a): "TLS 1.3, certificate verified", "TLS 1.2,
	// certificate not verified: …", "none"; "" when no session was set up.
	TLS string
}

// Message is one message to send to recipients of one destination domain.
type Message struct {
	// From is the envelope sender; "" is the null sender.
	From string
	// Rcpts are the recipients, all of Domain.
	Rcpts []string
	// Domain is the recipients' domain (normalized).
	Domain string
	// Data, when not nil, is the full message content (DKIM-Signature
	// first, if any), held in memory by the caller; Open is then not used.
	Data []byte
	// Open returns the full message content (DKIM-Signature first, if any)
	// when Data is nil; it may be called several times per host tried.
	Open func() (io.ReadCloser, error)
	// Size is the content length, for the SIZE parameter.
	Size int64
	// Ret and EnvID are the RFC 3461 RET and ENVID (decoded) the message
	// was submitted with, passed on to a server that offers DSN; "" for
	// none.
	Ret, EnvID string
	// RcptDSN are the RFC 3461 parameters of the recipients that had
	// any, by address.
	RcptDSN map[string]RcptDSN
	// RequireTLS: the message goes only over TLS validated by DANE or
	// MTA-STS, to a server offering REQUIRETLS (RFC 8689 §4.2.1).
	RequireTLS bool
	// TLSOptional: the message says "TLS-Required: No" (RFC 8689 §5):
	// the recipient domain's TLS policy is not applied.
	TLSOptional bool

	// scanned says eightBit and utf8Header hold the content's scan, done
	// once per Message; a Message is used by one Deliver call at a time.
	scanned bool
	// eightBit: the content has a byte outside US-ASCII.
	eightBit bool
	// utf8Header: such a byte is in the header section.
	utf8Header bool
}

// RcptDSN are the RFC 3461 parameters of one recipient.
type RcptDSN struct {
	// Notify is NEVER, or any of SUCCESS, FAILURE and DELAY; empty for
	// none given.
	Notify []string
	// ORcpt is "addr-type;address", decoded; "" for none given.
	ORcpt string
}

// Sender delivers messages. Deliver returns one Result per recipient, in the
// order of m.Rcpts, and never an empty slice.
type Sender interface {
	Deliver(ctx context.Context, m *Message) []Result
}

// IdleCloser is a Sender that keeps connections open between messages
// (MX and Smarthost). CloseIdle ends those that wait for a message, with
// QUIT, and keeps none from then on; a Sender's owner calls it when it
// stops delivering.
type IdleCloser interface {
	CloseIdle()
}
