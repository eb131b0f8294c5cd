package admin

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"submitd/internal/address"
	"submitd/internal/directory"
	"submitd/internal/ids"
	"submitd/internal/sessionlog"
	"submitd/internal/trace"
)

// maxFind bounds what Find reads: the text pasted, and how many of each
// kind of thing found in it are looked up.
const (
	maxFindText  = 4096
	maxFindTerms = 10
	// maxMessageIDScan bounds the queued messages whose headers a
	// Message-ID search reads.
	maxMessageIDScan = 10000
)

// Terms are what Find recognizes in a pasted text.
type Terms struct {
	// Sessions are session ids (SPEC R12).
	Sessions []string `json:"sessions"`
	// QueueIDs are queue ids.
	QueueIDs []string `json:"queue_ids"`
	// IPs are client addresses.
	IPs []string `json:"ips"`
	// Addresses are mail addresses.
	Addresses []string `json:"addresses"`
	// MessageIDs are Message-IDs, with their angle brackets.
	MessageIDs []string `json:"message_ids"`
	// Domains are domain names given alone.
	Domains []string `json:"domains"`
}

var (
	// alnumRun is a run of the characters session and queue ids are made of.
	alnumRun = regexp.MustCompile(`[A-Za-z0-9]+`)
	// ipRun is a run of the characters of IPv4 and IPv6 addresses.
	ipRun = regexp.MustCompile(`[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*`)
	// addrRun is something@something, up to a delimiter mail clients put
	// around addresses.
	addrRun = regexp.MustCompile(`[^\s<>"'()\[\],;]+@[^\s<>"'()\[\],;]+`)
	// msgIDRun is <something@something>.
	msgIDRun = regexp.MustCompile(`<[^<>\s]+@[^<>\s]+>`)
)

// add appends v to list unless it is there or the list is full.
func add(list []string, v string) []string {
	if len(list) >= maxFindTerms || slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}

// ParseFind finds the session ids, queue ids, IPs, addresses, Message-IDs
// and lone domains in text as a customer pastes it: a whole error line as
// Outlook, Thunderbird or Opera Mail shows it, or just the id.
func ParseFind(text string) Terms {
	var t Terms
	for _, m := range alnumRun.FindAllString(text, -1) {
		switch {
		case ids.IsSession(m):
			t.Sessions = add(t.Sessions, m)
		case ids.IsQueue(m):
			t.QueueIDs = add(t.QueueIDs, m)
		}
	}
	for _, m := range ipRun.FindAllString(text, -1) {
		m = strings.Trim(m, ".:")
		if a, err := netip.ParseAddr(m); err == nil {
			t.IPs = add(t.IPs, a.Unmap().String())
		}
	}
	for _, m := range msgIDRun.FindAllString(text, -1) {
		t.MessageIDs = add(t.MessageIDs, m)
	}
	for _, m := range addrRun.FindAllString(text, -1) {
		m = strings.TrimRight(m, ".:")
		if a, err := address.Parse(m); err == nil {
			t.Addresses = add(t.Addresses, a.String())
		}
	}
	if f := strings.Fields(text); len(f) == 1 && !strings.Contains(f[0], "@") && strings.Contains(f[0], ".") {
		if _, err := netip.ParseAddr(f[0]); err != nil {
			if d, err := address.Domain(strings.TrimSuffix(f[0], ".")); err == nil {
				t.Domains = add(t.Domains, d)
			}
		}
	}
	return t
}

// findResult is what Find answers: the records matching what was found in
// the text.
type findResult struct {
	// Query is the text searched.
	Query string `json:"query"`
	// Terms are what was recognized in it.
	Terms Terms `json:"terms"`
	// Sessions are the matching sessions, the ones named by id first.
	Sessions []sessionSummary `json:"sessions"`
	// Blocked are the guard entries of the IPs found.
	Blocked []blockedEntry `json:"blocked"`
	// Accounts are the accounts of the addresses found.
	Accounts []accountView `json:"accounts"`
	// Domains are the hosted domains found.
	Domains []string `json:"domains"`
	// Queue are the queued messages found.
	Queue []queueSummary `json:"queue"`
	// Messages are the recipients of the messages found in the delivery
	// history, newest first, as GET /api/v1/trace lists them.
	Messages []traceRow `json:"messages"`
}

func (s *Server) find(r *http.Request, p *principal) (any, error) {
	q := r.URL.Query().Get("q")
	if strings.TrimSpace(q) == "" {
		return nil, badRequest("q: paste an error line, a session id, an IP, an address, a queue id or a Message-ID")
	}
	if len(q) > maxFindText {
		return nil, badRequest("q: longer than %d bytes", maxFindText)
	}
	ctx := r.Context()
	res := findResult{Query: q, Terms: ParseFind(q), Sessions: []sessionSummary{}, Blocked: []blockedEntry{},
		Accounts: []accountView{}, Domains: []string{}, Queue: []queueSummary{}, Messages: []traceRow{}}
	t := res.Terms
	seen := map[string]bool{}
	addSessions := func(recs []*sessionlog.Record) {
		for _, rec := range recs {
			if !seen[rec.ID] {
				seen[rec.ID] = true
				res.Sessions = append(res.Sessions, s.summarize(ctx, rec))
			}
		}
	}
	for _, id := range t.Sessions {
		rec, err := trace.Session(ctx, s.cfg.Sessions, id)
		if errors.Is(err, sessionlog.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		addSessions([]*sessionlog.Record{rec})
	}
	// With a session id in the text, the rest of the line (the IP of a
	// refusal, the address of a rejection) is context; its other sessions
	// come after the named one.
	var entries []blockedEntry
	if len(t.IPs) > 0 {
		// One copy of the guard's state for all the IPs: it may hold many
		// keys.
		entries = s.blockedEntries(ctx, true)
	}
	for _, ip := range t.IPs {
		recs, err := s.cfg.Sessions.Find(ctx, sessionlog.Query{ClientIP: ip, Limit: 20})
		if err != nil {
			return nil, err
		}
		addSessions(recs)
		a, _ := netip.ParseAddr(ip)
		for _, e := range entries {
			if k, err := netip.ParsePrefix(keyPrefix(e.Key)); err == nil && k.Contains(a) {
				res.Blocked = append(res.Blocked, e)
			}
		}
	}
	for _, addr := range t.Addresses {
		if a, err := s.cfg.Directory.Account(ctx, addr); err == nil {
			res.Accounts = append(res.Accounts, viewAccount(a))
		} else if !errors.Is(err, directory.ErrNotFound) {
			return nil, err
		}
		recs, err := s.cfg.Sessions.Find(ctx, sessionlog.Query{Address: addr, Limit: 20})
		if err != nil {
			return nil, err
		}
		addSessions(recs)
	}
	for _, d := range t.Domains {
		if hd, err := s.cfg.Directory.DomainOf(ctx, d); err == nil && !slices.Contains(res.Domains, hd) {
			res.Domains = append(res.Domains, hd)
		}
	}
	if err := s.findQueued(ctx, t, &res); err != nil {
		return nil, err
	}
	for _, id := range t.QueueIDs {
		recs, err := s.cfg.Sessions.Find(ctx, sessionlog.Query{QueueID: id, Limit: 1})
		if err != nil {
			return nil, err
		}
		addSessions(recs)
	}
	// SPEC R13a: the messages the text names, whether or not they are
	// still queued.
	if s.cfg.Trace != nil {
		rows, err := s.trace(ctx, s.cfg.Trace, p, t, nil, nil)
		if err != nil {
			return nil, err
		}
		res.Messages = rows
	}
	return res, nil
}

// findQueued adds the queued messages named by queue id, sent by an
// address found, or carrying a Message-ID found.
func (s *Server) findQueued(ctx context.Context, t Terms, res *findResult) error {
	if s.cfg.Queue == nil || len(t.QueueIDs)+len(t.Addresses)+len(t.MessageIDs) == 0 {
		return nil
	}
	for _, id := range t.QueueIDs {
		if it, _, err := s.cfg.Queue.Show(id); err == nil {
			res.Queue = append(res.Queue, summarizeQueued(*it))
		}
	}
	if len(t.Addresses)+len(t.MessageIDs) == 0 {
		return nil
	}
	items, err := s.cfg.Queue.List()
	if err != nil {
		return err
	}
	for i, it := range items {
		if slices.Contains(t.QueueIDs, it.Env.ID) {
			continue
		}
		match := slices.Contains(t.Addresses, strings.ToLower(it.Env.From)) || slices.Contains(t.Addresses, strings.ToLower(it.Env.Account))
		if !match && len(t.MessageIDs) > 0 && i < maxMessageIDScan {
			if _, headers, err := s.cfg.Queue.Show(it.Env.ID); err == nil {
				match = hasMessageID(string(headers), t.MessageIDs)
			}
		}
		if match {
			res.Queue = append(res.Queue, summarizeQueued(it))
		}
	}
	return nil
}

// hasMessageID reports whether a header section has a Message-ID: field
// with one of ids (RFC 5322 §3.6.4), folded or not.
func hasMessageID(headers string, ids []string) bool {
	lines := strings.Split(strings.ReplaceAll(headers, "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		name, val, ok := strings.Cut(lines[i], ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "Message-ID") {
			continue
		}
		for i+1 < len(lines) && len(lines[i+1]) > 0 && (lines[i+1][0] == ' ' || lines[i+1][0] == '\t') {
			i++
			val += lines[i]
		}
		val = strings.TrimSpace(val)
		for _, id := range ids {
			if val == id {
				return true
			}
		}
	}
	return false
}
