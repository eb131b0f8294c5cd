package scan

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// rspamd's actions, as its reply names them. Any other action a custom
// rspamd configuration defines is refused as a bad reply.
const (
	ActionReject         = "reject"
	ActionSoftReject     = "soft reject"
	ActionRewriteSubject = "rewrite subject"
	ActionAddHeader      = "add header"
	ActionGreylist       = "greylist"
	ActionNoAction       = "no action"
	// ActionDiscard and ActionQuarantine are rspamd's actions for mail
	// that must not reach its recipients; for submitted mail they are
	// refused like reject.
	ActionDiscard    = "discard"
	ActionQuarantine = "quarantine"
)

// Actions are the actions ParseReply accepts, for metrics that show them
// all from the start.
var Actions = []string{ActionReject, ActionSoftReject, ActionRewriteSubject, ActionAddHeader,
	ActionGreylist, ActionNoAction, ActionDiscard, ActionQuarantine}

// MaxSymbols is how many symbols a Verdict keeps: the top scores, which are
// what support needs to see why a message was refused.
const MaxSymbols = 10

// maxText bounds the smtp_message kept of a reply.
const maxText = 200

// Symbol is one rule that matched, with its score.
type Symbol struct {
	// Name is rspamd's symbol name, e.g. GTUBE or MISSING_MID.
	Name string `json:"name"`
	// Score is what it added to the message's score.
	Score float64 `json:"score"`
}

// Verdict is rspamd's answer for one message.
type Verdict struct {
	// Action is one of the Action constants.
	Action string `json:"action"`
	// Score is the message's score; Required the score of the reject
	// action.
	Score    float64 `json:"score"`
	Required float64 `json:"required_score"`
	// Symbols are the MaxSymbols highest-scoring symbols, highest first.
	Symbols []Symbol `json:"symbols,omitempty"`
	// SMTPMessage is rspamd's messages.smtp_message, "" when it gave none.
	SMTPMessage string `json:"smtp_message,omitempty"`
	// TimeReal is how long rspamd says it took.
	TimeReal time.Duration `json:"time_real"`
}

// wireReply is the part of rspamd's /checkv2 reply that submitd reads. The
// rest (milter, dkim-signature, urls, …) is ignored: submitd adds no header
// rspamd suggests and signs mail itself.
type wireReply struct {
	Action   *string   `json:"action"`
	Score    *float64  `json:"score"`
	Required *float64  `json:"required_score"`
	TimeReal *float64  `json:"time_real"`
	Error    *string   `json:"error"`
	Messages *messages `json:"messages"`
	Symbols  map[string]struct {
		Score float64 `json:"score"`
	} `json:"symbols"`
}

// messages is the reply's messages object; rspamd puts other keys beside
// smtp_message, and smtp_message itself may be a string or an object of
// strings by recipient in some configurations.
type messages struct {
	SMTPMessage json.RawMessage `json:"smtp_message"`
}

// ErrBadReply is wrapped by every error of ParseReply.
var ErrBadReply = errors.New("bad rspamd reply")

// ParseReply reads rspamd's JSON reply to /checkv2. It needs an action it
// knows and a finite score and required score; everything else is
// optional.
func ParseReply(body []byte) (*Verdict, error) {
	var w wireReply
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	if w.Error != nil {
		return nil, fmt.Errorf("%w: rspamd error: %s", ErrBadReply, clean(*w.Error))
	}
	switch {
	case w.Action == nil:
		return nil, fmt.Errorf("%w: no action", ErrBadReply)
	case !slices.Contains(Actions, *w.Action):
		return nil, fmt.Errorf("%w: unknown action %q", ErrBadReply, clean(*w.Action))
	case w.Score == nil || w.Required == nil:
		return nil, fmt.Errorf("%w: no score or required_score", ErrBadReply)
	case !finite(*w.Score) || !finite(*w.Required):
		return nil, fmt.Errorf("%w: score is not a number", ErrBadReply)
	}
	v := &Verdict{Action: *w.Action, Score: *w.Score, Required: *w.Required}
	if w.TimeReal != nil && finite(*w.TimeReal) && *w.TimeReal >= 0 && *w.TimeReal < 1e6 {
		v.TimeReal = time.Duration(*w.TimeReal * float64(time.Second))
	}
	if w.Messages != nil {
		var s string
		if json.Unmarshal(w.Messages.SMTPMessage, &s) == nil {
			v.SMTPMessage = clean(s)
		}
	}
	for name, sym := range w.Symbols {
		if !finite(sym.Score) {
			continue
		}
		v.Symbols = append(v.Symbols, Symbol{Name: clean(name), Score: sym.Score})
	}
	slices.SortFunc(v.Symbols, func(a, b Symbol) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(v.Symbols) > MaxSymbols {
		v.Symbols = v.Symbols[:MaxSymbols:MaxSymbols]
	}
	return v, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// clean keeps text from rspamd to one line of printable ASCII of at most
// maxText bytes, since it goes into SMTP replies and logs.
func clean(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxText; i++ {
		c := s[i]
		if c < ' ' || c > '~' {
			c = ' '
		}
		b.WriteByte(c)
	}
	return strings.TrimSpace(b.String())
}

// genericMessages are smtp_message texts that tell the customer nothing the
// reply does not already say.
var genericMessages = []string{"spam message rejected", "spam message rejected.", "message rejected", "spam", "rejected"}

// Explanation returns rspamd's smtp_message when it tells the customer
// something, e.g. "Gtube pattern" or a rate limit's text, and "" when it
// is missing or only says "spam message rejected" again.
func (v *Verdict) Explanation() string {
	m := strings.TrimSpace(v.SMTPMessage)
	if m == "" || slices.Contains(genericMessages, strings.ToLower(m)) {
		return ""
	}
	return m
}

// Refused reports whether the action refuses the message for good.
func (v *Verdict) Refused() bool {
	switch v.Action {
	case ActionReject, ActionDiscard, ActionQuarantine:
		return true
	}
	return false
}

// Flagged reports whether rspamd would have marked the message as spam
// for its recipients (add header, rewrite subject). submitd sends it
// unchanged, but it counts towards the account's spam signal.
func (v *Verdict) Flagged() bool {
	return v.Action == ActionAddHeader || v.Action == ActionRewriteSubject
}

// String is the verdict in one line, for the session record and logs:
// "reject score 15.00/15.00: GTUBE 0.00, MISSING_MID 2.50".
func (v *Verdict) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s score %.2f/%.2f", v.Action, v.Score, v.Required)
	for i, s := range v.Symbols {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.2f", s.Name, s.Score)
	}
	if m := v.Explanation(); m != "" {
		fmt.Fprintf(&b, " (%s)", m)
	}
	return b.String()
}
