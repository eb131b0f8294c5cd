package smtpd

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// Reply keys. Each names one row of the reply table below; operators override
// texts by these keys under [replies] in the config file.
const (
	ReplyAuthFailed     = "auth_failed"
	ReplyAuthRejected   = "auth_rejected"
	ReplyAuthDisabled   = "auth_disabled"
	ReplyMailNoAuth     = "mail_no_auth"
	ReplySenderRejected = "sender_rejected"
	ReplyHeaderRejected = "header_sender_rejected"
	ReplyBlocked        = "blocked"
	ReplyQueued         = "queued"
	ReplyNoFrom         = "no_from"
	ReplyManyFrom       = "many_from"
	ReplyBadFrom        = "bad_from"
	ReplyManySender     = "many_sender"
	ReplyBadSender      = "bad_sender"
	ReplyBadHeader      = "bad_header"
	ReplyHeaderTooLarge = "header_too_large"
	ReplyBareLF         = "bare_line_ending"
	ReplyLineTooLong    = "line_too_long"
	ReplySpoolFailed    = "spool_failed"
	ReplyTempFailure    = "temporary_failure"
	ReplyTooManyConns   = "too_many_connections"
	ReplyServerBusy     = "server_busy"
	ReplyBadRecipient   = "bad_recipient"
	ReplyTooBig         = "too_big"
	ReplyAuthzid        = "authzid_mismatch"
	ReplyAuthMalformed  = "auth_malformed"
	ReplyAuthNeedsTLS   = "auth_needs_tls"
	ReplyAuthBusy       = "auth_busy"

	// Rows for the rest of the protocol: every reply submitd sends comes
	// from this table, each error with the session id (SPEC R12).
	ReplyGreeting         = "greeting"
	ReplyEHLO             = "ehlo"
	ReplyOK               = "ok"
	ReplyMailOK           = "mail_ok"
	ReplyRcptOK           = "rcpt_ok"
	ReplyDataGo           = "data_go"
	ReplyChunkOK          = "chunk_ok"
	ReplyStartTLS         = "starttls_go"
	ReplyAuthOK           = "auth_ok"
	ReplyQuit             = "quit"
	ReplyVRFY             = "vrfy"
	ReplyHelp             = "help"
	ReplyUnknownCommand   = "unknown_command"
	ReplyNotImplemented   = "not_implemented"
	ReplySyntax           = "syntax_error"
	ReplyCommandTooLong   = "command_too_long"
	ReplyBadSequence      = "bad_sequence"
	ReplyParamUnsupported = "parameter_unsupported"
	ReplyTooManyRcpts     = "too_many_recipients"
	ReplyTooManyErrors    = "too_many_errors"
	ReplyIdleTimeout      = "idle_timeout"
	ReplySessionTimeout   = "session_timeout"
	ReplyShuttingDown     = "shutting_down"
	ReplyTLSUnavailable   = "tls_unavailable"
	ReplyAuthMechanism    = "auth_mechanism"
	ReplyAuthCancelled    = "auth_cancelled"
	ReplyNUL              = "nul_byte"
	ReplySendingLimit     = "sending_limit"
	ReplySpam             = "spam_refused"
	ReplySpamDeferred     = "spam_deferred"
	ReplyScanUnavailable  = "scan_unavailable"
)

// reply is one row: the SMTP code, the enhanced status code and the text.
// Texts may use {sid}, {address}, {ip}, {queue_id}, {limit}, {detail},
// {until} and {host}.
type reply struct {
	code int
	enh  smtp.EnhancedCode
	text string
}

// defaultReplies is the reply table. The first seven rows are the contract
// with customers, byte for byte (SPEC R4, R8, R11, R12); the rest are
// submitd's own and say plainly what was wrong.
var defaultReplies = map[string]reply{
	// SPEC R4.
	ReplyAuthFailed:   {535, smtp.EnhancedCode{5, 1, 0}, "{sid} authentication failed"},
	ReplyAuthRejected: {535, smtp.EnhancedCode{5, 1, 0}, "{sid} authentication rejected"},
	ReplyAuthDisabled: {535, smtp.EnhancedCode{5, 1, 0}, "{sid} authentication rejected access disabled"},
	ReplyMailNoAuth:   {550, smtp.EnhancedCode{5, 1, 0}, "{sid} authentication failed"},
	// SPEC R8: at MAIL FROM and, for From:/Sender:, at the end of DATA.
	ReplySenderRejected: {550, smtp.EnhancedCode{5, 1, 0}, "<{address}> sender rejected"},
	ReplyHeaderRejected: {550, smtp.EnhancedCode{5, 1, 0}, "<{address}> sender rejected"},
	// SPEC R11.
	ReplyBlocked: {554, smtp.EnhancedCode{5, 1, 0}, "{sid} Connection refused from {ip}. Too many authorization failures from this IP, try again later."},
	// SPEC R12.
	ReplyQueued: {250, smtp.EnhancedCode{2, 0, 0}, "{sid} queued as {queue_id}"},

	// SPEC R7: the From: header is the identity a mail client shows.
	ReplyNoFrom:     {550, smtp.EnhancedCode{5, 6, 0}, "{sid} message has no From: header"},
	ReplyManyFrom:   {550, smtp.EnhancedCode{5, 6, 0}, "{sid} message has more than one From: header"},
	ReplyBadFrom:    {550, smtp.EnhancedCode{5, 6, 0}, "{sid} From: header cannot be parsed: {detail}"},
	ReplyManySender: {550, smtp.EnhancedCode{5, 6, 0}, "{sid} message has more than one Sender: header"},
	ReplyBadSender:  {550, smtp.EnhancedCode{5, 6, 0}, "{sid} Sender: header cannot be parsed: {detail}"},
	ReplyBadHeader:  {550, smtp.EnhancedCode{5, 6, 0}, "{sid} malformed message header: {detail}"},
	// SPEC R14, R16.
	ReplyHeaderTooLarge: {552, smtp.EnhancedCode{5, 3, 4}, "{sid} message header section is larger than {limit} bytes"},
	ReplyBareLF:         {554, smtp.EnhancedCode{5, 6, 0}, "{sid} message contains a bare CR or LF; lines must end with CRLF"},
	ReplyLineTooLong:    {554, smtp.EnhancedCode{5, 6, 0}, "{sid} message has a line longer than {limit} bytes"},
	ReplyTooBig:         {552, smtp.EnhancedCode{5, 3, 4}, "{sid} message is larger than the limit of {limit} bytes"},
	ReplyBadRecipient:   {501, smtp.EnhancedCode{5, 1, 3}, "{sid} <{address}> is not a valid recipient address"},
	ReplyTooManyConns:   {421, smtp.EnhancedCode{4, 7, 0}, "{sid} Too many connections from {ip}, try again later."},
	ReplyServerBusy:     {421, smtp.EnhancedCode{4, 3, 2}, "{sid} Server busy, try again later."},
	// SPEC R15: the message is not on disk, so no 250.
	ReplySpoolFailed:   {451, smtp.EnhancedCode{4, 3, 0}, "{sid} message not queued because of a local error, try again later"},
	ReplyTempFailure:   {451, smtp.EnhancedCode{4, 3, 0}, "{sid} temporary local error, try again later"},
	ReplyAuthzid:       {535, smtp.EnhancedCode{5, 7, 8}, "{sid} authorization identity must be empty or equal the login"},
	ReplyAuthMalformed: {501, smtp.EnhancedCode{5, 5, 2}, "{sid} malformed AUTH response"},
	ReplyAuthNeedsTLS:  {538, smtp.EnhancedCode{5, 7, 11}, "{sid} AUTH requires TLS; use STARTTLS first"},
	// RFC 6152 §3 and RFC 5322 §3.5: a message never holds NUL, and a
	// receiver that drops NUL would see an end of data where there is none.
	ReplyNUL: {554, smtp.EnhancedCode{5, 6, 0}, "{sid} message contains a NUL byte, which mail may not hold"},

	// The protocol's own replies. The greeting and the EHLO lines precede
	// ENHANCEDSTATUSCODES, so they carry no enhanced code (RFC 2034 §3).
	ReplyGreeting: {220, noEnh, "{host} ESMTP submitd ready, session {sid}"},
	ReplyEHLO:     {250, noEnh, "{host} at your service, session {sid}"},
	ReplyOK:       {250, smtp.EnhancedCode{2, 0, 0}, "OK"},
	ReplyMailOK:   {250, smtp.EnhancedCode{2, 1, 0}, "<{address}> sender OK"},
	ReplyRcptOK:   {250, smtp.EnhancedCode{2, 1, 5}, "<{address}> recipient OK"},
	ReplyDataGo:   {354, noEnh, "send the message, end with <CR><LF>.<CR><LF>"},
	ReplyChunkOK:  {250, smtp.EnhancedCode{2, 0, 0}, "{limit} octets received"},
	ReplyStartTLS: {220, smtp.EnhancedCode{2, 0, 0}, "ready to start TLS"},
	ReplyAuthOK:   {235, smtp.EnhancedCode{2, 7, 0}, "authentication successful"},
	ReplyQuit:     {221, smtp.EnhancedCode{2, 0, 0}, "{sid} closing connection"},
	ReplyVRFY:     {252, smtp.EnhancedCode{2, 5, 0}, "{sid} addresses are not verified here; send the message to try it"},
	ReplyHelp:     {214, smtp.EnhancedCode{2, 0, 0}, "submitd: see RFC 5321 and RFC 6409; log in with your full address"},
	// RFC 5321 §4.2.4, RFC 3463 §3.6.
	ReplyUnknownCommand:   {500, smtp.EnhancedCode{5, 5, 1}, "{sid} command not recognized"},
	ReplyNotImplemented:   {502, smtp.EnhancedCode{5, 5, 1}, "{sid} this server does not offer that command"},
	ReplySyntax:           {501, smtp.EnhancedCode{5, 5, 4}, "{sid} syntax error: {detail}"},
	ReplyCommandTooLong:   {500, smtp.EnhancedCode{5, 5, 2}, "{sid} command line is longer than {limit} bytes"},
	ReplyBadSequence:      {503, smtp.EnhancedCode{5, 5, 1}, "{sid} bad sequence of commands: {detail}"},
	ReplyParamUnsupported: {555, smtp.EnhancedCode{5, 5, 4}, "{sid} parameter not supported: {detail}"},
	// RFC 5321 §4.5.3.1.10: too many recipients is temporary, so the client
	// sends the rest in another transaction.
	ReplyTooManyRcpts:   {452, smtp.EnhancedCode{4, 5, 3}, "{sid} too many recipients; at most {limit} per message"},
	ReplyTooManyErrors:  {421, smtp.EnhancedCode{4, 7, 0}, "{sid} too many errors, closing connection"},
	ReplyIdleTimeout:    {421, smtp.EnhancedCode{4, 4, 2}, "{sid} idle for too long, closing connection"},
	ReplySessionTimeout: {421, smtp.EnhancedCode{4, 4, 2}, "{sid} session time limit reached, closing connection"},
	ReplyShuttingDown:   {421, smtp.EnhancedCode{4, 3, 2}, "{sid} server shutting down, try again later"},
	ReplyTLSUnavailable: {454, smtp.EnhancedCode{4, 7, 0}, "{sid} TLS not available"},
	// SPEC R1: only PLAIN and LOGIN; a wrong mechanism counts as a failed
	// AUTH (SPEC R11), as does a cancelled exchange.
	ReplyAuthMechanism: {504, smtp.EnhancedCode{5, 5, 4}, "{sid} unsupported authentication mechanism; use PLAIN or LOGIN"},
	ReplyAuthCancelled: {501, smtp.EnhancedCode{5, 0, 0}, "{sid} authentication cancelled"},
	// SPEC R16a: the password could not be checked (the hashing queue is
	// full or too slow, or the directory is unreachable), so a temporary
	// reply (RFC 4954 §6: 454 4.7.0 "temporary authentication failure").
	ReplyAuthBusy: {454, smtp.EnhancedCode{4, 7, 0}, "{sid} authentication temporarily unavailable, try again later"},
	// SPEC R19: temporary, so a legitimate burst is delayed, not lost;
	// {detail} names the limit, {until} when a slot is free (UTC).
	ReplySendingLimit: {451, smtp.EnhancedCode{4, 7, 1}, "{sid} sending limit reached for {address}: {detail}; try again after {until}"},
	// SPEC R22: rspamd's reject, and its soft reject (its rate limits);
	// rspamd's own text follows after a colon where it tells the customer
	// something. A scanner that cannot answer under on_error = "tempfail"
	// is a local error of this server's.
	ReplySpam:            {550, smtp.EnhancedCode{5, 7, 1}, "{sid} message refused as spam"},
	ReplySpamDeferred:    {451, smtp.EnhancedCode{4, 7, 1}, "{sid} message deferred by the spam filter, try again later"},
	ReplyScanUnavailable: {451, smtp.EnhancedCode{4, 3, 0}, "{sid} message could not be checked for spam, try again later"},
}

// noEnh marks a reply without an enhanced status code.
var noEnh = smtp.NoEnhancedCode

// Replies is the reply table in effect: the defaults with the operator's
// overrides.
type Replies struct {
	rows    map[string]reply
	uniform bool
}

// NewReplies applies overrides (key to text) to the default table. With
// uniform, every failed AUTH gets the auth_failed text so that replies do not
// tell which logins exist (SPEC R4).
func NewReplies(overrides map[string]string, uniform bool) (*Replies, error) {
	rows := make(map[string]reply, len(defaultReplies))
	for k, v := range defaultReplies {
		rows[k] = v
	}
	for k, text := range overrides {
		r, ok := rows[k]
		if !ok {
			return nil, fmt.Errorf("replies.%s: unknown reply key (known: %s)", k, strings.Join(ReplyKeys(), ", "))
		}
		if strings.ContainsAny(text, "\r\n") || strings.TrimSpace(text) == "" {
			return nil, fmt.Errorf("replies.%s: text must be one non-empty line", k)
		}
		r.text = text
		rows[k] = r
	}
	return &Replies{rows: rows, uniform: uniform}, nil
}

// ReplyKeys lists the reply keys in order.
func ReplyKeys() []string {
	keys := make([]string, 0, len(defaultReplies))
	for k := range defaultReplies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Vars are the values substituted into a reply text.
type Vars struct {
	SID, Address, IP, QueueID, Detail, Host string
	Limit                                   int64
	// Until is a time of day, HH:MM in UTC, for {until}.
	Until string
}

// Err returns the reply for key as an error go-smtp writes to the client.
func (r *Replies) Err(key string, v Vars) *smtp.SMTPError {
	if r.uniform && (key == ReplyAuthRejected || key == ReplyAuthDisabled) {
		key = ReplyAuthFailed
	}
	row, ok := r.rows[key]
	if !ok {
		row = r.rows[ReplyTempFailure]
	}
	return &smtp.SMTPError{Code: row.code, EnhancedCode: row.enh, Message: expand(row.text, v)}
}

// expand fills the variables into text. It runs for every reply, so it
// scans the text once instead of building a replacer each time.
func expand(text string, v Vars) string {
	i := strings.IndexByte(text, '{')
	if i < 0 {
		return text
	}
	var b strings.Builder
	b.Grow(len(text) + 64)
	for i >= 0 {
		b.WriteString(text[:i])
		text = text[i:]
		end := strings.IndexByte(text, '}')
		if end < 0 {
			break
		}
		switch text[1:end] {
		case "sid":
			b.WriteString(v.SID)
		case "address":
			b.WriteString(oneLine(v.Address))
		case "host":
			b.WriteString(v.Host)
		case "ip":
			b.WriteString(v.IP)
		case "queue_id":
			b.WriteString(v.QueueID)
		case "detail":
			b.WriteString(oneLine(v.Detail))
		case "limit":
			b.WriteString(strconv.FormatInt(v.Limit, 10))
		case "until":
			b.WriteString(v.Until)
		default:
			// Not a variable: the brace is text.
			b.WriteByte('{')
			text = text[1:]
			i = strings.IndexByte(text, '{')
			continue
		}
		text = text[end+1:]
		i = strings.IndexByte(text, '{')
	}
	b.WriteString(text)
	return b.String()
}

// Line formats the reply for key as the full line a client receives.
func (r *Replies) Line(key string, v Vars) string {
	return replyLine(r.Err(key, v))
}

// replyLine formats e as the line go-smtp writes for it.
func replyLine(e *smtp.SMTPError) string {
	if e.EnhancedCode == noEnh {
		return fmt.Sprintf("%d %s", e.Code, e.Message)
	}
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

// oneLine keeps client-controlled detail from breaking the reply framing.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		n := 200
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}
