package dkim

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"submitd/internal/message"
	"submitd/internal/pgdb/pgtest"
	"submitd/internal/testutil"
)

func newStore(t *testing.T) *Store { return newStoreB(t) }

func newStoreB(t testing.TB) *Store {
	t.Helper()
	st, err := NewStore(context.Background(), testutil.OpenDB(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// addKey generates and stores a key and publishes its printed record in dns.
func addKey(t *testing.T, st Keys, srv *testutil.DNSServer, domain, selector, algo string) *Key {
	t.Helper()
	k, err := Generate(domain, selector, algo)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(context.Background(), k, false); err != nil {
		t.Fatal(err)
	}
	if srv != nil {
		srv.Add(t, k.DNSRecord())
	}
	return k
}

const mail = "From: Jan Novák <jan@%s>\r\n" +
	"To: someone@example.org\r\n" +
	"Subject: =?UTF-8?Q?P=C5=99=C3=ADloha?=\r\n" +
	"Date: Sat, 01 Mar 2025 10:00:00 +0100\r\n" +
	"Message-ID: <abc@firma.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello,  \r\n" +
	"this is the body.\r\n" +
	"\r\n\r\n"

func mailFrom(domain string) string { return strings.Replace(mail, "%s", domain, 1) }

// verify runs go-msgauth's verifier with the test DNS server and returns the
// single verification.
func verify(t *testing.T, srv *testutil.DNSServer, signed string) *msgauth.Verification {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(strings.NewReader(signed), &msgauth.VerifyOptions{LookupTXT: srv.LookupTXT})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(vs) != 1 {
		t.Fatalf("%d signatures verified, want 1", len(vs))
	}
	return vs[0]
}

func TestSignVerifies(t *testing.T) {
	for _, algo := range []string{Ed25519, RSA} {
		t.Run(algo, func(t *testing.T) {
			st, srv := newStore(t), testutil.NewDNSServer(t)
			addKey(t, st, srv, "firma.test", "sel1", algo)
			s := NewSigner(st, nil)
			m := mailFrom("firma.test")
			sig, err := s.Sign(context.Background(), strings.NewReader(m))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(sig, "DKIM-Signature: ") || !strings.HasSuffix(sig, "\r\n") {
				t.Fatalf("signature field %q", sig)
			}
			for _, want := range []string{"c=relaxed/relaxed", "d=firma.test", "s=sel1", "a=" + algo + "-sha256"} {
				if !strings.Contains(strings.ReplaceAll(sig, "\r\n ", ""), want) {
					t.Errorf("signature lacks %s: %s", want, sig)
				}
			}
			v := verify(t, srv, sig+m)
			if v.Err != nil || v.Domain != "firma.test" {
				t.Fatalf("verification: domain %q err %v", v.Domain, v.Err)
			}
			// From is oversigned: h= has it once more than the message.
			if n := countFold(v.HeaderKeys, "From"); n != 2 {
				t.Errorf("h= has From %d times, want 2: %v", n, v.HeaderKeys)
			}

			// Relaxed canonicalization survives re-folding and trailing space.
			refolded := strings.Replace(m, "Subject: ", "Subject:   \r\n\t", 1)
			refolded = strings.Replace(refolded, "Hello,  \r\n", "Hello, \r\n", 1)
			if v := verify(t, srv, sig+refolded); v.Err != nil {
				t.Errorf("relaxed re-folding broke the signature: %v", v.Err)
			}
			// Any change a reader would see breaks it.
			for name, bad := range map[string]string{
				"body":        strings.Replace(m, "the body", "the b0dy", 1),
				"subject":     strings.Replace(m, "Subject: =?UTF-8?Q?P=C5=99=C3=ADloha?=", "Subject: Invoice", 1),
				"second From": "From: ceo@firma.test\r\n" + m,
			} {
				if v := verify(t, srv, sig+bad); v.Err == nil {
					t.Errorf("signature still verifies after changing the %s", name)
				}
			}
		})
	}
}

func countFold(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if strings.EqualFold(x, s) {
			n++
		}
	}
	return n
}

// Each domain name signs with its own key: mail from an alias domain carries
// d=alias and verifies against the alias's record, not the hosted domain's.
func TestSignAliasDomainKey(t *testing.T) {
	st, srv := newStore(t), testutil.NewDNSServer(t)
	addKey(t, st, srv, "firma.test", "main", Ed25519)
	addKey(t, st, srv, "firma-alias.test", "alias", Ed25519)
	s := NewSigner(st, nil)
	m := mailFrom("FIRMA-Alias.test")
	sig, err := s.Sign(context.Background(), strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	v := verify(t, srv, sig+m)
	if v.Err != nil || v.Domain != "firma-alias.test" {
		t.Fatalf("verification: domain %q err %v", v.Domain, v.Err)
	}
	if !strings.Contains(sig, "s=alias") {
		t.Errorf("not signed with the alias's selector: %s", sig)
	}
}

func TestSignWithoutKey(t *testing.T) {
	st := newStore(t)
	var logb bytes.Buffer
	s := NewSigner(st, slog.New(slog.NewTextHandler(&logb, nil)))
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	sig, err := s.Sign(context.Background(), strings.NewReader(mailFrom("nokey.test")))
	if err != nil || sig != "" {
		t.Fatalf("Sign = %q, %v; want unsigned without error", sig, err)
	}
	if !strings.Contains(logb.String(), "sent unsigned") || !strings.Contains(logb.String(), "domain=nokey.test") {
		t.Errorf("no log line for the domain without a key: %q", logb.String())
	}
	// Further messages of the domain within the cache time add no line:
	// it would say nothing new.
	if sig, _ := s.Sign(context.Background(), strings.NewReader(mailFrom("nokey.test"))); sig != "" {
		t.Fatalf("signed without a key: %q", sig)
	}
	if n := strings.Count(logb.String(), "\n"); n != 1 {
		t.Errorf("%d log lines for two messages of a domain without a key, want 1:\n%s", n, logb.String())
	}

	// A key made later is picked up once the cached "no key" expires.
	addKey(t, st, nil, "nokey.test", "late", Ed25519)
	if sig, _ := s.Sign(context.Background(), strings.NewReader(mailFrom("nokey.test"))); sig != "" {
		t.Errorf("signed within the cache time: the cache is not used")
	}
	now = now.Add(CacheTTL)
	if sig, _ := s.Sign(context.Background(), strings.NewReader(mailFrom("nokey.test"))); !strings.Contains(sig, "s=late") {
		t.Errorf("key not picked up after the cache time: %q", sig)
	}
}

func TestSignRefusesBadFrom(t *testing.T) {
	st := newStore(t)
	s := NewSigner(st, nil)
	for name, m := range map[string]string{
		"no From":     "To: a@b.test\r\n\r\nbody\r\n",
		"two From":    "From: a@firma.test\r\nFrom: b@firma.test\r\n\r\nbody\r\n",
		"group":       "From: undisclosed:;\r\n\r\nbody\r\n",
		"bad domain":  "From: a@[127.0.0.1]\r\n\r\nbody\r\n",
		"not headers": "this is not a header\r\n\r\n",
	} {
		if sig, err := s.Sign(context.Background(), strings.NewReader(m)); err == nil || sig != "" {
			t.Errorf("%s: Sign = %q, %v; want an error", name, sig, err)
		}
	}
}

func TestFromDomain(t *testing.T) {
	cases := map[string]string{
		"From: a@Firma.TEST":                                   "firma.test",
		"From: \"Novák, Jan\" <jan@příklad.test>":              "xn--pklad-zsa96e.test",
		"From: =?UTF-8?Q?Jan_Nov=C3=A1k?= <jan@firma.test>":    "firma.test",
		"From: a@one.test, b@two.test":                         "one.test",
		"from: a@lower.test":                                   "lower.test",
		"Subject: x\r\nFrom:\r\n <folded@firma.test>\r\nTo: y": "firma.test",
	}
	for in, want := range cases {
		h, err := message.Parse([]byte(in + "\r\n\r\n"))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		got, err := FromDomain(h)
		if err != nil || got != want {
			t.Errorf("FromDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestStore runs the same checks on the SQLite and the PostgreSQL keys.
func TestStore(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) { testKeys(t, newStore(t)) })
	t.Run("Postgres", func(t *testing.T) {
		st, err := NewPostgres(context.Background(), pgtest.Pool(t))
		if err != nil {
			t.Fatal(err)
		}
		testKeys(t, st)
	})
}

func testKeys(t *testing.T, st Keys) {
	ctx := context.Background()
	if _, err := st.Get(ctx, "firma.test"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	k1 := addKey(t, st, nil, "firma.test", "one", RSA)
	k2, _ := Generate("firma.test", "two", Ed25519)
	if err := st.Put(ctx, k2, false); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("Put over an existing key without replace: %v", err)
	}
	got, err := st.Get(ctx, "firma.test")
	if err != nil || got.DNSRecord() != k1.DNSRecord() || got.Algorithm != RSA || !got.Created.Equal(k1.Created.Truncate(time.Second)) {
		t.Fatalf("Get = %+v, %v; want the first key back", got, err)
	}
	if err := st.Put(ctx, k2, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Get(ctx, "firma.test"); got.Selector != "two" || got.DNSRecord() != k2.DNSRecord() {
		t.Errorf("replace did not replace: %+v", got)
	}
	keys, err := st.List(ctx)
	if err != nil || len(keys) != 1 {
		t.Errorf("List = %d keys, %v", len(keys), err)
	}
	if err := st.Delete(ctx, "firma.test"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "firma.test"); !errors.Is(err, ErrNoKey) {
		t.Errorf("second Delete: %v", err)
	}
}

func TestGenerateRefuses(t *testing.T) {
	for _, c := range []struct{ sel, algo string }{
		{"", Ed25519}, {"-x", Ed25519}, {"a b", Ed25519}, {"a..b", Ed25519}, {"ok", "dsa"},
		{strings.Repeat("a", 64), Ed25519},
	} {
		if _, err := Generate("firma.test", c.sel, c.algo); err == nil {
			t.Errorf("Generate(selector %q, algo %q) succeeded", c.sel, c.algo)
		}
	}
}

// The printed record reads back, in zone-file syntax, as the TXT value; an
// RSA value is split into strings of at most 255 bytes.
func TestDNSRecordRoundTrip(t *testing.T) {
	for _, algo := range []string{Ed25519, RSA} {
		k, err := Generate("firma.test", "s1", algo)
		if err != nil {
			t.Fatal(err)
		}
		rec := k.DNSRecord()
		if !strings.HasPrefix(rec, "s1._domainkey.firma.test. IN TXT \"v=DKIM1; k="+algo+"; p=") {
			t.Errorf("record %q", rec)
		}
		rr, err := dns.NewRR(rec)
		if err != nil {
			t.Fatalf("%s record does not parse: %v\n%s", algo, err, rec)
		}
		txt := rr.(*dns.TXT)
		for _, s := range txt.Txt {
			if len(s) > 255 {
				t.Errorf("string of %d bytes", len(s))
			}
		}
		if algo == RSA && len(txt.Txt) < 2 {
			t.Errorf("RSA record is %d string(s), want it split", len(txt.Txt))
		}
		if strings.Join(txt.Txt, "") != k.TXTValue() {
			t.Errorf("record reads back as %q, want %q", strings.Join(txt.Txt, ""), k.TXTValue())
		}
	}
}

// FuzzFromDomain: any header section either yields a normalized domain or an
// error, never a panic.
func FuzzFromDomain(f *testing.F) {
	for _, s := range []string{
		"From: a@firma.test\r\n\r\n",
		"From: \"Novák\" <jan@příklad.test>\r\n\r\n",
		"From: a@one.test, b@two.test\r\n\r\n",
		"From: undisclosed:;\r\n\r\n",
		"From: a@firma.test\r\nFrom: b@firma.test\r\n\r\n",
		"To: x@y.test\r\n\r\n",
		"From: <@route.test:a@firma.test>\r\n\r\n",
		"From: =?UTF-8?B?w6E=?= <a@xn--pklad-zsa96e.test>\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := message.Parse(raw)
		if err != nil {
			return
		}
		d, err := FromDomain(h)
		if err != nil {
			return
		}
		if d == "" || d != strings.ToLower(d) || strings.HasSuffix(d, ".") {
			t.Fatalf("FromDomain gave %q", d)
		}
	})
}

// FuzzFormatTXT: whatever the value, the formatted record parses as zone-file
// syntax back to the same value in strings of at most 255 bytes.
func FuzzFormatTXT(f *testing.F) {
	for _, s := range []string{
		"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
		strings.Repeat("x", 255), strings.Repeat("y", 256), `quote " and backslash \`, "", "tab\tand\x00nul\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		rec := FormatTXT("s._domainkey.firma.test.", v)
		rr, err := dns.NewRR(rec)
		if err != nil {
			t.Fatalf("%q does not parse: %v", rec, err)
		}
		txt, ok := rr.(*dns.TXT)
		if !ok {
			t.Fatalf("%q parses as %T", rec, rr)
		}
		// miekg/dns keeps escapes in its presentation strings; pack and
		// unpack to compare the bytes that go on the wire.
		msg := new(dns.Msg)
		msg.Answer = []dns.RR{txt}
		wire, err := msg.Pack()
		if err != nil {
			t.Fatalf("pack %q: %v", rec, err)
		}
		back := new(dns.Msg)
		if err := back.Unpack(wire); err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		for _, s := range back.Answer[0].(*dns.TXT).Txt {
			s = unescape(s)
			if len(s) > 255 {
				t.Fatalf("string of %d bytes in %q", len(s), rec)
			}
			got.WriteString(s)
		}
		if got.String() != v {
			t.Fatalf("value %q came back as %q", v, got.String())
		}
	})
}

// unescape undoes miekg/dns's presentation escapes (\" \\ \DDD).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
				b.WriteByte((s[i+1]-'0')*100 + (s[i+2]-'0')*10 + (s[i+3] - '0'))
				i += 3
				continue
			}
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// The fields a reader sees are oversigned (RFC 6376 §8.15): whether the
// message has them or not, one added later breaks the signature, so a signed
// message cannot be replayed with another Subject shown or a Reply-To that
// diverts the answers.
func TestSignOversigns(t *testing.T) {
	st, srv := newStore(t), testutil.NewDNSServer(t)
	addKey(t, st, srv, "firma.test", "sel1", RSA)
	m := mailFrom("firma.test")
	sig, err := NewSigner(st, nil).Sign(context.Background(), strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	if v := verify(t, srv, sig+m); v.Err != nil {
		t.Fatalf("verification: %v", v.Err)
	}
	for _, added := range []string{
		"Reply-To: thief@evil.example\r\n",
		"Subject: Urgent: new bank account\r\n",
		"To: victim@example.org\r\n",
		"Cc: victim@example.org\r\n",
	} {
		if v := verify(t, srv, sig+added+m); v.Err == nil {
			t.Errorf("signature still verifies after adding %q", strings.TrimSpace(added))
		}
	}
}
