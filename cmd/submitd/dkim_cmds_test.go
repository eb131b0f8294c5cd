package main

import (
	"context"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"submitd/internal/dkim"
	"submitd/internal/testutil"
)

// TestDKIMGenerateSignVerify is the operator's path: generate a key for a
// hosted and for an alias domain, publish exactly what the command printed,
// and check that mail from each domain verifies with go-msgauth's verifier
// against that DNS.
func TestDKIMGenerateSignVerify(t *testing.T) {
	c := newCLI(t, "bcrypt")
	for _, a := range []string{"domain add firma.test", "alias add firma-alias.test firma.test"} {
		if code, _, errOut := c.run("", args(a)...); code != 0 {
			t.Fatalf("submitd %s: %s", a, errOut)
		}
	}
	srv := testutil.NewDNSServer(t)
	records := map[string]string{}
	for _, g := range []string{"dkim generate firma.test", "dkim generate -algo ed25519 -selector mail2025 FIRMA-ALIAS.test"} {
		code, out, errOut := c.run("", args(g)...)
		if code != 0 {
			t.Fatalf("submitd %s: exit %d: %s", g, code, errOut)
		}
		if !strings.Contains(errOut, "publish this DNS record") {
			t.Errorf("submitd %s: stderr %q does not tell what to do", g, errOut)
		}
		rec := strings.TrimSuffix(out, "\n")
		if strings.Contains(rec, "\n") {
			t.Fatalf("submitd %s: stdout is not one record line: %q", g, out)
		}
		srv.Add(t, rec)
		records[strings.Fields(g)[len(strings.Fields(g))-1]] = out
	}
	// The default is RSA, which every receiver verifies; Ed25519 (RFC 8463)
	// is still ignored by some large ones.
	if !strings.HasPrefix(records["firma.test"], "submitd"+time.Now().UTC().Format("200601")+"._domainkey.firma.test. IN TXT \"v=DKIM1; k=rsa; p=") {
		t.Errorf("default record %q", records["firma.test"])
	}
	if !strings.HasPrefix(records["FIRMA-ALIAS.test"], "mail2025._domainkey.firma-alias.test. IN TXT \"v=DKIM1; k=ed25519; p=") {
		t.Errorf("alias record %q", records["FIRMA-ALIAS.test"])
	}
	// show prints the same record again.
	if code, out, _ := c.run("", "dkim", "show", "firma-alias.test"); code != 0 || out != records["FIRMA-ALIAS.test"] {
		t.Errorf("dkim show = %d %q, want %q", code, out, records["FIRMA-ALIAS.test"])
	}
	if code, out, _ := c.run("", "dkim", "list"); code != 0 || strings.Count(out, "\n") != 2 ||
		!strings.Contains(out, "firma-alias.test\tmail2025\ted25519\t") || !strings.Contains(out, "firma.test\tsubmitd") || !strings.Contains(out, "\trsa\t") {
		t.Errorf("dkim list = %d %q", code, out)
	}

	st, err := dkim.NewStore(context.Background(), testutil.OpenDBIn(t, c.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	signer := dkim.NewSigner(st, nil)
	for _, dom := range []string{"firma.test", "firma-alias.test"} {
		m := "From: jan@" + dom + "\r\nTo: x@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
		sig, err := signer.Sign(context.Background(), strings.NewReader(m))
		if err != nil || sig == "" {
			t.Fatalf("%s: Sign = %q, %v", dom, sig, err)
		}
		vs, err := msgauth.VerifyWithOptions(strings.NewReader(sig+m), &msgauth.VerifyOptions{LookupTXT: srv.LookupTXT})
		if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != dom {
			t.Errorf("%s: verification %+v, %v", dom, vs, err)
		}
	}
}

func TestDKIMRefusals(t *testing.T) {
	c := newCLI(t, "bcrypt")
	if code, _, errOut := c.run("", "domain", "add", "firma.test"); code != 0 {
		t.Fatal(errOut)
	}
	c.play([]step{
		{args: args("dkim generate other.test"), code: 1, errHas: []string{"domain other.test is neither hosted nor an alias"}},
		{args: args("dkim show firma.test"), code: 1, errHas: []string{"domain firma.test has no DKIM key", "submitd dkim generate firma.test"}},
		{args: args("dkim generate -algo dsa firma.test"), code: 2, errHas: []string{`unknown algorithm "dsa"`}},
		{args: args("dkim generate -selector bad_sel firma.test"), code: 2, errHas: []string{`invalid selector "bad_sel"`}},
		{args: args("dkim generate"), code: 2, errHas: []string{"missing argument"}},
		{args: args("dkim rotate firma.test"), code: 2, errHas: []string{`unknown verb "rotate"`}},
	})
	code, first, _ := c.run("", args("dkim generate -selector one firma.test")...)
	if code != 0 {
		t.Fatal("generate failed")
	}
	c.play([]step{
		{args: args("dkim generate -selector two firma.test"), code: 1, errHas: []string{"already has a DKIM key", "-force"}},
		{args: args("dkim show firma.test"), out: first},
	})
	code, second, _ := c.run("", args("dkim generate -force -selector two firma.test")...)
	if code != 0 || second == first || !strings.HasPrefix(second, "two._domainkey.firma.test.") {
		t.Errorf("generate -force = %d %q", code, second)
	}
}
