package queue

import (
	"encoding/json"
	"fmt"
	"time"

	"submitd/internal/address"
	"submitd/internal/delivery"
	"submitd/internal/spool"
)

// Recipient states. A recipient starts pending, becomes deferred after a
// temporary failure, and ends delivered or failed.
const (
	Pending   = "pending"
	Delivered = "delivered"
	Deferred  = "deferred"
	Failed    = "failed"
)

// maxHistory is how many attempts a recipient's history keeps (the most
// recent ones); Attempts still counts them all. With the default backoff a
// recipient is tried about 125 times in 5 days, and the state file is
// rewritten after every attempt, so it must not grow without bound.
const maxHistory = 32

// State is a message's delivery state, kept as JSON in the spool's state file
// beside the message and recorded after every attempt, so that a crash after
// one recipient was delivered retries only the others (SPEC R15, R18).
//
// A record that settles an outcome (a recipient delivered or failed, a report
// made, a warning sent) is durable before the queue goes on, since losing it
// in a power cut would deliver to a recipient twice or report twice. A record
// that only notes temporary failures and retry times is left to the kernel:
// a process crash cannot lose it, and a power cut that does only makes those
// recipients be tried again sooner, which is a retry, never a loss.
type State struct {
	// Signed says the DKIM signature has been computed; DKIM holds it ("" when
	// no key applies). It is computed once, before the first attempt, and
	// reused on every retry so each copy carries the same signature (SPEC R17).
	Signed bool `json:"signed,omitempty"`
	// DKIM is the "DKIM-Signature: …\r\n" header field to prepend, or "".
	DKIM string `json:"dkim,omitempty"`
	// Warned says the delay warning has been sent.
	Warned bool `json:"warned,omitempty"`
	// Rcpts are the recipients in envelope order.
	Rcpts []*Rcpt `json:"rcpts"`
	// Held is set while the message is held with its account (SPEC R20):
	// it is neither tried nor reported until a release or a purge.
	Held *Hold `json:"held,omitempty"`

	// saved is outcomes() as last read or written, to tell a write that
	// settles an outcome from one that does not.
	saved string
}

// outcomes summarizes what a lost record could make the queue do twice: the
// recipients delivered or failed, the failures reported, the warning sent.
func (st *State) outcomes() string {
	b := make([]byte, 0, len(st.Rcpts)+2)
	if st.Warned {
		b = append(b, 'w')
	}
	if st.Held != nil {
		// A hold lost in a power cut would let the message go out.
		b = append(b, 'h')
	}
	for _, r := range st.Rcpts {
		c := byte('-')
		switch {
		case r.Status == Delivered:
			c = 'd'
		case r.Status == Failed && r.Bounced:
			c = 'B'
		case r.Status == Failed:
			c = 'f'
		}
		b = append(b, c)
	}
	return string(b)
}

// Hold says why and since when a message is held.
type Hold struct {
	// Account is the held account that submitted the message.
	Account string `json:"account"`
	// Reason is the hold's reason, the signal that tripped.
	Reason string `json:"reason"`
	// Since is when the message was held.
	Since time.Time `json:"since"`
}

// Rcpt is one recipient's state.
type Rcpt struct {
	// Addr is the recipient address as given in RCPT TO.
	Addr string `json:"addr"`
	// Domain is the normalized destination domain, "" if Addr does not parse.
	Domain string `json:"domain"`
	// Status is Pending, Delivered, Deferred or Failed.
	Status string `json:"status"`
	// Attempts counts delivery attempts.
	Attempts int `json:"attempts,omitempty"`
	// Next is when the recipient is due again; zero means now.
	Next time.Time `json:"next,omitzero"`
	// Reply is the last reply (or local reason) and Host the server that gave it.
	Reply string `json:"reply,omitempty"`
	// Host is the server that gave Reply, when one did.
	Host string `json:"host,omitempty"`
	// Code is the RFC 3463 code of a locally found failure (null MX,
	// no such domain), used in DSNs when Reply carries none.
	Code string `json:"code,omitempty"`
	// Reason is why the queue itself gave up on the recipient ("expired after
	// 5d", "deleted by the administrator"), "" when a reply decided it.
	Reason string `json:"reason,omitempty"`
	// Expired says the recipient failed because the message reached max_age.
	Expired bool `json:"expired,omitempty"`
	// Bounced says a DSN naming this recipient's failure has been made.
	Bounced bool `json:"bounced,omitempty"`
	// Relayed says the server that took the message does not offer DSN,
	// so no delivery notice comes from further on (RFC 3461 §6.2.6).
	Relayed bool `json:"relayed,omitempty"`
	// Notified says the success notice the recipient asked for (RFC 3461
	// NOTIFY=SUCCESS) has been made.
	Notified bool `json:"notified,omitempty"`
	// History are the most recent attempts, oldest first.
	History []Attempt `json:"history,omitempty"`
}

// Attempt is one delivery attempt to one recipient.
type Attempt struct {
	// Time is when the attempt ended.
	Time time.Time `json:"time"`
	// Status is the outcome: Delivered, Deferred or Failed.
	Status string `json:"status"`
	// Host is the server that replied, if any.
	Host string `json:"host,omitempty"`
	// Reply is the reply or local reason.
	Reply string `json:"reply"`
}

// newState is the state of a message nothing has been attempted for.
func newState(env *spool.Envelope) *State {
	st := &State{Rcpts: make([]*Rcpt, len(env.To))}
	for i, to := range env.To {
		r := &Rcpt{Addr: to, Status: Pending}
		if a, err := address.Parse(to); err == nil {
			r.Domain = a.Domain
		}
		st.Rcpts[i] = r
	}
	st.saved = st.outcomes()
	return st
}

// decodeState parses a state file; nil data is a fresh state.
func decodeState(env *spool.Envelope, data []byte) (*State, error) {
	if data == nil {
		return newState(env), nil
	}
	st := &State{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("queue: state of %s: %w", env.ID, err)
	}
	if len(st.Rcpts) != len(env.To) {
		return nil, fmt.Errorf("queue: state of %s has %d recipients, envelope %d", env.ID, len(st.Rcpts), len(env.To))
	}
	for i, r := range st.Rcpts {
		if r == nil || r.Addr != env.To[i] {
			return nil, fmt.Errorf("queue: state of %s does not match recipient %d of the envelope", env.ID, i)
		}
		switch r.Status {
		case Pending, Delivered, Deferred, Failed:
		default:
			return nil, fmt.Errorf("queue: state of %s: recipient %s has unknown status %q", env.ID, r.Addr, r.Status)
		}
	}
	st.saved = st.outcomes()
	return st, nil
}

// ReadState returns message id's envelope and state from sp. A message with
// no state file yet has every recipient pending.
func ReadState(sp *spool.Spool, id string) (*spool.Envelope, *State, error) {
	env, err := sp.Envelope(id)
	if err != nil {
		return nil, nil, err
	}
	data, err := sp.ReadState(id)
	if err != nil {
		return nil, nil, fmt.Errorf("queue: state of %s: %w", id, err)
	}
	st, err := decodeState(env, data)
	if err != nil {
		return nil, nil, err
	}
	return env, st, nil
}

// write records st, durably when it settles an outcome (see State).
func (st *State) write(sp *spool.Spool, id string) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("queue: encode state of %s: %w", id, err)
	}
	now := st.outcomes()
	if now != st.saved {
		err = sp.WriteState(id, data)
	} else {
		err = sp.WriteStateNoSync(id, data)
	}
	if err != nil {
		return fmt.Errorf("queue: write state of %s: %w", id, err)
	}
	st.saved = now
	return nil
}

// open reports whether the recipient still needs delivering.
func (r *Rcpt) open() bool { return r.Status == Pending || r.Status == Deferred }

// record notes one attempt's outcome.
func (r *Rcpt) record(t time.Time, status, host, reply, code string) {
	r.Attempts++
	r.Status = status
	r.Host = host
	r.Reply = reply
	r.Code = code
	r.History = append(r.History, Attempt{Time: t, Status: status, Host: host, Reply: reply})
	if n := len(r.History); n > maxHistory {
		r.History = append(r.History[:0:0], r.History[n-maxHistory:]...)
	}
}

// Done reports whether every recipient is delivered or failed.
func (st *State) Done() bool {
	for _, r := range st.Rcpts {
		if r.open() {
			return false
		}
	}
	return true
}

// NextDue is the earliest time an open recipient is due, and false when none
// is open.
func (st *State) NextDue() (time.Time, bool) {
	var next time.Time
	found := false
	for _, r := range st.Rcpts {
		if !r.open() {
			continue
		}
		if !found || r.Next.Before(next) {
			next = r.Next
			found = true
		}
	}
	return next, found
}

// statusOf maps a delivery status to a recipient status.
func statusOf(s delivery.Status) string {
	switch s {
	case delivery.Delivered:
		return Delivered
	case delivery.Permanent:
		return Failed
	}
	return Deferred
}
