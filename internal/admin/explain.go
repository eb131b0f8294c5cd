package admin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"submitd/internal/address"
	"submitd/internal/directory"
	"submitd/internal/guard"
	"submitd/internal/loginwatch"
	"submitd/internal/sessionlog"
)

// Explanation is a session told for support: how it ended, what the
// customer's mail client showed, the cause in plain words, and the fixes
// that apply (SPEC R13).
type Explanation struct {
	// Outcome is the session's end in a few words, for lists.
	Outcome string `json:"outcome"`
	// CustomerSaw is the last error reply the client got, as mail clients
	// show it, or "" when it got none.
	CustomerSaw string `json:"customer_saw"`
	// Cause says why, in plain words, citing the SPEC rule.
	Cause string `json:"cause"`
	// Fixes name the actions that would help: "unblock", "enable",
	// "set_password" (see docs/api.md).
	Fixes []string `json:"fixes"`
	// Login is the last login tried in AUTH, or "".
	Login string `json:"login"`
}

// FailureLister lists an IP's failed AUTHs; sessionlog.SQLite is one.
type FailureLister interface {
	// AuthFailures returns the session ids of ip's failed AUTHs in
	// [since, until], one per failure, oldest first.
	AuthFailures(ctx context.Context, ip string, since, until time.Time) ([]string, error)
}

// GuardView is what Explain and the API read of the guard.
type GuardView interface {
	// Config is the guard's policy.
	Config() guard.Config
	// List returns the keys with failures or blocks.
	List() []guard.Entry
}

// Explainer tells sessions for support from the directory, the session log
// and the guard as they are now.
type Explainer struct {
	// Directory answers what became of a login or a sender's domain.
	Directory directory.Store
	// Failures counts an IP's failures around a session.
	Failures FailureLister
	// Guard tells the blocks in force and the limits.
	Guard GuardView
	// Logins tells whether a login is still under attack (SPEC R21); nil
	// leaves that out.
	Logins Logins
}

// replyAddress finds the address in a "550 5.1.0 <x@y> sender rejected".
var replyAddress = regexp.MustCompile(`<([^<>\s]*)>`)

// Explain tells one session (SPEC R13). It never fails: what it cannot
// look up it leaves out.
func (x *Explainer) Explain(ctx context.Context, r *sessionlog.Record) Explanation {
	var ex Explanation
	var last, attack *sessionlog.Event
	queued := r.QueueIDs()
	for i := range r.Events {
		e := &r.Events[i]
		if e.Kind == "auth" && e.Detail != "" {
			ex.Login = e.Detail
		}
		if isError(e.Reply) {
			ex.CustomerSaw = e.Reply
			last, attack = e, nil
			if i > 0 && r.Events[i-1].Kind == loginwatch.EventKind {
				attack = &r.Events[i-1]
			}
		}
	}
	switch {
	case last == nil && len(queued) > 0:
		ex.Outcome = fmt.Sprintf("accepted %d message(s)", len(queued))
		ex.Cause = "accepted " + plural(len(queued), "message") + ": queue id " + strings.Join(queued, ", ")
		return ex
	case last == nil && r.Account != "":
		ex.Outcome = "authenticated, nothing sent"
		ex.Cause = "logged in as " + r.Account + " and sent nothing"
		return ex
	case last == nil:
		ex.Outcome = "left without logging in"
		ex.Cause = "the client connected and left without logging in or sending"
		return ex
	}
	limit := limitReached(last.Reply)
	switch {
	case limit != "":
		// SPEC R19.
		ex.Outcome = "sending limit reached"
		ex.Cause, ex.Fixes = limit, []string{"raise_sending_limit"}
	case last.Kind == "refused":
		ex.Outcome = "refused: IP blocked"
		ex.Cause, ex.Fixes = x.refused(ctx, r, last), []string{"unblock"}
		if n, ok := strings.CutPrefix(last.Detail, "client blocked: "); ok {
			// The record of a refusal episode (trace.Refusals) counts them.
			ex.Cause += "; " + n
		}
	case last.Kind == "auth":
		ex.Outcome = "AUTH failed"
		if attack != nil {
			ex.Outcome = "AUTH refused: login under attack"
			ex.Cause, ex.Fixes = x.underAttack(ex.Login, attack), []string{"clear_attack"}
			break
		}
		ex.Cause, ex.Fixes = x.authFailed(ctx, r, last)
	case last.Kind == "mail" || last.Kind == "data":
		if outcome, cause, ok := explainSpam(r, last); ok {
			ex.Outcome, ex.Cause = outcome, cause
			break
		}
		if strings.Contains(last.Reply, "sender rejected") {
			ex.Outcome = "sender rejected"
			ex.Cause = x.senderRejected(ctx, r, last)
			break
		}
		if last.Kind == "mail" && strings.Contains(last.Reply, "authentication failed") {
			ex.Outcome = "MAIL without AUTH"
			ex.Cause = "MAIL FROM without a successful AUTH: the mail client is not set to log in with the mailbox address and password (R1)"
			break
		}
		ex.Outcome = last.Kind + " refused"
		ex.Cause = last.Kind + " refused: " + last.Reply
	default:
		ex.Outcome = last.Kind + " failed"
		ex.Cause = last.Kind + ": " + last.Reply
	}
	if len(queued) > 0 {
		ex.Cause += "; accepted before that: queue id " + strings.Join(queued, ", ")
	}
	return ex
}

// isError reports whether a reply line is a 4xx or 5xx.
func isError(reply string) bool {
	return len(reply) >= 3 && (reply[0] == '4' || reply[0] == '5') && reply[1] >= '0' && reply[1] <= '9'
}

// clock formats a time of day for a cause, in UTC.
func clock(t time.Time) string { return t.UTC().Format("15:04") + " UTC" }

// span says a duration in words: "an hour", "30 minutes", "2h30m0s".
func span(d time.Duration) string {
	switch {
	case d == time.Hour:
		return "an hour"
	case d%time.Hour == 0:
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d < time.Hour && d%time.Minute == 0:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.String()
}

// ordinal says 1st, 2nd, 3rd, 4th, 11th, 21st.
func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprintf("%d%s", n, suffix)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// window says the guard's window in words: "this hour", "in the last 30
// minutes".
func window(d time.Duration) string {
	if d == time.Hour {
		return "this hour"
	}
	return "in the last " + span(d)
}

// blockOf returns the guard entry that blocks ip now, if any.
func (x *Explainer) blockOf(ip netip.Addr) (guard.Entry, bool) {
	if x.Guard == nil || !ip.IsValid() {
		return guard.Entry{}, false
	}
	for _, e := range x.Guard.List() {
		if e.Blocked && e.Key.Contains(ip.Unmap()) {
			return e, true
		}
	}
	return guard.Entry{}, false
}

// refused tells a connection refused because its IP was blocked (SPEC R11).
func (x *Explainer) refused(ctx context.Context, r *sessionlog.Record, ev *sessionlog.Event) string {
	ip, _ := netip.ParseAddr(r.ClientIP)
	if b, ok := x.blockOf(ip); ok && !b.Since.After(ev.Time) {
		return fmt.Sprintf("refused: IP %s blocked at %s after %s (sessions %s), until %s",
			guard.FormatKey(b.Key), clock(b.Since), plural(max(b.Failures, len(b.SIDs)), "failure"), strings.Join(b.SIDs, ", "), clock(b.Until))
	}
	// The block has ended or was lifted since: tell it from the log.
	msg := fmt.Sprintf("refused: IP %s was blocked (the block has ended or was lifted since)", r.ClientIP)
	if x.Failures != nil && x.Guard != nil {
		sids, err := x.Failures.AuthFailures(ctx, r.ClientIP, ev.Time.Add(-x.Guard.Config().Window), ev.Time)
		if err == nil && len(sids) > 0 {
			msg += fmt.Sprintf(" after %s (sessions %s)", plural(len(sids), "failure"), strings.Join(slices.Compact(sids), ", "))
		}
	}
	return msg
}

// authFailed tells a failed AUTH (SPEC R2, R4, R11) from what the directory
// holds for the login now.
func (x *Explainer) authFailed(ctx context.Context, r *sessionlog.Record, ev *sessionlog.Event) (string, []string) {
	login := ev.Detail
	if strings.HasPrefix(ev.Reply, "4") {
		return "temporary failure: the password check could not be made in time, or the directory was unreachable (R16a); the client tries again", nil
	}
	if login == "" {
		return "AUTH failed before a login was given: " + ev.Reply, nil
	}
	a, err := address.Parse(login)
	if err != nil || !strings.Contains(login, "@") {
		return fmt.Sprintf("login %q is not a full email address; the login is the whole mailbox address (R2)", login), nil
	}
	if x.Directory != nil {
		acct, err := x.Directory.Account(ctx, login)
		switch {
		case errors.Is(err, directory.ErrNotFound):
			if _, derr := x.Directory.DomainOf(ctx, a.Domain); derr != nil {
				return fmt.Sprintf("login %s: the domain %s is not hosted here (R2)", a, a.Domain), nil
			}
			return fmt.Sprintf("login %s: no such account on %s (R2)", a, a.Domain), nil
		case err == nil && !acct.SMTPAccess:
			return fmt.Sprintf("SMTP access of %s is disabled, so any password is rejected (R4)", acct.Address), []string{"enable"}
		}
	}
	cause := "wrong password for " + a.String()
	if x.Failures == nil || x.Guard == nil {
		return cause, []string{"set_password"}
	}
	gc := x.Guard.Config()
	sids, err := x.Failures.AuthFailures(ctx, r.ClientIP, ev.Time.Add(-gc.Window), ev.Time)
	if err != nil || len(sids) == 0 {
		return cause, []string{"set_password"}
	}
	// This failure is the last one up to its time; failures of the session
	// itself are in the list once each.
	n := len(sids)
	cause += fmt.Sprintf(": %s failure from %s %s", ordinal(n), r.ClientIP, window(gc.Window))
	fixes := []string{"set_password"}
	if n >= gc.MaxFailures {
		cause += fmt.Sprintf(", which blocked this IP for %s", span(gc.BlockFor))
		fixes = append(fixes, "unblock")
	} else {
		cause += fmt.Sprintf("; at %d this IP is blocked for %s", gc.MaxFailures, span(gc.BlockFor))
	}
	return cause, fixes
}

// underAttack tells an AUTH refused unchecked because its login was under
// attack (SPEC R21): the reason recorded then, and whether the state holds
// now.
func (x *Explainer) underAttack(login string, ev *sessionlog.Event) string {
	cause := ev.Detail + "; the password was not checked (R21)"
	if a, err := address.Parse(login); err == nil && x.Logins != nil {
		if l, ok := x.Logins.Get(a.String()); ok && l.UnderAttack {
			return cause + fmt.Sprintf("; still under attack until %s: the customer can log in from a network where the login succeeded before, or support clears the state", clock(l.Until))
		}
		return cause + "; the attack state has ended since, so the customer can log in again"
	}
	return cause
}

// senderRejected tells why a sender was refused (SPEC R5–R9).
func (x *Explainer) senderRejected(ctx context.Context, r *sessionlog.Record, ev *sessionlog.Event) string {
	sender := ev.Detail
	where := "sender"
	if ev.Kind == "data" {
		where = "header sender"
	}
	if m := replyAddress.FindStringSubmatch(ev.Reply); m != nil {
		sender = m[1]
	}
	a, err := address.Parse(sender)
	if err != nil {
		return fmt.Sprintf("%s %q is not a valid address (R8)", where, sender)
	}
	prefix := fmt.Sprintf("%s %s: ", where, a)
	if r.Account == "" || x.Directory == nil {
		return prefix + "refused (R5)"
	}
	acct, err := x.Directory.Account(ctx, r.Account)
	if err != nil {
		return prefix + "refused; the account " + r.Account + " is gone"
	}
	own := append([]string{acct.Domain}, acct.Aliases...)
	for _, d := range own {
		if strings.HasSuffix(a.Domain, "."+d) {
			return prefix + fmt.Sprintf("a subdomain of %s, which is not allowed (R6)", d)
		}
	}
	if slices.Contains(acct.Identities, a.String()) {
		return prefix + "an extra identity of " + acct.Address + ", usable only from the webmail networks (R9)"
	}
	mine := acct.Domain
	if len(acct.Aliases) > 0 {
		mine += " or its aliases " + strings.Join(acct.Aliases, ", ")
	}
	if d, err := x.Directory.DomainOf(ctx, a.Domain); err == nil && d != acct.Domain {
		return prefix + fmt.Sprintf("%s is hosted here, but the login %s may send only from %s (R5, R6)", a.Domain, acct.Address, mine)
	}
	return prefix + fmt.Sprintf("%s is not %s; mail from it must go through that domain's own server (R5, R6)", a.Domain, mine)
}
