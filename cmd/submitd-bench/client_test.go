package main

import (
	"bufio"
	"errors"
	"strings"
	"testing"

	"submitd/internal/delivery"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		code    int
		lines   []string
		key     string
		wantErr bool
	}{
		{"one line", "250 2.0.0 OK queued\r\n", 250, []string{"2.0.0 OK queued"}, "250 2.0.0", false},
		{"multiline EHLO", "250-mx.test hello\r\n250-PIPELINING\r\n250 STARTTLS\r\n", 250,
			[]string{"mx.test hello", "PIPELINING", "STARTTLS"}, "250", false},
		{"bare code", "354\r\n", 354, []string{""}, "354", false},
		{"LF only", "535 5.7.8 no\n", 535, []string{"5.7.8 no"}, "535 5.7.8", false},
		{"text that looks like no enhanced code", "554 5.1.0x refused\r\n", 554, []string{"5.1.0x refused"}, "554", false},
		{"enhanced code with class 3 is no enhanced code", "354 3.0.0 go on\r\n", 354, []string{"3.0.0 go on"}, "354", false},
		{"code changes", "250-a\r\n251 b\r\n", 0, nil, "", true},
		{"not a code", "hello\r\n", 0, nil, "", true},
		{"code out of range", "999 what\r\n", 0, nil, "", true},
		{"bad separator", "250xyz\r\n", 0, nil, "", true},
		{"cut off", "250-a\r\n", 0, nil, "", true},
		{"line too long", "250 " + strings.Repeat("x", 5000) + "\r\n", 0, nil, "", true},
		{"too many lines", strings.Repeat("250-x\r\n", 300) + "250 x\r\n", 0, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := delivery.ReadReply(bufio.NewReaderSize(strings.NewReader(tt.in), 16))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("delivery.ReadReply(%q) = %v, want an error", tt.in, rep)
				}
				return
			}
			if err != nil {
				t.Fatalf("delivery.ReadReply(%q): %v", tt.in, err)
			}
			if rep.Code != tt.code || strings.Join(rep.Lines, "|") != strings.Join(tt.lines, "|") {
				t.Errorf("delivery.ReadReply(%q) = %d %q, want %d %q", tt.in, rep.Code, rep.Lines, tt.code, tt.lines)
			}
			if k := replyKey(rep); k != tt.key {
				t.Errorf("key() = %q, want %q", k, tt.key)
			}
		})
	}
}

func TestReadReplyReadsOneReplyAtATime(t *testing.T) {
	// Pipelined replies arrive together; each call must take exactly one.
	r := bufio.NewReader(strings.NewReader("250 2.1.0 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n"))
	var codes []int
	for range 3 {
		rep, err := delivery.ReadReply(r)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, rep.Code)
	}
	if codes[0] != 250 || codes[1] != 550 || codes[2] != 354 {
		t.Errorf("codes = %v, want [250 550 354]", codes)
	}
}

func TestParseEHLO(t *testing.T) {
	caps := parseEHLO(delivery.Reply{Code: 250, Lines: []string{"mx.test greets you", "PIPELINING", "size 52428800", "AUTH PLAIN LOGIN", "STARTTLS"}})
	if _, ok := caps["PIPELINING"]; !ok {
		t.Error("PIPELINING missing")
	}
	if caps["SIZE"] != "52428800" {
		t.Errorf("SIZE = %q, want the parameter, keyword matched case-insensitively", caps["SIZE"])
	}
	if caps["AUTH"] != "PLAIN LOGIN" {
		t.Errorf("AUTH = %q", caps["AUTH"])
	}
	if _, ok := caps["MX.TEST"]; ok {
		t.Error("the greeting line was taken for a keyword")
	}
}

func TestErrorKey(t *testing.T) {
	if k := errorKey(&replyError{"AUTH", delivery.Reply{Code: 535, Lines: []string{"5.7.8 authentication failed"}}}); k != "535 5.7.8" {
		t.Errorf("reply error key = %q", k)
	}
	if k := errorKey(errors.Join(&replyError{"MAIL", delivery.Reply{Code: 451, Lines: []string{"4.3.0 disk"}}}, errors.New("rset failed"))); k != "451 4.3.0" {
		t.Errorf("joined reply error key = %q", k)
	}
	if k := errorKey(errSetup); !strings.HasPrefix(k, "no connection") {
		t.Errorf("setup error key = %q", k)
	}
}

func TestBuildMessage(t *testing.T) {
	for _, size := range []int{200, 4096, 1 << 20} {
		b := buildMessage("a@b.test", "c@d.test", size)
		body := strings.TrimSuffix(string(b), ".\r\n")
		if len(body) != size {
			t.Errorf("size %d: message is %d bytes", size, len(body))
		}
		if !strings.HasSuffix(body, "\r\n") || strings.Contains(body, "\r\n.") {
			t.Errorf("size %d: not a dot-stuffed message ending in CRLF", size)
		}
		if strings.Count(body, "\n") != strings.Count(body, "\r\n") {
			t.Errorf("size %d: bare LF", size)
		}
		if !strings.HasPrefix(body, "From: <a@b.test>\r\n") {
			t.Errorf("size %d: From: is not the sender", size)
		}
	}
}
