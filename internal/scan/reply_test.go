package scan

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// gtubeReply is rspamd 3.4's reply to GTUBE, as it sends it.
const gtubeReply = `{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},"message-id":"undef","time_real":0.000308}`

func TestParseReply(t *testing.T) {
	v, err := ParseReply([]byte(gtubeReply))
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != ActionReject || v.Score != 15 || v.Required != 15 || v.SMTPMessage != "Gtube pattern" ||
		v.TimeReal != 308*time.Microsecond || len(v.Symbols) != 1 || v.Symbols[0] != (Symbol{"GTUBE", 0}) {
		t.Errorf("verdict %+v", v)
	}
	if got := v.String(); got != "reject score 15.00/15.00: GTUBE 0.00 (Gtube pattern)" {
		t.Errorf("String() = %q", got)
	}

	// The top symbols by score, at most MaxSymbols, highest first; the
	// milter and dkim-signature parts are ignored.
	var syms []string
	for i := range 15 {
		syms = append(syms, `"S`+string(rune('A'+i))+`":{"score":`+string(rune('0'+i%10))+`}`)
	}
	body := `{"action":"add header","score":7.5,"required_score":15,"symbols":{` + strings.Join(syms, ",") +
		`},"milter":{"add_headers":{"X-Spam":"yes"}},"dkim-signature":"v=1; a=rsa-sha256","messages":{"smtp_message":"spam message rejected"}}`
	v, err = ParseReply([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Symbols) != MaxSymbols || v.Symbols[0] != (Symbol{"SJ", 9}) || v.Symbols[1] != (Symbol{"SI", 8}) || !v.Flagged() || v.Refused() {
		t.Errorf("verdict %+v", v)
	}
	if v.Explanation() != "" {
		t.Errorf("a generic smtp_message explains %q", v.Explanation())
	}

	for _, bad := range []string{``, `[]`, `{}`, `{"action":"reject"}`, `{"action":"explode","score":1,"required_score":2}`,
		`{"error":"Message has no data"}`, `{"action":"reject","score":"x","required_score":2}`} {
		if _, err := ParseReply([]byte(bad)); !errors.Is(err, ErrBadReply) {
			t.Errorf("ParseReply(%q) = %v, want ErrBadReply", bad, err)
		}
	}
}

// TestCleanText: rspamd's texts reach replies and logs as one printable line.
func TestCleanText(t *testing.T) {
	v, err := ParseReply([]byte(`{"action":"soft reject","score":1,"required_score":2,"messages":{"smtp_message":"rate\r\n250 limit \u00e9` + strings.Repeat("x", 300) + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	m := v.Explanation()
	if strings.ContainsAny(m, "\r\n") || len(m) > maxText || !strings.HasPrefix(m, "rate  250 limit") {
		t.Errorf("explanation %q", m)
	}
}

func FuzzParseReply(f *testing.F) {
	// The seed corpus in testdata/fuzz/FuzzParseReply holds rspamd 3.4's
	// replies to GTUBE, its "add header" pattern, an ordinary message, a
	// rate limit and an error.
	f.Add([]byte(gtubeReply))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseReply(b)
		if err != nil {
			if !errors.Is(err, ErrBadReply) {
				t.Fatalf("error %v does not wrap ErrBadReply", err)
			}
			return
		}
		if len(v.Symbols) > MaxSymbols || len(v.SMTPMessage) > maxText || strings.ContainsAny(v.String(), "\r\n") {
			t.Fatalf("verdict out of bounds: %+v", v)
		}
		for i := 1; i < len(v.Symbols); i++ {
			if v.Symbols[i].Score > v.Symbols[i-1].Score {
				t.Fatalf("symbols not in order: %+v", v.Symbols)
			}
		}
	})
}
