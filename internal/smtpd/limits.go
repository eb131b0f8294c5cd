package smtpd

import (
	"time"

	"submitd/internal/sending"
)

// Limiter applies the sending limits (SPEC R19): asked at MAIL FROM for the
// message and at RCPT TO for each recipient, before any data is accepted.
type Limiter interface {
	// Message starts a message from account of hosted domain domain; a
	// non-nil hit refuses it.
	Message(account, domain string) (LimitTx, *LimitHit)
}

// LimitTx is one message's count. What it took stays counted only when the
// message is accepted; a message refused at DATA, reset or cut off gives
// it back, so the client's retry is not counted twice.
type LimitTx interface {
	// Recipient counts one more distinct recipient; a non-nil hit refuses
	// it.
	Recipient(rcpt string) *LimitHit
	// Accepted keeps the counts: the message is queued.
	Accepted()
	// Abandon gives the counts back; after Accepted it does nothing.
	Abandon()
}

// LimitHit is a refusal by a sending limit.
type LimitHit struct {
	// Name is whose limit it is: the account, or its hosted domain.
	Name string
	// Text names the limit, as in "500 recipients per hour".
	Text string
	// Until is when the rolling window frees a slot.
	Until time.Time
}

// LimiterOf gives the SMTP side the sending limiter l.
func LimiterOf(l *sending.Limiter) Limiter { return limiterAdapter{l} }

// limiterAdapter turns the limiter's concrete types into the interfaces.
type limiterAdapter struct{ l *sending.Limiter }

func (a limiterAdapter) Message(account, domain string) (LimitTx, *LimitHit) {
	tx, hit := a.l.Begin(account, domain)
	if hit != nil {
		return nil, limitHit(hit)
	}
	return limitTx{tx}, nil
}

// limitTx is a sending.Tx as a LimitTx.
type limitTx struct{ t *sending.Tx }

func (t limitTx) Recipient(rcpt string) *LimitHit {
	if hit := t.t.Recipient(rcpt); hit != nil {
		return limitHit(hit)
	}
	return nil
}

func (t limitTx) Accepted() { t.t.Accepted() }
func (t limitTx) Abandon()  { t.t.Abandon() }

func limitHit(h *sending.Hit) *LimitHit {
	return &LimitHit{Name: h.Name, Text: h.Text(), Until: h.Until}
}

// noLimitTx is the count of a server without a Limiter.
type noLimitTx struct{}

func (noLimitTx) Recipient(string) *LimitHit { return nil }
func (noLimitTx) Accepted()                  {}
func (noLimitTx) Abandon()                   {}

// limitVars fills the sending_limit reply: the name, the limit and, in UTC
// as HH:MM, when a slot is free again (SPEC R19).
func (s *session) limitVars(h *LimitHit) Vars {
	v := s.vars()
	v.Address = h.Name
	v.Detail = h.Text
	v.Until = h.Until.UTC().Format("15:04")
	return v
}
