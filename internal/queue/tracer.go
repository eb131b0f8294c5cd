package queue

import "time"

// Tracer hears what becomes of every recipient of every message, for the
// delivery history support searches (SPEC R13a). Trace runs on the delivery
// worker or in a request of support's, so it must only hand the event over
// and return; what it is given is its to keep.
type Tracer interface {
	Trace(ev TraceEvent)
}

// The kinds of TraceEvent.
const (
	// TraceDelivered: an attempt delivered to the recipient.
	TraceDelivered = "delivered"
	// TraceDeferred: an attempt failed temporarily; Next is the retry.
	TraceDeferred = "deferred"
	// TraceFailed: an attempt failed permanently, or the message expired
	// (Detail says so).
	TraceFailed = "failed"
	// TraceBounced: the recipient's failure was reported to the sender;
	// Detail is the report's queue id, or why none was made.
	TraceBounced = "bounced"
	// TraceHeld: the message was held with its account (SPEC R20); Detail
	// is the hold's reason.
	TraceHeld = "held"
	// TraceReleased: the hold ended and the message is due again.
	TraceReleased = "released"
	// TracePurged: the held message was deleted without a report.
	TracePurged = "purged"
	// TraceDeleted: the message was deleted from the queue; Detail says
	// by whom, when the caller knows.
	TraceDeleted = "deleted"
)

// TraceEvent is one step in the life of a message or one of its recipients.
type TraceEvent struct {
	// QueueID is the message.
	QueueID string
	// Rcpt is the recipient, "" for the whole message.
	Rcpt string
	// Time is when it happened.
	Time time.Time
	// Kind is one of the Trace… constants.
	Kind string
	// Host is the server that replied ("mx.example.org [192.0.2.1]"), or "".
	Host string
	// TLS says how the session with Host was protected (delivery.Result).
	TLS string
	// Reply is the remote's reply or the local reason of an attempt.
	Reply string
	// Next is when a deferred recipient is tried again.
	Next time.Time
	// Detail is what else the kind calls for (see the constants).
	Detail string
}

// noTracer is the Tracer of a queue without one.
type noTracer struct{}

func (noTracer) Trace(TraceEvent) {}

// tracer returns the configured Tracer, or one that does nothing.
func (q *Queue) tracer() Tracer {
	if q.cfg.Tracer != nil {
		return q.cfg.Tracer
	}
	return noTracer{}
}
