package admin

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The error lines of the seed as the mail clients show them (SPEC, the
// seed in English).
var clientLines = map[string]string{
	"outlook":     "Sending reported error (0x80042109): Server response: 550 5.1.0 piWs1j0010jifNx01iWsdh authentication failed",
	"thunderbird": "Sending of the message failed. The server responded: 5.1.0 piWs1j0010jifNx01iWsdh authentication failed. Please verify",
	"opera":       "Internal error [550 5.1.0 piWs1j0010jifNx01iWsdh authentication failed]",
	"blocked":     "5.1.0 piWs1j0010jifNx01iWsdh Connection refused from 112.67.35.229. Too many authorization failures from this IP, try again later.",
	"sender":      "5.1.0 <jan.novak@domena.cz> sender rejected",
}

func TestParseFind(t *testing.T) {
	for name, line := range clientLines {
		terms := ParseFind(line)
		if name != "sender" && !slices.Equal(terms.Sessions, []string{"piWs1j0010jifNx01iWsdh"}) {
			t.Errorf("%s: sessions %v", name, terms.Sessions)
		}
		if name == "blocked" && !slices.Equal(terms.IPs, []string{"112.67.35.229"}) {
			t.Errorf("%s: IPs %v", name, terms.IPs)
		}
		if name == "sender" && !slices.Equal(terms.Addresses, []string{"jan.novak@domena.cz"}) {
			t.Errorf("%s: addresses %v", name, terms.Addresses)
		}
	}
	for _, c := range []struct {
		in   string
		want Terms
	}{
		{"2001:db8::7", Terms{IPs: []string{"2001:db8::7"}}},
		{"33lrhkj7b47fao68fvg29102", Terms{QueueIDs: []string{"33lrhkj7b47fao68fvg29102"}}},
		{"Message-ID: <abc.123@firma.cz>", Terms{MessageIDs: []string{"<abc.123@firma.cz>"}, Addresses: []string{"abc.123@firma.cz"}}},
		{"FIRMA.cz", Terms{Domains: []string{"firma.cz"}}},
		{"Jan@Firma.CZ.", Terms{Addresses: []string{"Jan@firma.cz"}}},
	} {
		got := ParseFind(c.in)
		if !slices.Equal(got.IPs, c.want.IPs) || !slices.Equal(got.QueueIDs, c.want.QueueIDs) || !slices.Equal(got.MessageIDs, c.want.MessageIDs) ||
			!slices.Equal(got.Domains, c.want.Domains) || !slices.Equal(got.Sessions, c.want.Sessions) {
			t.Errorf("ParseFind(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
	many := strings.Repeat("piWs1j0010jifNx01iWsd1 piWs1j0010jifNx01iWsd2 10.0.0.1 10.0.0.2 ", 50)
	if got := ParseFind(many); len(got.Sessions) != 2 || len(got.IPs) != 2 {
		t.Errorf("repeats: %+v", got)
	}
	if got := ParseFind(strings.Repeat("1.", 2000)); len(got.IPs) > maxFindTerms {
		t.Errorf("%d IPs", len(got.IPs))
	}
}

// TestFindPasted: each client's error line, pasted whole, finds the session;
// the refusal line also finds the block of its IP.
func TestFindPasted(t *testing.T) {
	w := newWorld(t)
	for name, line := range map[string]string{"outlook": clientLines["outlook"], "thunderbird": clientLines["thunderbird"], "opera": clientLines["opera"]} {
		r := w.do("GET", "/api/v1/find?q="+url.QueryEscape(line), "", RoleSupport)
		ss, _ := r.body["sessions"].([]any)
		if r.status != 200 || len(ss) != 1 {
			t.Fatalf("%s: %d %s", name, r.status, r.raw)
		}
		s := ss[0].(map[string]any)
		if s["id"] != testSID || s["client_ip"] != blockedIP || s["login"] != testAccount || s["outcome"] != "AUTH failed" || s["start"] == nil {
			t.Errorf("%s: session %v", name, s)
		}
	}
	r := w.do("GET", "/api/v1/find?q="+url.QueryEscape("Connection refused from "+blockedIP+". Too many"), "", RoleSupport)
	if bs, _ := r.body["blocked"].([]any); len(bs) != 1 || !strings.Contains(r.raw, testSID) {
		t.Errorf("refusal line: %s", r.raw)
	}
	r = w.do("GET", "/api/v1/find?q="+url.QueryEscape("<abc.123@firma.cz>"), "", RoleSupport)
	if qs, _ := r.body["queue"].([]any); len(qs) != 1 || qs[0].(map[string]any)["id"] != w.qid {
		t.Errorf("Message-ID: %s", r.raw)
	}
	r = w.do("GET", "/api/v1/find?q="+w.qid, "", RoleSupport)
	if qs, _ := r.body["queue"].([]any); len(qs) != 1 {
		t.Errorf("queue id: %s", r.raw)
	}
	r = w.do("GET", "/api/v1/find?q="+testAccount, "", RoleSupport)
	if as, _ := r.body["accounts"].([]any); len(as) != 1 || !strings.Contains(r.raw, testSID) {
		t.Errorf("address: %s", r.raw)
	}
	wantError(t, "too long", w.do("GET", "/api/v1/find?q="+strings.Repeat("a", maxFindText+1), "", RoleSupport), 400)
}

// FuzzParseFind: no text makes ParseFind panic, return more than it bounds,
// or return a term that is not in the text.
func FuzzParseFind(f *testing.F) {
	for _, l := range clientLines {
		f.Add(l)
	}
	f.Add("Message-ID: <abc.123@firma.cz>")
	f.Add("2001:db8::7 33lrhkj7b47fao68fvg29102 firma.cz")
	f.Fuzz(func(t *testing.T, s string) {
		terms := ParseFind(s)
		for _, l := range [][]string{terms.Sessions, terms.QueueIDs, terms.IPs, terms.Addresses, terms.MessageIDs, terms.Domains} {
			if len(l) > maxFindTerms {
				t.Fatalf("%d terms", len(l))
			}
		}
		for _, id := range append(terms.Sessions, terms.QueueIDs...) {
			if !strings.Contains(s, id) {
				t.Fatalf("id %q not in the text", id)
			}
		}
		for _, a := range terms.Addresses {
			if !utf8.ValidString(a) {
				t.Fatalf("address %q not UTF-8", a)
			}
		}
	})
}
