package dkim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"submitd/internal/address"
	"submitd/internal/message"
)

// SignedHeaders are the header fields a signature covers when present (RFC
// 6376 §5.4.1): those a reader sees and those that change how the body is
// read.
var SignedHeaders = []string{
	"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// OversignedHeaders are listed in the signature once more than the message
// has them, none included (RFC 6376 §5.4.2, §8.15): a field of this kind
// added in transit, a second From: or Subject: a mail reader might show, or
// a Reply-To: that diverts the answers, breaks the signature.
var OversignedHeaders = []string{"From", "Reply-To", "To", "Cc", "Subject"}

// CacheTTL is how long a Signer remembers a domain's key, or that it has
// none. A key made with "submitd dkim generate" is used by a running server
// within this time.
const CacheTTL = time.Minute

// maxHeader bounds the header section read to find From:.
const maxHeader = 1 << 20

// Signer signs messages with the key of their From: domain.
type Signer struct {
	store Keys
	log   *slog.Logger
	// now is the clock, for the cache.
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	key *Key // nil: the domain has no key
	at  time.Time
}

// NewSigner returns a signer that takes keys from store; log gets a line for
// each domain found without a key (once per CacheTTL).
func NewSigner(store Keys, log *slog.Logger) *Signer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Signer{store: store, log: log, now: time.Now, cache: map[string]cached{}}
}

// key returns the key of domain, nil if it has none.
func (s *Signer) key(ctx context.Context, domain string) (*Key, error) {
	now := s.now()
	s.mu.Lock()
	c, ok := s.cache[domain]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < CacheTTL && now.Sub(c.at) >= 0 {
		return c.key, nil
	}
	k, err := s.store.Get(ctx, domain)
	if errors.Is(err, ErrNoKey) {
		// Said once per domain and cache time, not for every message:
		// the line tells the operator which domain lacks a key.
		s.log.Info("dkim: no key for the From: domain, its messages are sent unsigned", "domain", domain, "recheck_after", CacheTTL)
		k, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cache[domain] = cached{key: k, at: now}
	s.mu.Unlock()
	return k, nil
}

// Sign reads the message and returns the "DKIM-Signature: …\r\n" header
// field to put in front of it, made with the key of its From: domain (SPEC
// R17), relaxed/relaxed. It returns "" when that domain has no key, and an
// error when the message has no usable From: or the store fails; the caller
// then sends the message unsigned.
func (s *Signer) Sign(ctx context.Context, msg io.Reader) (string, error) {
	br := bufio.NewReaderSize(msg, 64<<10)
	raw, err := message.ReadHeader(br, maxHeader)
	if err != nil {
		return "", fmt.Errorf("dkim: reading header: %w", err)
	}
	h, err := message.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("dkim: %w", err)
	}
	domain, err := FromDomain(h)
	if err != nil {
		return "", fmt.Errorf("dkim: %w", err)
	}
	k, err := s.key(ctx, domain)
	if err != nil {
		return "", fmt.Errorf("dkim: %w", err)
	}
	if k == nil {
		return "", nil
	}
	sg, err := msgauth.NewSigner(&msgauth.SignOptions{
		Domain: k.Domain, Selector: k.Selector, Signer: k.Private,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
		BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		HeaderKeys:             headerKeys(h),
	})
	if err != nil {
		return "", fmt.Errorf("dkim: signer for %s: %w", domain, err)
	}
	if _, err := io.Copy(sg, io.MultiReader(bytes.NewReader(raw), br)); err != nil {
		sg.Close()
		return "", fmt.Errorf("dkim: reading message: %w", err)
	}
	if err := sg.Close(); err != nil {
		return "", fmt.Errorf("dkim: signing for %s: %w", domain, err)
	}
	return sg.Signature(), nil
}

// headerKeys lists each field of SignedHeaders as often as the message has
// it, and those of OversignedHeaders once more.
func headerKeys(h *message.Header) []string {
	var keys []string
	for _, name := range SignedHeaders {
		for range h.Values(name) {
			keys = append(keys, name)
		}
		if slices.Contains(OversignedHeaders, name) {
			keys = append(keys, name)
		}
	}
	return keys
}

// FromDomain returns the domain of the From: address (lowercase A-label),
// the domain whose key signs the message. With several addresses in From:
// the first one's domain is used. A message needs exactly one From: field
// (RFC 5322 §3.6).
func FromDomain(h *message.Header) (string, error) {
	vals := h.Values("From")
	switch len(vals) {
	case 0:
		return "", errors.New("message has no From: field")
	case 1:
	default:
		return "", fmt.Errorf("message has %d From: fields", len(vals))
	}
	addrs, err := message.Addresses(vals[0])
	if err != nil {
		return "", fmt.Errorf("unparseable From: field %q: %w", clip(vals[0]), err)
	}
	at := strings.LastIndexByte(addrs[0], '@')
	if at < 0 {
		return "", fmt.Errorf("the From: address %q has no domain", clip(addrs[0]))
	}
	d, err := address.Domain(addrs[0][at+1:])
	if err != nil {
		return "", fmt.Errorf("the From: address %q: %w", clip(addrs[0]), err)
	}
	return d, nil
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
